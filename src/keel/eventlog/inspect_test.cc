#include "keel/eventlog/inspect.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "keel/core/log.h"
#include "keel/eventlog/event_store.h"
#include "keel/eventlog/event_store_impl.h"
#include "keel/eventlog/record.h"
#include "keel/eventlog/test_support.h"

namespace keel::eventlog {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::make_event;
using testing::TempDir;

std::string read_bytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << file.rdbuf();
  return buffer.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << bytes;
}

// Offsets of the records in a segment file, and where they end.
struct Records {
  std::vector<std::uint64_t> offsets;
  std::uint64_t end = 0;
};
Records records_of(const std::string& path) {
  std::string bytes = read_bytes(path);
  Records records;
  while (records.end < bytes.size()) {
    RecordView frame = read_frame(std::string_view(bytes).substr(records.end));
    if (frame.status != RecordView::Status::kOk) break;
    records.offsets.push_back(records.end);
    records.end += frame.size;
  }
  return records;
}

// The records of a segment before its `count`th: how many are events, and where the append
// holding record `count` starts.
struct Prefix {
  std::uint64_t events = 0;
  std::uint64_t append_start = 0;
};
Prefix prefix_of(const std::string& path, std::size_t count) {
  std::string bytes = read_bytes(path);
  Prefix prefix;
  std::uint64_t offset = 0;
  std::uint64_t events_in_append = 0;
  for (std::size_t i = 0; i < count; ++i) {
    RecordView frame = read_frame(std::string_view(bytes).substr(offset));
    if (frame.status != RecordView::Status::kOk) break;
    offset += frame.size;
    if (frame.kind == RecordKind::kEvent) ++events_in_append;
    if (frame.flags & kLastInAppend) {
      prefix.events += events_in_append;
      events_in_append = 0;
      prefix.append_start = offset;
    }
  }
  return prefix;
}

std::string describe(const std::vector<VerifyProblem>& problems) {
  std::string text;
  for (const auto& problem : problems) text += "\n  " + problem.to_string();
  return text;
}

// Every file below `directory` with its bytes, to show that the tools change nothing.
std::map<std::string, std::string> contents(const std::string& directory) {
  std::map<std::string, std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(directory)) {
    if (entry.is_regular_file()) files[entry.path().string()] = read_bytes(entry.path().string());
  }
  return files;
}

class InspectTest : public ::testing::Test {
 protected:
  static StoreOptions small() {
    StoreOptions options;
    options.segment_bytes = 4096;
    return options;
  }

  std::unique_ptr<EventStore> open_store() {
    auto opened = EventStore::open(dir_.path(), small(), clock_);
    EXPECT_TRUE(opened.ok()) << opened.error().to_string();
    return opened.ok() ? std::move(*opened) : nullptr;
  }

  // 120 events over three streams in several segments, stream metadata, a soft delete and a
  // recreate, a hard delete, a snapshot; closed, so index.chk is written.
  void build_store() {
    auto store = open_store();
    ASSERT_TRUE(store);
    for (int i = 0; i < 40; ++i) {
      for (const char* stream : {"order-1", "order-2", "payment-1"}) {
        auto version = store->stream_version(stream);
        auto expected = version ? ExpectedVersion::exact(*version) : ExpectedVersion::no_stream();
        std::vector<EventData> batch = {
            make_event(random_, "Happened", "{\"i\":" + std::to_string(i) + "}")};
        auto appended = store->append(stream, expected, batch);
        ASSERT_TRUE(appended.ok()) << appended.error().to_string();
      }
      if (i == 10) {
        StreamMetadata metadata;
        metadata.max_count = 1000;
        ASSERT_TRUE(store->set_metadata("order-2", metadata).ok());
      }
      if (i == 20) {
        ASSERT_TRUE(store->delete_stream("payment-1", ExpectedVersion::any(), false).ok());
      }
    }
    std::vector<EventData> last = {make_event(random_, "Closed", "{}")};
    ASSERT_TRUE(store->append("gone-1", ExpectedVersion::no_stream(), last).ok());
    ASSERT_TRUE(store->delete_stream("gone-1", ExpectedVersion::any(), true).ok());
    ASSERT_TRUE(store->save_snapshot("order-1", Snapshot{39, "{\"total\":39}"}).ok());
    ASSERT_TRUE(store->close().ok());
  }

  std::string segment(int number) const {
    char name[32];
    std::snprintf(name, sizeof name, "/%08d.seg", number);
    return dir_.path() + name;
  }
  int segment_count() const {
    int count = 0;
    while (fs::exists(segment(count + 1))) ++count;
    return count;
  }

  VerifyReport verify() {
    auto report = verify_store(dir_.path());
    EXPECT_TRUE(report.ok()) << report.error().to_string();
    return report.ok() ? *report : VerifyReport{};
  }

  std::string dump(const DumpOptions& options, Status* status = nullptr) {
    std::ostringstream out;
    Status result = dump_store(dir_.path(), out, options);
    if (status != nullptr) *status = result;
    return out.str();
  }

  TempDir dir_;
  ManualClock clock_;
  Random random_{11};
};

TEST_F(InspectTest, HealthyStorePassesAndNothingIsWritten) {
  build_store();
  ASSERT_GE(segment_count(), 3);
  auto before = contents(dir_.path());
  VerifyReport report = verify();
  EXPECT_TRUE(report.ok()) << describe(report.errors);
  EXPECT_TRUE(report.warnings.empty()) << describe(report.warnings);
  EXPECT_EQ(report.segments, static_cast<std::uint64_t>(segment_count()));
  EXPECT_EQ(report.events, 121u);
  EXPECT_EQ(report.metadata_records, 4u);  // max_count, soft delete, recreate, hard delete
  EXPECT_EQ(report.records, 125u);
  EXPECT_EQ(report.streams, 4u);
  EXPECT_EQ(report.first_position, 0u);
  EXPECT_EQ(report.last_position, 120u);
  EXPECT_EQ(report.positions_missing, 0u);
  EXPECT_TRUE(report.checkpoint_present);
  EXPECT_EQ(report.snapshots, 1u);
  EXPECT_THAT(report.summary(), HasSubstr("0 errors, 0 warnings"));
  std::string listing = dump({});
  EXPECT_EQ(contents(dir_.path()), before);
}

TEST_F(InspectTest, FlippedByteIsAnErrorNamingFileAndOffset) {
  build_store();
  Records records = records_of(segment(2));
  ASSERT_GE(records.offsets.size(), 5u);
  const std::uint64_t damaged = records.offsets[4];
  std::string bytes = read_bytes(segment(2));
  bytes[damaged + kRecordHeaderBytes + 30] ^= 0x10;  // inside the event id
  write_bytes(segment(2), bytes);

  VerifyReport report = verify();
  ASSERT_EQ(report.errors.size(), 1u) << describe(report.errors);
  EXPECT_EQ(report.errors[0].file, segment(2));
  EXPECT_EQ(report.errors[0].offset, damaged);
  EXPECT_THAT(report.errors[0].what, HasSubstr("fails its CRC"));
  EXPECT_FALSE(report.ok());
  // The store opens from its index checkpoint without reading old segments; it finds the
  // damage only when a read reaches it, naming the same place.
  auto store = open_store();
  ASSERT_TRUE(store);
  auto read = store->read_all(0, 1000);
  ASSERT_FALSE(read.ok());
  EXPECT_TRUE(read.error().is(errc::corrupt));
  EXPECT_THAT(read.error().message(),
              HasSubstr(segment(2) + " offset " + std::to_string(damaged) + ":"));
}

TEST_F(InspectTest, DamageInTheLastSegmentFollowedByDataIsAnError) {
  build_store();
  const int last = segment_count();
  Records records = records_of(segment(last));
  ASSERT_GE(records.offsets.size(), 2u);
  std::string bytes = read_bytes(segment(last));
  bytes[records.offsets[0] + kRecordHeaderBytes + 5] ^= 0x01;
  write_bytes(segment(last), bytes);
  VerifyReport report = verify();
  ASSERT_EQ(report.errors.size(), 1u) << describe(report.errors);
  EXPECT_EQ(report.errors[0].file, segment(last));
  EXPECT_EQ(report.errors[0].offset, records.offsets[0]);
  EXPECT_THAT(report.errors[0].what, HasSubstr("not a torn write"));
}

TEST_F(InspectTest, TornTailIsAWarningThatOpenCuts) {
  build_store();
  const int last = segment_count();
  Records records = records_of(segment(last));
  // Half of an append: a record without the last-in-append flag, then a record cut short.
  RecordedEvent event;
  event.stream = "order-1";
  event.type = "Happened";
  event.data = "{\"torn\":true}";
  event.position = 121;
  event.version = 40;
  std::string tail;
  encode_event(event, false, tail);
  event.position = 122;
  event.version = 41;
  std::string second;
  encode_event(event, true, second);
  tail += second.substr(0, second.size() / 2);
  std::string bytes = read_bytes(segment(last));
  ASSERT_LE(records.end + tail.size(), bytes.size());
  bytes.replace(records.end, tail.size(), tail);
  write_bytes(segment(last), bytes);

  VerifyReport report = verify();
  EXPECT_TRUE(report.ok()) << describe(report.errors);
  ASSERT_EQ(report.warnings.size(), 1u) << describe(report.warnings);
  EXPECT_EQ(report.warnings[0].file, segment(last));
  EXPECT_EQ(report.warnings[0].offset, records.end);
  EXPECT_THAT(report.warnings[0].what, HasSubstr("torn tail"));
  EXPECT_EQ(report.events, 121u);  // the torn append is not counted

  auto store = open_store();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->next_position(), 121u);
  ASSERT_TRUE(store->close().ok());
  report = verify();
  EXPECT_TRUE(report.ok()) << describe(report.errors);
  EXPECT_TRUE(report.warnings.empty()) << describe(report.warnings);
}

TEST_F(InspectTest, IncompleteAppendInASealedSegmentIsAnError) {
  build_store();
  Records records = records_of(segment(1));
  std::string bytes = read_bytes(segment(1));
  // Clear the last-in-append flag of the segment's final record and fix up its CRC.
  const std::uint64_t last_record = records.offsets.back();
  RecordView frame = read_frame(std::string_view(bytes).substr(last_record));
  ASSERT_EQ(frame.status, RecordView::Status::kOk);
  std::string rewritten;
  if (frame.kind == RecordKind::kEvent) {
    auto event = decode_event(frame);
    ASSERT_TRUE(event.ok());
    encode_event(*event, false, rewritten);
  } else {
    auto metadata = decode_metadata(frame);
    ASSERT_TRUE(metadata.ok());
    encode_metadata(metadata->stream, metadata->json, false, rewritten);
  }
  ASSERT_EQ(rewritten.size(), frame.size);
  bytes.replace(last_record, rewritten.size(), rewritten);
  write_bytes(segment(1), bytes);

  VerifyReport report = verify();
  ASSERT_FALSE(report.ok());
  EXPECT_EQ(report.errors[0].file, segment(1));
  EXPECT_EQ(report.errors[0].offset, last_record);
  EXPECT_THAT(report.errors[0].what, HasSubstr("not complete"));
}

TEST_F(InspectTest, CheckpointPointingAtTheWrongRecordIsAnError) {
  build_store();
  const std::string path = dir_.path() + "/index.chk";
  auto loaded = read_checkpoint(path);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  auto [index, ids] = std::move(**loaded);
  std::swap(index.locations[3], index.locations[4]);
  ASSERT_TRUE(write_checkpoint(path, index, ids).ok());

  VerifyReport report = verify();
  ASSERT_FALSE(report.ok());
  bool named = false;
  for (const auto& error : report.errors) {
    if (error.file == path && error.offset == 32 + 8 * 3) named = true;
  }
  EXPECT_TRUE(named) << describe(report.errors);
}

TEST_F(InspectTest, DamagedCheckpointIsAWarningBecauseOpenRebuildsTheIndex) {
  build_store();
  const std::string path = dir_.path() + "/index.chk";
  std::string bytes = read_bytes(path);
  bytes[40] ^= 0x01;
  write_bytes(path, bytes);
  VerifyReport report = verify();
  EXPECT_TRUE(report.ok()) << describe(report.errors);
  ASSERT_EQ(report.warnings.size(), 1u);
  EXPECT_EQ(report.warnings[0].file, path);
  EXPECT_THAT(report.warnings[0].what, HasSubstr("CRC"));
}

TEST_F(InspectTest, DamagedSnapshotIsAnError) {
  build_store();
  std::string snapshot;
  for (const auto& entry : fs::directory_iterator(dir_.path() + "/snapshots"))
    snapshot = entry.path().string();
  std::string bytes = read_bytes(snapshot);
  bytes[bytes.size() - 6] ^= 0x40;
  write_bytes(snapshot, bytes);
  VerifyReport report = verify();
  ASSERT_EQ(report.errors.size(), 1u) << describe(report.errors);
  EXPECT_EQ(report.errors[0].file, snapshot);
}

TEST_F(InspectTest, EverySingleByteChangeIsNoticedAndGarbageNeverCrashes) {
  build_store();
  const auto pristine = contents(dir_.path());
  std::vector<std::string> files;
  for (const auto& [path, bytes] : pristine) {
    if (!bytes.empty() && !path.ends_with("LOCK")) files.push_back(path);
  }
  Random random(2024);
  for (int round = 0; round < 300; ++round) {
    const std::string& path = files[random.uniform(files.size())];
    std::string bytes = pristine.at(path);
    const int kind = static_cast<int>(random.uniform(4));
    if (kind == 0) {  // one byte changed
      bytes[random.uniform(bytes.size())] ^= static_cast<char>(1 + random.uniform(255));
    } else if (kind == 1) {  // cut short
      bytes.resize(random.uniform(bytes.size()));
    } else {  // a run of random bytes
      std::size_t at = random.uniform(bytes.size());
      std::size_t length = std::min<std::size_t>(1 + random.uniform(64), bytes.size() - at);
      for (std::size_t i = 0; i < length; ++i) bytes[at + i] = static_cast<char>(random.next());
    }
    write_bytes(path, bytes);
    VerifyReport report = verify();
    if (kind == 0) {
      EXPECT_FALSE(report.errors.empty() && report.warnings.empty())
          << "round " << round << ": a changed byte in " << path << " went unnoticed";
    }
    std::ostringstream sink;
    (void)dump_store(dir_.path(), sink, {});
    write_bytes(path, pristine.at(path));
  }
}

TEST_F(InspectTest, LeftoversAndLookalikesAreWarnings) {
  build_store();
  write_bytes(dir_.path() + "/index.chk.tmp", "half a checkpoint");
  write_bytes(dir_.path() + "/backup01.seg", "not a segment");
  VerifyReport report = verify();
  EXPECT_TRUE(report.ok()) << describe(report.errors);
  ASSERT_EQ(report.warnings.size(), 2u) << describe(report.warnings);
  EXPECT_EQ(report.warnings[0].file, dir_.path() + "/backup01.seg");
  EXPECT_EQ(report.warnings[1].file, dir_.path() + "/index.chk.tmp");
}

// What verify calls damage is what makes open() refuse the store, when open() has to replay the
// whole log (no index checkpoint): flips in the records of any segment, or anywhere in the last.
TEST_F(InspectTest, VerifyAgreesWithOpenOnWhatIsDamage) {
  build_store();
  fs::remove(dir_.path() + "/index.chk");
  const auto pristine = contents(dir_.path());
  const int last = segment_count();
  ASSERT_TRUE(log::set_level("off").ok());
  Random random(99);
  for (int round = 0; round < 80; ++round) {
    const int number = 1 + static_cast<int>(random.uniform(last));
    const std::string path = segment(number);
    std::string bytes = pristine.at(path);
    const std::uint64_t limit = number == last ? bytes.size() : records_of(path).end;
    const std::uint64_t at = random.uniform(limit);
    bytes[at] ^= static_cast<char>(1 + random.uniform(255));
    write_bytes(path, bytes);
    VerifyReport report = verify();
    TempDir copy;
    fs::copy(dir_.path(), copy.path(), fs::copy_options::recursive);
    auto opened = EventStore::open(copy.path(), small(), clock_);
    EXPECT_EQ(report.ok(), opened.ok())
        << "round " << round << ": byte " << at << " of " << path
        << "; verify:" << describe(report.errors)
        << "\nopen: " << (opened.ok() ? "ok" : opened.error().message());
    write_bytes(path, pristine.at(path));
  }
  ASSERT_TRUE(log::set_level("info").ok());
}

TEST_F(InspectTest, DumpFiltersByStreamAndHonoursFromAndLimit) {
  build_store();
  std::string all = dump({});
  EXPECT_THAT(all, HasSubstr("0 order-1@0 Happened "));
  EXPECT_THAT(all, HasSubstr(" 2026-01-01T00:00:00.000000Z {\"i\":0}\n"));
  EXPECT_THAT(all, HasSubstr("- order-2 metadata {\"max_count\":1000}\n"));
  EXPECT_THAT(all, HasSubstr("- gone-1 metadata {\"tombstone\":true}\n"));

  DumpOptions options;
  options.stream = "order-2";
  options.from_position = 10;
  options.limit = 3;
  std::string some = dump(options);
  EXPECT_EQ(std::count(some.begin(), some.end(), '\n'), 3) << some;
  EXPECT_THAT(some, ::testing::StartsWith("10 order-2@3 Happened "));
  EXPECT_THAT(some, HasSubstr("\n13 order-2@4 "));
  EXPECT_THAT(some, HasSubstr("\n16 order-2@5 "));
  EXPECT_THAT(some, ::testing::Not(HasSubstr("order-1")));

  options = {};
  options.from_position = 120;
  options.data = false;
  std::string tail = dump(options);
  EXPECT_THAT(tail, ::testing::StartsWith("120 gone-1@0 Closed "));
  EXPECT_THAT(tail, ::testing::EndsWith("Z\n- gone-1 metadata {\"tombstone\":true}\n"));
}

TEST_F(InspectTest, DumpEscapesAndCutsData) {
  auto store = open_store();
  ASSERT_TRUE(store);
  std::string data = std::string("a\nb\x01\xff\\") + std::string(500, 'x');
  std::vector<EventData> batch = {make_event(random_, "Odd type", data)};
  ASSERT_TRUE(store->append("weird stream", ExpectedVersion::any(), batch).ok());
  ASSERT_TRUE(store->close().ok());
  std::string line = dump({});
  EXPECT_THAT(line, ::testing::StartsWith("0 weird\\x20stream@0 Odd\\x20type "));
  EXPECT_THAT(line, HasSubstr(" a\\nb\\x01\\xff\\\\xxx"));
  EXPECT_THAT(line, ::testing::EndsWith("x... (506 bytes)\n"));
  EXPECT_LT(line.size(), 400u);
}

TEST_F(InspectTest, DumpNotesDamageAndFails) {
  build_store();
  std::string bytes = read_bytes(segment(1));
  bytes[records_of(segment(1)).offsets[2] + 20] ^= 0x01;
  write_bytes(segment(1), bytes);
  Status status;
  std::string out = dump({}, &status);
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(status.error().is(errc::corrupt));
  EXPECT_THAT(out, HasSubstr("# error: " + segment(1) + " offset "));
  EXPECT_THAT(out, HasSubstr("0 order-1@0 "));    // before the damage
  EXPECT_THAT(out, HasSubstr(" payment-1@39 "));  // in later segments
}

TEST_F(InspectTest, RepairKeepsWhatPrecedesTheFirstErrorAndQuarantinesTheRest) {
  build_store();
  const int segments = segment_count();
  ASSERT_GE(segments, 3);
  Records records = records_of(segment(2));
  ASSERT_GE(records.offsets.size(), 6u);
  std::string original = read_bytes(segment(2));
  std::string bytes = original;
  bytes[records.offsets[5] + kRecordHeaderBytes + 8] ^= 0x04;
  write_bytes(segment(2), bytes);
  const Prefix prefix = prefix_of(segment(2), 5);
  const std::uint64_t kept = prefix_of(segment(1), SIZE_MAX).events + prefix.events;

  auto repaired = repair_truncate_at_first_error(dir_.path());
  ASSERT_TRUE(repaired.ok()) << repaired.error().to_string();
  EXPECT_TRUE(repaired->changed);
  EXPECT_EQ(repaired->cut_file, segment(2));
  EXPECT_EQ(repaired->cut_offset, prefix.append_start);
  EXPECT_THAT(repaired->first_error, HasSubstr("fails its CRC"));
  EXPECT_TRUE(repaired->after.ok()) << describe(repaired->after.errors);
  EXPECT_EQ(repaired->events_kept, kept);
  EXPECT_EQ(repaired->first_lost_position, kept);
  EXPECT_GT(repaired->readable_events_lost, 0u);

  // The damaged segment and everything after it are in quarantine, the index too.
  const std::string quarantine = dir_.path() + "/quarantine";
  EXPECT_EQ(read_bytes(quarantine + "/00000002.seg"), bytes);
  for (int n = 3; n <= segments; ++n) {
    EXPECT_FALSE(fs::exists(segment(n)));
    char name[32];
    std::snprintf(name, sizeof name, "/%08d.seg", n);
    EXPECT_TRUE(fs::exists(quarantine + name));
  }
  EXPECT_TRUE(fs::exists(quarantine + "/index.chk"));
  EXPECT_FALSE(fs::exists(dir_.path() + "/index.chk"));
  // order-1's snapshot is at version 39, beyond what is left: moved aside as well.
  EXPECT_TRUE(fs::is_empty(dir_.path() + "/snapshots"));
  std::string cut = read_bytes(segment(2));
  EXPECT_EQ(cut.size(), original.size());
  EXPECT_EQ(cut.substr(0, prefix.append_start), original.substr(0, prefix.append_start));
  EXPECT_TRUE(std::all_of(cut.begin() + static_cast<std::ptrdiff_t>(prefix.append_start), cut.end(),
                          [](char c) { return c == 0; }));

  auto store = open_store();
  ASSERT_TRUE(store);
  EXPECT_EQ(store->next_position(), kept);
  auto all = store->read_all(0, 1000);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->back().position + 1, kept);
  auto snapshot = store->load_snapshot("order-1");
  ASSERT_TRUE(snapshot.ok());
  EXPECT_FALSE(snapshot->has_value());
  std::vector<EventData> more = {make_event(random_, "After", "{}")};
  auto appended = store->append("order-1", ExpectedVersion::any(), more);
  ASSERT_TRUE(appended.ok());
  EXPECT_EQ(appended->first_position, kept);
  ASSERT_TRUE(store->close().ok());
  EXPECT_TRUE(verify().ok());
}

TEST_F(InspectTest, RepairOfAHealthyStoreChangesNothing) {
  build_store();
  auto before = contents(dir_.path());
  auto repaired = repair_truncate_at_first_error(dir_.path());
  ASSERT_TRUE(repaired.ok()) << repaired.error().to_string();
  EXPECT_FALSE(repaired->changed);
  EXPECT_TRUE(repaired->quarantined.empty());
  EXPECT_EQ(contents(dir_.path()), before);
}

TEST_F(InspectTest, RepairRefusesWhileTheStoreIsOpen) {
  build_store();
  auto store = open_store();
  ASSERT_TRUE(store);
  auto repaired = repair_truncate_at_first_error(dir_.path());
  ASSERT_FALSE(repaired.ok());
  EXPECT_THAT(repaired.error().message(), HasSubstr("LOCK is held"));
}

TEST_F(InspectTest, MissingDirectoryFails) {
  auto report = verify_store(dir_.path() + "/nothing-here");
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(report.error().is(errc::io_error));
}

}  // namespace
}  // namespace keel::eventlog

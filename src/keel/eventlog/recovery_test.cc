// EventStore::open() on damaged and crash-shaped directories, built with the public API and then
// edited on disk: torn tails, appends that lack their last record, flipped bytes, cut-short
// segments, missing or damaged index checkpoints, an interrupted scavenge. What a user must see:
// either the store opens with every complete append and nothing else, or it refuses with
// errc::corrupt and a message naming the file and offset.
//
// A "crash copy" is the directory copied while the store is still open: what a kill -9 leaves
// (appends are synced before they are acknowledged), with the index checkpoint as of the last
// time one was written.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sys/stat.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "keel/core/log.h"
#include "keel/eventlog/crc32c.h"
#include "keel/eventlog/event_store.h"
#include "keel/eventlog/event_store_impl.h"  // StoredMetadata: to size a metadata record
#include "keel/eventlog/inspect.h"
#include "keel/eventlog/record.h"
#include "keel/eventlog/test_support.h"

namespace keel::eventlog {
namespace {

using testing::TempDir;

constexpr std::uint64_t kSegmentBytes = 8 * 1024;

std::string segment_path(const std::string& directory, std::uint64_t number) {
  char name[32];
  std::snprintf(name, sizeof name, "/%08llu.seg", static_cast<unsigned long long>(number));
  return directory + name;
}

std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

void write_at(const std::string& path, std::uint64_t offset, std::string_view bytes) {
  std::fstream file(path, std::ios::binary | std::ios::in | std::ios::out);
  ASSERT_TRUE(file) << path;
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(file) << path;
}

void flip_byte(const std::string& path, std::uint64_t offset) {
  std::string bytes = read_file(path);
  ASSERT_LT(offset, bytes.size());
  write_at(path, offset, std::string(1, static_cast<char>(bytes[offset] ^ 0x5a)));
}

struct RecordSpan {
  std::uint64_t offset = 0;
  std::uint64_t size = 0;
  bool last_in_append = false;
};

// The intact records of a segment file, up to its zeroed tail or its first damage.
std::vector<RecordSpan> records_of(const std::string& path) {
  std::string bytes = read_file(path);
  std::vector<RecordSpan> records;
  std::uint64_t offset = 0;
  while (offset < bytes.size()) {
    RecordView frame = read_frame(std::string_view(bytes).substr(offset));
    if (frame.status != RecordView::Status::kOk) break;
    records.push_back({offset, frame.size, (frame.flags & kLastInAppend) != 0});
    offset += frame.size;
  }
  return records;
}

std::uint64_t records_end(const std::string& path) {
  auto records = records_of(path);
  return records.empty() ? 0 : records.back().offset + records.back().size;
}

bool zero_from(const std::string& path, std::uint64_t offset) {
  std::string bytes = read_file(path);
  return std::all_of(bytes.begin() + static_cast<std::ptrdiff_t>(offset), bytes.end(),
                     [](char c) { return c == 0; });
}

std::uint64_t event_record_bytes(const std::string& stream, const EventData& event) {
  RecordedEvent recorded{event.id, stream, event.type, event.data, event.metadata};
  std::string bytes;
  encode_event(recorded, true, bytes);
  return bytes.size();
}

// Everything a reader can see, one line per fact, so that two opens of a store compare as text.
std::string view_of(EventStore& store, const std::vector<std::string>& streams,
                    const std::vector<std::string>& categories,
                    const std::vector<std::string>& types) {
  std::ostringstream out;
  auto events = [&](const char* what, const Result<std::vector<RecordedEvent>>& read) {
    if (!read) {
      out << what << " error " << read.error().to_string() << "\n";
      return;
    }
    for (const auto& e : *read) {
      out << what << " " << e.position << " " << e.stream << "@" << e.version << " "
          << e.id.to_string() << " " << e.type << " " << e.data << " " << e.metadata << " "
          << e.timestamp_ns << "\n";
    }
  };
  out << "next_position " << store.next_position() << "\n";
  events("all", store.read_all(0, 1000000));
  events("all-backward", store.read_all(UINT64_MAX, 1000000, Direction::kBackward));
  for (const auto& stream : streams) {
    auto version = store.stream_version(stream);
    out << stream << " version " << (version ? std::to_string(*version) : "none") << " metadata "
        << store.metadata(stream).to_json() << "\n";
    events(stream.c_str(), store.read_stream(stream, 0, 1000000));
  }
  for (const auto& category : categories)
    events(("category " + category).c_str(), store.read_category(category, 0, 1000000));
  for (const auto& type : types)
    events(("type " + type).c_str(), store.read_event_type(type, 0, 1000000));
  return out.str();
}

class RecoveryTest : public ::testing::Test {
 protected:
  StoreOptions options() const {
    StoreOptions options;
    options.segment_bytes = kSegmentBytes;
    return options;
  }
  Result<std::unique_ptr<EventStore>> try_open(const std::string& directory) {
    return EventStore::open(directory, options(), clock_);
  }
  std::unique_ptr<EventStore> open(const std::string& directory) {
    auto opened = try_open(directory);
    EXPECT_TRUE(opened.ok()) << opened.error().to_string();
    return opened.ok() ? std::move(*opened) : nullptr;
  }
  // The directory as a crash would leave it, in copy_ (see the top of the file).
  void crash_copy(const std::string& directory) {
    std::filesystem::remove_all(copy_.path());
    std::filesystem::copy(directory, copy_.path(), std::filesystem::copy_options::recursive);
  }
  std::vector<EventData> events(int n, std::size_t data_bytes = 10) {
    std::vector<EventData> batch;
    for (int i = 0; i < n; ++i) {
      batch.push_back(testing::make_event(random_, "Happened", std::string(data_bytes, 'a' + i)));
    }
    return batch;
  }
  AppendResult must_append(EventStore& store, const std::string& stream,
                           const std::vector<EventData>& batch) {
    clock_.advance(1ms);
    auto result = store.append(stream, ExpectedVersion::any(), batch);
    EXPECT_TRUE(result.ok()) << result.error().to_string();
    return result.ok() ? *result : AppendResult{};
  }
  std::vector<std::uint64_t> versions(EventStore& store, const std::string& stream) {
    std::vector<std::uint64_t> result;
    auto read = store.read_stream(stream, 0, 100000);
    EXPECT_TRUE(read.ok()) << read.error().to_string();
    if (read.ok())
      for (const auto& event : *read) result.push_back(event.version);
    return result;
  }
  // Appends one event to `stream` sized so that `room` bytes stay free in the active segment.
  void fill_segment_leaving(EventStore& store, const std::string& stream, std::uint64_t number,
                            std::uint64_t room) {
    std::uint64_t end = records_end(segment_path(dir_.path(), number));
    EventData event = events(1, 0)[0];
    std::uint64_t overhead = event_record_bytes(stream, event);
    ASSERT_GE(kSegmentBytes, end + room + overhead);
    event.data.assign(kSegmentBytes - end - room - overhead, 'f');
    must_append(store, stream, {event});
    ASSERT_EQ(records_end(segment_path(dir_.path(), number)), kSegmentBytes - room);
  }
  // Several segments of events in a few streams, with metadata, deletes and a scavenge.
  void build_varied_store() {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 60; ++i) {
      must_append(*store, kStreams[i % kStreams.size()], events(1 + i % 3, 40 + (i * 37) % 300));
    }
    ASSERT_TRUE(store->set_metadata("order-2", {.max_count = 3}).ok());
    ASSERT_TRUE(store->delete_stream("cart-1", ExpectedVersion::any(), false).ok());
    ASSERT_TRUE(store->delete_stream("user-1", ExpectedVersion::any(), true).ok());
    must_append(*store, "cart-1", events(2));  // recreated
    for (int i = 0; i < 30; ++i) must_append(*store, "order-1", events(1, 200));
    auto report = store->scavenge();
    ASSERT_TRUE(report.ok()) << report.error().to_string();
    ASSERT_GT(report->events_removed, 0u);
    must_append(*store, "order-3", events(2));
    ASSERT_TRUE(store->close().ok());
  }
  std::string view(EventStore& store) {
    std::vector<std::string> streams = kStreams;
    streams.insert(streams.end(), {"keep-1", "drop-1"});
    return view_of(store, streams, {"order", "cart", "user", "keep", "drop"}, {"Happened"});
  }

  const std::vector<std::string> kStreams = {"order-1", "order-2", "order-3", "cart-1", "user-1"};
  TempDir dir_;
  TempDir copy_;
  ManualClock clock_;
  Random random_{5};
};

// ---- torn tails: cut, and the store goes on ----

TEST_F(RecoveryTest, TornBytesAfterTheLastAppendAreCutAndAppendsContinue) {
  const std::string segment = segment_path(dir_.path(), 1);
  struct Tail {
    const char* what;
    std::string bytes;
  };
  std::vector<Tail> tails;
  {
    RecordedEvent next{Uuid::random_v4(random_), "s-1", "Happened", std::string(300, 'x')};
    next.position = 3;
    next.version = 3;
    std::string record;
    encode_event(next, true, record);
    tails.push_back({"the first half of a record", record.substr(0, record.size() / 2)});
    std::string garbage(200, '\0');
    for (auto& c : garbage) c = static_cast<char>(random_.uniform(256));
    tails.push_back({"random garbage", garbage});
    tails.push_back({"a header whose payload never came", record.substr(0, kRecordHeaderBytes)});
  }
  for (std::size_t i = 0; i < tails.size(); ++i) {
    SCOPED_TRACE(tails[i].what);
    std::filesystem::remove_all(dir_.path());
    {
      auto store = open(dir_.path());
      ASSERT_TRUE(store);
      must_append(*store, "s-1", events(2));
      must_append(*store, "s-1", events(1));
    }
    const std::uint64_t end = records_end(segment);
    write_at(segment, end, tails[i].bytes);

    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    EXPECT_EQ(versions(*store, "s-1"), (std::vector<std::uint64_t>{0, 1, 2}));
    EXPECT_EQ(store->next_position(), 3u);
    EXPECT_TRUE(zero_from(segment, end)) << "the torn bytes are cut off on disk";
    auto appended = store->append("s-1", ExpectedVersion::exact(2), events(1));
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
    EXPECT_EQ(appended->first_position, 3u);
    ASSERT_TRUE(store->close().ok());
    store = open(dir_.path());
    ASSERT_TRUE(store);
    EXPECT_EQ(versions(*store, "s-1"), (std::vector<std::uint64_t>{0, 1, 2, 3}));
  }
}

TEST_F(RecoveryTest, AppendTornByACrashIsDroppedAndItsPositionsAreReused) {
  for (bool keep_checkpoint : {true, false}) {
    SCOPED_TRACE(keep_checkpoint ? "with the checkpoint from before" : "without index.chk");
    std::filesystem::remove_all(dir_.path());
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "s-1", events(2));
    ASSERT_TRUE(store->checkpoint().ok());
    must_append(*store, "s-2", events(1, 400));
    crash_copy(dir_.path());
    ASSERT_TRUE(store->close().ok());

    // The crash came while the last record was being written: its second half never arrived.
    const std::string segment = segment_path(copy_.path(), 1);
    auto records = records_of(segment);
    ASSERT_EQ(records.size(), 3u);
    const RecordSpan& last = records.back();
    write_at(segment, last.offset + last.size / 2, std::string(last.size - last.size / 2, '\0'));
    if (!keep_checkpoint) std::filesystem::remove(copy_.path() + "/index.chk");

    auto recovered = open(copy_.path());
    ASSERT_TRUE(recovered);
    EXPECT_EQ(recovered->next_position(), 2u);
    EXPECT_EQ(versions(*recovered, "s-1"), (std::vector<std::uint64_t>{0, 1}));
    EXPECT_FALSE(recovered->stream_version("s-2").has_value()) << "the torn append is gone";
    EXPECT_TRUE(zero_from(segment, last.offset));
    auto again = recovered->append("s-2", ExpectedVersion::no_stream(), events(1));
    ASSERT_TRUE(again.ok()) << again.error().to_string();
    EXPECT_EQ(again->first_position, 2u);
  }
}

TEST_F(RecoveryTest, AppendLackingItsLastRecordIsDroppedWhole) {
  for (bool keep_checkpoint : {true, false}) {
    SCOPED_TRACE(keep_checkpoint ? "with index.chk" : "without index.chk");
    std::filesystem::remove_all(dir_.path());
    {
      auto store = open(dir_.path());
      ASSERT_TRUE(store);
      must_append(*store, "s-1", events(1));
    }
    // The records of a three-event append, minus its last one (which carries the flag that
    // closes the append).
    const std::string segment = segment_path(dir_.path(), 1);
    const std::uint64_t end = records_end(segment);
    std::string bytes;
    for (std::uint64_t i = 0; i < 2; ++i) {
      RecordedEvent event{Uuid::random_v4(random_), "s-1", "Happened", "{}"};
      event.position = 1 + i;
      event.version = 1 + i;
      encode_event(event, false, bytes);
    }
    write_at(segment, end, bytes);
    if (!keep_checkpoint) std::filesystem::remove(dir_.path() + "/index.chk");

    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    EXPECT_EQ(store->next_position(), 1u);
    EXPECT_EQ(versions(*store, "s-1"), std::vector<std::uint64_t>{0});
    EXPECT_TRUE(zero_from(segment, end));
    auto appended = store->append("s-1", ExpectedVersion::exact(0), events(2));
    ASSERT_TRUE(appended.ok()) << appended.error().to_string();
    EXPECT_EQ(appended->first_position, 1u);
    EXPECT_EQ(appended->last_version, 2u);
  }
}

// ---- damage that is not a torn write: refused, with file and offset ----

TEST_F(RecoveryTest, FlippedByteInASealedSegmentIsReportedWithFileAndOffset) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 40; ++i) must_append(*store, "s-1", events(1, 500));
  }
  const std::string segment = segment_path(dir_.path(), 1);
  ASSERT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 3))) << "several segments";
  auto records = records_of(segment);
  ASSERT_GT(records.size(), 5u);
  const RecordSpan& damaged = records[records.size() / 2];
  flip_byte(segment, damaged.offset + damaged.size / 2);
  const std::string where = segment + " offset " + std::to_string(damaged.offset);

  // Without a checkpoint, open reads the whole log and refuses.
  std::filesystem::copy(
      dir_.path(), copy_.path(),
      std::filesystem::copy_options::recursive | std::filesystem::copy_options::overwrite_existing);
  std::filesystem::remove(copy_.path() + "/index.chk");
  auto refused = try_open(copy_.path());
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(refused.error().is(errc::corrupt)) << refused.error().to_string();
  EXPECT_NE(refused.error().message().find(segment_path(copy_.path(), 1) + " offset " +
                                           std::to_string(damaged.offset)),
            std::string::npos)
      << refused.error().message();

  // With one, open does not read what the checkpoint covers; the damage shows where it is read.
  auto opened = try_open(dir_.path());
  if (!opened) {
    EXPECT_TRUE(opened.error().is(errc::corrupt));
    EXPECT_NE(opened.error().message().find(where), std::string::npos);
    return;
  }
  auto all = (*opened)->read_all(0, 1000);
  ASSERT_FALSE(all.ok()) << "a damaged event was read as if it were fine";
  EXPECT_TRUE(all.error().is(errc::corrupt));
  EXPECT_NE(all.error().message().find(where), std::string::npos) << all.error().message();
  auto before = (*opened)->read_all(0, records.size() / 2);
  ASSERT_TRUE(before.ok()) << "events before the damage still read";
}

TEST_F(RecoveryTest, FlippedByteInTheLastSegmentWithAppendsAfterItIsReported) {
  const std::string segment = segment_path(dir_.path(), 1);
  // In the payload, and in the length field, where a damaged length must not let the store
  // take the rest of the segment for a torn tail and cut acknowledged appends.
  for (std::uint64_t at : {std::uint64_t{20}, std::uint64_t{3}}) {
    SCOPED_TRACE("byte " + std::to_string(at) + " of the record");
    std::filesystem::remove_all(dir_.path());
    {
      auto store = open(dir_.path());
      ASSERT_TRUE(store);
      for (int i = 0; i < 4; ++i) must_append(*store, "s-1", events(1, 50));
    }
    std::filesystem::remove(dir_.path() + "/index.chk");
    auto records = records_of(segment);
    ASSERT_EQ(records.size(), 4u);
    flip_byte(segment, records[1].offset + at);
    const std::string image = read_file(segment);

    auto refused = try_open(dir_.path());
    ASSERT_FALSE(refused.ok()) << "appends 2 and 3 were acknowledged; they may not be cut";
    EXPECT_TRUE(refused.error().is(errc::corrupt)) << refused.error().to_string();
    EXPECT_NE(
        refused.error().message().find(segment + " offset " + std::to_string(records[1].offset)),
        std::string::npos)
        << refused.error().message();
    EXPECT_EQ(read_file(segment), image) << "a refused open changes nothing on disk";
  }
}

TEST_F(RecoveryTest, AppendCutShortAtTheEndOfASealedSegmentIsReportedNotMerged) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "s-1", events(1));
    fill_segment_leaving(*store, "s-1", 1, 600);
    must_append(*store, "s-2", events(3));        // fits in segment 1
    must_append(*store, "s-3", events(1, 1000));  // does not: segment 2
  }
  ASSERT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 2)));
  // Segment 1's last append (s-2's three events) loses its last record, as when a crash tears
  // a group commit that spanned a roll.
  const std::string segment = segment_path(dir_.path(), 1);
  auto records = records_of(segment);
  ASSERT_EQ(records.size(), 5u);
  write_at(segment, records[4].offset, std::string(records[4].size, '\0'));
  std::filesystem::remove(dir_.path() + "/index.chk");

  auto refused = try_open(dir_.path());
  ASSERT_FALSE(refused.ok()) << "two events of an incomplete append would have been shown";
  EXPECT_TRUE(refused.error().is(errc::corrupt)) << refused.error().to_string();
  EXPECT_NE(
      refused.error().message().find(segment + " offset " + std::to_string(records[2].offset)),
      std::string::npos)
      << refused.error().message();
}

TEST_F(RecoveryTest, CutShortSealedSegmentIsReportedWithAndWithoutACheckpoint) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 40; ++i) must_append(*store, "s-1", events(1, 500));
  }
  const std::string segment = segment_path(dir_.path(), 1);
  auto records = records_of(segment);
  ASSERT_GT(records.size(), 4u);
  struct Cut {
    const char* what;
    std::uint64_t size;
    bool keep_checkpoint;
  };
  const RecordSpan& victim = records[records.size() - 2];
  for (const Cut& cut : {Cut{"mid-record, no index.chk", victim.offset + 100, false},
                         Cut{"mid-record, index.chk", victim.offset + 100, true},
                         Cut{"at a record boundary, index.chk", victim.offset, true}}) {
    SCOPED_TRACE(cut.what);
    std::filesystem::remove_all(copy_.path());
    std::filesystem::copy(dir_.path(), copy_.path(), std::filesystem::copy_options::recursive);
    const std::string copied = segment_path(copy_.path(), 1);
    std::filesystem::resize_file(copied, cut.size);
    if (!cut.keep_checkpoint) std::filesystem::remove(copy_.path() + "/index.chk");

    auto refused = try_open(copy_.path());
    ASSERT_FALSE(refused.ok()) << "events of " << copied << " are missing";
    EXPECT_TRUE(refused.error().is(errc::corrupt)) << refused.error().to_string();
    EXPECT_NE(refused.error().message().find(copied + " offset "), std::string::npos)
        << refused.error().message();
  }
}

TEST_F(RecoveryTest, EventWithAnImpossiblePositionOrVersionIsReportedNotIndexed) {
  // Records with good CRCs whose numbers would size the index by them (2^40 positions).
  for (bool bad_version : {false, true}) {
    SCOPED_TRACE(bad_version ? "version" : "position");
    std::filesystem::remove_all(dir_.path());
    {
      auto store = open(dir_.path());
      ASSERT_TRUE(store);
      must_append(*store, "s-1", events(1));
    }
    std::filesystem::remove(dir_.path() + "/index.chk");
    const std::string segment = segment_path(dir_.path(), 1);
    const std::uint64_t end = records_end(segment);
    RecordedEvent event{Uuid::random_v4(random_), "s-1", "Happened", "{}"};
    event.position = bad_version ? 1 : 1ull << 40;
    event.version = bad_version ? 1ull << 40 : 1;
    std::string record;
    encode_event(event, true, record);
    write_at(segment, end, record);

    auto refused = try_open(dir_.path());
    ASSERT_FALSE(refused.ok());
    EXPECT_TRUE(refused.error().is(errc::corrupt)) << refused.error().to_string();
    EXPECT_NE(refused.error().message().find(segment + " offset " + std::to_string(end)),
              std::string::npos)
        << refused.error().message();
  }
}

// ---- the index checkpoint: missing, damaged or stale means rebuilt, with the same reads ----

TEST_F(RecoveryTest, MissingIndexCheckpointIsRebuiltFromTheLog) {
  build_varied_store();
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  const std::string before = view(*store);
  auto retry = store->read_stream("order-3", 0, 100);
  ASSERT_TRUE(retry.ok() && !retry->empty());
  ASSERT_TRUE(store->close().ok());
  store.reset();
  ASSERT_TRUE(std::filesystem::remove(dir_.path() + "/index.chk"));

  store = open(dir_.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(view(*store), before);
  // Appends go on from the same versions and positions, and recent ids are still known.
  const std::uint64_t next = store->next_position();
  auto appended = store->append(
      "order-3", ExpectedVersion::exact(*store->stream_version("order-3")), events(1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->first_position, next);
  const RecordedEvent& last = retry->back();
  auto duplicate = store->append("order-3", ExpectedVersion::any(),
                                 {{last.id, last.type, last.data, last.metadata}});
  ASSERT_TRUE(duplicate.ok()) << duplicate.error().to_string();
  EXPECT_TRUE(duplicate->duplicate);
  EXPECT_EQ(duplicate->first_position, last.position);
}

TEST_F(RecoveryTest, DamagedIndexCheckpointIsRebuiltWithAWarning) {
  build_varied_store();
  std::string before;
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    before = view(*store);
  }
  const std::string checkpoint = dir_.path() + "/index.chk";
  const std::string good = read_file(checkpoint);
  for (int damage = 0; damage < 2; ++damage) {
    SCOPED_TRACE(damage == 0 ? "a flipped byte" : "cut short");
    { std::ofstream(checkpoint, std::ios::binary | std::ios::trunc) << good; }
    if (damage == 0)
      flip_byte(checkpoint, good.size() / 2);
    else
      std::filesystem::resize_file(checkpoint, good.size() / 3);

    std::ostringstream logged;
    auto logger = log::get("eventlog");
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(logged);
    logger->sinks().push_back(sink);
    auto store = open(dir_.path());
    logger->sinks().pop_back();
    ASSERT_TRUE(store);
    EXPECT_NE(logged.str().find("index.chk"), std::string::npos) << logged.str();
    EXPECT_NE(logged.str().find("rebuilding the index"), std::string::npos) << logged.str();
    EXPECT_EQ(view(*store), before);
  }
}

TEST_F(RecoveryTest, ScavengeMarkerLeftBehindMakesOpenIgnoreTheCheckpoint) {
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  for (int i = 0; i < 40; ++i) must_append(*store, i % 2 ? "keep-1" : "drop-1", events(1, 400));
  ASSERT_TRUE(store->checkpoint().ok());
  const std::string stale = read_file(dir_.path() + "/index.chk");
  ASSERT_TRUE(store->delete_stream("drop-1", ExpectedVersion::any(), true).ok());
  auto report = store->scavenge();
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  ASSERT_GT(report->segments_rewritten, 0u) << "offsets moved: the old checkpoint is wrong now";
  const std::string after = view(*store);
  ASSERT_TRUE(store->close().ok());
  store.reset();

  // As if the scavenge had been cut short after rewriting the segments: the marker is still
  // there and index.chk is the one from before.
  std::ofstream(dir_.path() + "/index.chk", std::ios::binary | std::ios::trunc) << stale;
  std::ofstream(dir_.path() + "/scavenge.pending") << "scavenge";
  store = open(dir_.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(view(*store), after);
  EXPECT_FALSE(std::filesystem::exists(dir_.path() + "/scavenge.pending"));
  auto appended = store->append("keep-1", ExpectedVersion::exact(19), events(1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->first_position, 40u);
}

// ---- scavenging and an index rebuilt from what it left ----

TEST_F(RecoveryTest, ScavengeAfterReopenStillReclaimsSegmentsSealedBeforeIt) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 30; ++i) must_append(*store, "d-1", events(1, 700));
  }
  auto store = open(dir_.path());  // from the checkpoint: sealed segments are not read
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->delete_stream("d-1", ExpectedVersion::any(), true).ok());
  must_append(*store, "k-1", events(1, 8000));  // a segment of its own: d-1's are all sealed
  auto report = store->scavenge();
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_GE(report->events_removed, 28u);
  EXPECT_GE(report->segments_emptied, 2u);
  // The file stays, holding only the range of positions removed: no gap in segment numbers.
  ASSERT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 1)));
  EXPECT_LT(std::filesystem::file_size(segment_path(dir_.path(), 1)), 100u);
  store.reset();
  std::filesystem::remove(dir_.path() + "/index.chk");
  auto rebuilt = open(dir_.path());  // from the log alone: the ranges account for every position
  ASSERT_TRUE(rebuilt);
  EXPECT_EQ(rebuilt->next_position(), 31u);
}

TEST_F(RecoveryTest, SoftDeletedStreamKeepsItsVersionAfterScavengeAndRebuild) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "u-1", events(3));
    ASSERT_TRUE(store->delete_stream("u-1", ExpectedVersion::exact(2), false).ok());
    must_append(*store, "k-1", events(1, 8000));  // seals u-1's segment
    auto report = store->scavenge();
    ASSERT_TRUE(report.ok()) << report.error().to_string();
    EXPECT_EQ(report->events_removed, 2u) << "u-1's last event stays, to keep its version";
  }
  std::filesystem::remove(dir_.path() + "/index.chk");
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  auto recreated = store->append("u-1", ExpectedVersion::no_stream(), events(1));
  ASSERT_TRUE(recreated.ok()) << recreated.error().to_string();
  EXPECT_EQ(recreated->first_version, 3u) << "versions go on from where they were";
  EXPECT_EQ(versions(*store, "u-1"), std::vector<std::uint64_t>{3});
}

TEST_F(RecoveryTest, PositionsNeverGoBackAfterScavengeAndRebuild) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    // x-1's events are the last in segment 1, and its tombstone no longer fits there: the
    // active segment then holds no event at all.
    must_append(*store, "x-1", events(2));
    fill_segment_leaving(*store, "x-1", 1, 20);
    ASSERT_TRUE(store->delete_stream("x-1", ExpectedVersion::any(), true).ok());
    ASSERT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 2)));
    auto report = store->scavenge();
    ASSERT_TRUE(report.ok()) << report.error().to_string();
    EXPECT_EQ(store->next_position(), 3u);
  }
  std::filesystem::remove(dir_.path() + "/index.chk");
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->next_position(), 3u);
  auto appended = store->append("y-1", ExpectedVersion::no_stream(), events(1));
  ASSERT_TRUE(appended.ok()) << appended.error().to_string();
  EXPECT_EQ(appended->first_position, 3u) << "a position is never given out twice";
  auto deleted = store->append("x-1", ExpectedVersion::any(), events(1));
  ASSERT_FALSE(deleted.ok()) << "the tombstone was lost";
  EXPECT_TRUE(deleted.error().is(errc::stream_deleted)) << deleted.error().to_string();
}

TEST_F(RecoveryTest, ScavengeKeepsTheMetadataRecordsOfSegmentsItEmpties) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "a-1", events(2, 3000));
    ASSERT_TRUE(store->delete_stream("z-1", ExpectedVersion::any(), true).ok());
    ASSERT_TRUE(store->set_metadata("m-1", {.max_count = 7}).ok());
    must_append(*store, "a-1", events(1, 6000));  // segment 2
    ASSERT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 2)));
    ASSERT_TRUE(store->set_metadata("a-1", {.truncate_before = 2}).ok());
    must_append(*store, "k-1", events(1, 8000));  // segment 3: 1 and 2 are sealed
    // Segment 1 now holds two hidden events and the two metadata records.
    auto report = store->scavenge();
    ASSERT_TRUE(report.ok()) << report.error().to_string();
    EXPECT_EQ(report->events_removed, 2u);
  }
  std::filesystem::remove(dir_.path() + "/index.chk");
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  auto deleted = store->append("z-1", ExpectedVersion::any(), events(1));
  ASSERT_FALSE(deleted.ok()) << "the tombstone was lost with its segment";
  EXPECT_TRUE(deleted.error().is(errc::stream_deleted)) << deleted.error().to_string();
  EXPECT_EQ(store->metadata("m-1").max_count, std::optional<std::uint64_t>(7));
  EXPECT_EQ(versions(*store, "a-1"), std::vector<std::uint64_t>{2});
}

TEST_F(RecoveryTest, ScavengeStopsAtADamagedRecordRatherThanDropWhatFollows) {
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  for (int i = 0; i < 12; ++i) must_append(*store, i % 2 ? "keep-1" : "drop-1", events(1, 500));
  must_append(*store, "k-1", events(1, 8000));
  const std::string segment = segment_path(dir_.path(), 1);
  auto records = records_of(segment);
  ASSERT_GT(records.size(), 6u);
  flip_byte(segment, records[5].offset + records[5].size / 2);
  const std::string image = read_file(segment);
  ASSERT_TRUE(store->delete_stream("drop-1", ExpectedVersion::any(), true).ok());
  auto report = store->scavenge();
  ASSERT_FALSE(report.ok()) << "records after the damage would have been dropped";
  EXPECT_TRUE(report.error().is(errc::corrupt));
  EXPECT_NE(report.error().message().find(segment + " offset " + std::to_string(records[5].offset)),
            std::string::npos)
      << report.error().message();
  EXPECT_EQ(read_file(segment), image);
}

// ---- the directory itself ----

TEST_F(RecoveryTest, FailedOpenReleasesTheDirectory) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 4; ++i) must_append(*store, "s-1", events(1, 50));
  }
  std::filesystem::remove(dir_.path() + "/index.chk");
  const std::string segment = segment_path(dir_.path(), 1);
  const std::string good = read_file(segment);
  flip_byte(segment, records_of(segment)[1].offset + 20);
  ASSERT_FALSE(try_open(dir_.path()).ok());

  std::ofstream(segment, std::ios::binary | std::ios::trunc) << good;  // repaired
  auto store = try_open(dir_.path());
  ASSERT_TRUE(store.ok()) << store.error().to_string();
  EXPECT_EQ(versions(**store, "s-1"), (std::vector<std::uint64_t>{0, 1, 2, 3}));
}

TEST_F(RecoveryTest, StrayFilesInTheDirectoryAreIgnored) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "s-1", events(2));
  }
  std::ofstream(dir_.path() + "/backup00.seg") << "not a segment";
  std::ofstream(dir_.path() + "/00000001.seg.scavenge") << "left by a crash";
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(versions(*store, "s-1"), (std::vector<std::uint64_t>{0, 1}));
}

// ---- the torn-tail scan ----

// The rule as first written: try every offset, CRC every plausible candidate (quadratic).
bool intact_record_after_by_brute_force(std::string_view segment, std::uint64_t from) {
  const std::uint64_t end = written_end(segment, from);
  for (std::uint64_t at = from; at + kRecordHeaderBytes < end; ++at) {
    if (read_frame(segment.substr(at)).status == RecordView::Status::kOk &&
        plausible_header(segment.substr(at)))
      return true;
  }
  return false;
}

TEST(TornTailScanTest, OnePassScanAgreesWithTheByteByByteRule) {
  Random random(17);
  int found = 0;
  for (int round = 0; round < 400; ++round) {
    // Header look-alikes everywhere, some real records among them, some of those damaged.
    std::string bytes(64 + random.uniform(2000), '\0');
    for (char& c : bytes) c = random.uniform(4) == 0 ? static_cast<char>(random.uniform(256)) : 0;
    for (std::size_t i = 0; i + 12 < bytes.size(); i += 1 + random.uniform(40)) {
      std::uint32_t length = 4 + static_cast<std::uint32_t>(random.uniform(bytes.size()));
      std::memcpy(bytes.data() + i, &length, 4);
      bytes[i + 8] = static_cast<char>(1 + random.uniform(3));
      bytes[i + 9] = static_cast<char>(random.uniform(2));
      bytes[i + 10] = bytes[i + 11] = 0;
    }
    if (random.uniform(2) == 0) {
      RecordedEvent event{Uuid(), "s", "t", std::string(random.uniform(100), 'd'), ""};
      std::string record;
      encode_event(event, true, record);
      if (random.uniform(3) == 0) record[8 + random.uniform(record.size() - 8)] ^= 1;
      std::size_t at = random.uniform(bytes.size());
      bytes.replace(at, std::min(record.size(), bytes.size() - at), record);
    }
    std::uint64_t from = random.uniform(bytes.size() / 2);
    bool expected = intact_record_after_by_brute_force(bytes, from);
    found += expected;
    ASSERT_EQ(intact_record_after(bytes, from), expected) << "round " << round << " seed 17";
  }
  EXPECT_GT(found, 20) << "the rounds should include intact records";
}

TEST(TornTailScanTest, CraftedHeaderLookAlikesCostOnePass) {
  // Every offset a plausible header claiming the rest of the file: each candidate's own CRC
  // would read ~1 MiB, so a per-candidate check is quadratic (7 s at 1 MiB before).
  std::string bytes(1 << 20, '\0');
  for (std::size_t i = 0; i + 12 < bytes.size(); i += 12) {
    std::uint32_t length = static_cast<std::uint32_t>(bytes.size() - i - 8);
    std::memcpy(bytes.data() + i, &length, 4);
    bytes[i + 8] = 1;
  }
  EXPECT_FALSE(intact_record_after(bytes, 1));
}

// ---- a crash while another appender rolls to a new segment ----

TEST_F(RecoveryTest, TornEndOfASegmentFollowedOnlyByEmptySegmentsIsATornTail) {
  // What a crash left before rolls waited for writes in flight: segment 1's last append cut
  // short, segment 2 created (all zeros) by an appender that rolled meanwhile.
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 5; ++i) must_append(*store, "s-1", events(1, 100));
  }
  const std::string first = segment_path(dir_.path(), 1);
  const std::uint64_t end = records_end(first);
  RecordedEvent torn{Uuid(), "s-1", "Happened", std::string(300, 'x'), ""};
  torn.version = 5;
  torn.position = 5;
  std::string bytes;
  encode_event(torn, true, bytes);
  write_at(first, end, bytes.substr(0, bytes.size() / 2));
  std::filesystem::remove(dir_.path() + "/index.chk");
  std::filesystem::copy_file(first, segment_path(dir_.path(), 2));
  std::filesystem::resize_file(segment_path(dir_.path(), 2), 0);
  std::filesystem::resize_file(segment_path(dir_.path(), 2), kSegmentBytes);

  auto verified = verify_store(dir_.path());
  ASSERT_TRUE(verified.ok());
  EXPECT_TRUE(verified->errors.empty()) << verified->errors.front().to_string();
  EXPECT_EQ(verified->warnings.size(), 1u);

  auto store = open(dir_.path());  // no operator needed
  ASSERT_TRUE(store);
  EXPECT_EQ(versions(*store, "s-1"), (std::vector<std::uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_TRUE(zero_from(first, end)) << "the torn append is cut";
  EXPECT_EQ(must_append(*store, "s-1", events(1)).first_position, 5u);
  store.reset();
  auto again = open(dir_.path());
  ASSERT_TRUE(again);
  EXPECT_EQ(versions(*again, "s-1"), (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5}));
}

TEST_F(RecoveryTest, NoRollWhileAWriteToTheActiveSegmentIsInFlight) {
  // The leader's write is held at the fault seam while a second appender needs a new segment.
  // The second must wait ("roll-wait") rather than create the segment ("fallocate") while the
  // active one is being written: a crash then would leave it torn with a newer one after it.
  std::mutex mutex;
  std::condition_variable changed;
  bool writing = false;
  bool release = false;
  std::vector<std::string> seen;  // operations while the first write was held
  StoreOptions options = this->options();
  options.inject_fault = [&](std::string_view operation) {
    std::unique_lock lock(mutex);
    if (writing) seen.emplace_back(operation);
    changed.notify_all();
    if (operation == "write" && !writing && !release) {
      writing = true;
      changed.wait(lock, [&] { return release; });
      writing = false;
    }
    return 0;
  };
  auto opened = EventStore::open(dir_.path(), options, clock_);
  ASSERT_TRUE(opened.ok());
  auto store = std::move(*opened);
  std::thread first([&] { must_append(*store, "a-1", events(1, 100)); });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return writing; });
  }
  std::thread second([&] { must_append(*store, "b-1", events(1, kSegmentBytes - 200)); });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return !seen.empty(); });
    release = true;
    changed.notify_all();
  }
  first.join();
  second.join();
  EXPECT_EQ(seen.front(), "roll-wait");
  EXPECT_EQ(versions(*store, "b-1"), (std::vector<std::uint64_t>{0}));
  EXPECT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 2)));
}

// ---- the log accounts for every position: a hole is damage ----

TEST_F(RecoveryTest, MissingMiddleSegmentIsRefusedWithOrWithoutACheckpoint) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 40; ++i) must_append(*store, "s-1", events(1, 700));
  }
  ASSERT_TRUE(std::filesystem::exists(segment_path(dir_.path(), 3)));
  std::filesystem::remove(segment_path(dir_.path(), 2));
  for (bool with_checkpoint : {true, false}) {
    if (!with_checkpoint) std::filesystem::remove(dir_.path() + "/index.chk");
    auto opened = try_open(dir_.path());
    ASSERT_FALSE(opened.ok()) << "served with a hole, checkpoint " << with_checkpoint;
    EXPECT_TRUE(opened.error().is(errc::corrupt));
    EXPECT_NE(opened.error().message().find("00000002.seg"), std::string::npos)
        << opened.error().message();
    auto verified = verify_store(dir_.path());
    ASSERT_TRUE(verified.ok());
    EXPECT_FALSE(verified->errors.empty()) << "verify is clean with a hole";
  }
  auto repaired = repair_truncate_at_first_error(dir_.path());
  ASSERT_TRUE(repaired.ok()) << repaired.error().to_string();
  EXPECT_TRUE(repaired->after.errors.empty());
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  auto read = store->read_stream("s-1", 0, 1000);
  ASSERT_TRUE(read.ok());
  ASSERT_FALSE(read->empty());
  // An exact prefix: versions 0..n-1, nothing after the hole.
  for (std::size_t i = 0; i < read->size(); ++i) EXPECT_EQ((*read)[i].version, i);
  EXPECT_EQ(store->next_position(), read->size());
}

TEST_F(RecoveryTest, SegmentCutAtARecordBoundaryWithLaterSegmentsIsRefused) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 40; ++i) must_append(*store, "s-1", events(1, 700));
  }
  std::filesystem::remove(dir_.path() + "/index.chk");
  const std::string second = segment_path(dir_.path(), 2);
  auto records = records_of(second);
  ASSERT_GE(records.size(), 4u);
  std::filesystem::resize_file(second, records[records.size() - 3].offset);  // two appends gone
  auto opened = try_open(dir_.path());
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(opened.error().is(errc::corrupt));
  EXPECT_NE(opened.error().message().find("are missing"), std::string::npos)
      << opened.error().message();
}

TEST_F(RecoveryTest, CheckpointWithAValidCrcButWrongLocationsNeverServesAnotherEvent) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "a-1", events(2));
    must_append(*store, "b-1", events(2));
  }
  // Swap positions 0 and 2 in the checkpoint and fix its CRC: locations the log does not back.
  const std::string path = dir_.path() + "/index.chk";
  std::string bytes = read_file(path);
  const std::size_t locations = 8 + 8 + 8 + 8;
  std::string zero = bytes.substr(locations, 8);
  std::string two = bytes.substr(locations + 16, 8);
  bytes.replace(locations, 8, two);
  bytes.replace(locations + 16, 8, zero);
  std::uint32_t crc = crc32c(bytes.data(), bytes.size() - 4);
  std::memcpy(bytes.data() + bytes.size() - 4, &crc, 4);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;

  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  auto all = store->read_all(0, 1);
  ASSERT_FALSE(all.ok()) << "served " << (*all)[0].stream << "@" << (*all)[0].version;
  EXPECT_TRUE(all.error().is(errc::corrupt));
  EXPECT_NE(all.error().message().find("00000001.seg offset"), std::string::npos);
  auto stream = store->read_stream("a-1", 0, 10);
  ASSERT_FALSE(stream.ok());
  EXPECT_TRUE(stream.error().is(errc::corrupt));
}

// ---- files that are not the store's ----

TEST_F(RecoveryTest, ASegmentThatDoesNotStartWithARecordIsRefusedAndLeftAlone) {
  std::filesystem::create_directories(dir_.path());
  std::string garbage(4096, '\0');
  Random random(11);
  for (char& c : garbage) c = static_cast<char>(random.uniform(256));
  std::ofstream(segment_path(dir_.path(), 1), std::ios::binary) << garbage;
  auto opened = try_open(dir_.path());
  ASSERT_FALSE(opened.ok()) << "took a random file for a torn tail";
  EXPECT_TRUE(opened.error().is(errc::corrupt));
  EXPECT_EQ(read_file(segment_path(dir_.path(), 1)), garbage);
  auto verified = verify_store(dir_.path());
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->errors.empty());
}

TEST_F(RecoveryTest, FifosNamedLikeStoreFilesAreRefusedWithoutBlocking) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "s-1", events(2));
  }
  std::filesystem::remove(dir_.path() + "/index.chk");
  ASSERT_EQ(::mkfifo((dir_.path() + "/index.chk").c_str(), 0644), 0);
  {
    auto store = open(dir_.path());  // a FIFO for a checkpoint: ignored, rebuilt from the log
    ASSERT_TRUE(store);
    EXPECT_EQ(versions(*store, "s-1"), (std::vector<std::uint64_t>{0, 1}));
  }
  ASSERT_EQ(::mkfifo(segment_path(dir_.path(), 2).c_str(), 0644), 0);
  auto opened = try_open(dir_.path());
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message().find("not a regular file"), std::string::npos);
  auto verified = verify_store(dir_.path());
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->errors.empty());
}

TEST_F(RecoveryTest, AHugeSparseSegmentIsScannedWithoutReadingIt) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    must_append(*store, "s-1", events(2));
  }
  const std::string huge = segment_path(dir_.path(), 2);
  std::ofstream(huge).close();
  std::filesystem::resize_file(huge, 100ull << 30);  // 100 GiB, all hole
  auto verified = verify_store(dir_.path());
  ASSERT_TRUE(verified.ok()) << verified.error().to_string();
  EXPECT_TRUE(verified->errors.empty()) << verified->errors.front().to_string();
  EXPECT_EQ(verified->events, 2u);
  std::ostringstream dumped;
  EXPECT_TRUE(dump_store(dir_.path(), dumped, {}).ok());
  auto store = open(dir_.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(versions(*store, "s-1"), (std::vector<std::uint64_t>{0, 1}));
}

// ---- damage to unused space is not damage to records ----

TEST_F(RecoveryTest, FlippedByteInASealedSegmentsZeroTailLosesNothing) {
  {
    auto store = open(dir_.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 30; ++i) must_append(*store, "s-1", events(1, 700));
  }
  const std::string first = segment_path(dir_.path(), 1);
  const std::uint64_t end = records_end(first);
  ASSERT_LT(end + 100, kSegmentBytes);
  for (std::uint64_t at : {end + 50, end}) {  // inside the padding, then where a header would be
    flip_byte(first, at);
    auto verified = verify_store(dir_.path());
    ASSERT_TRUE(verified.ok());
    EXPECT_TRUE(verified->errors.empty()) << verified->errors.front().to_string();
    EXPECT_FALSE(verified->warnings.empty());
    auto repaired = repair_truncate_at_first_error(dir_.path());
    ASSERT_TRUE(repaired.ok());
    EXPECT_FALSE(repaired->changed) << "quarantined intact events";
    for (bool with_checkpoint : {true, false}) {
      if (!with_checkpoint) std::filesystem::remove(dir_.path() + "/index.chk");
      auto store = open(dir_.path());
      ASSERT_TRUE(store);
      EXPECT_EQ(versions(*store, "s-1").size(), 30u);
    }
  }
}

}  // namespace
}  // namespace keel::eventlog

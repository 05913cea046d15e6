// Feeds arbitrary bytes to the event log's readers, two ways:
//
//  1. as a run of framed records: read_frame(), then decode_event() / decode_metadata() /
//     decode_removed(); a record that decodes must encode back to the same bytes;
//  2. as segment 00000001.seg (zero-padded to 64 KiB, cut there if longer) of a store directory
//     that EventStore::open() must either refuse with an error or open. An opened store must
//     read back in order (positions strictly increasing, the same backward), take an append at
//     its next position, close, and open again to the same events.
//
// Never a crash, a hang or a leak (memory, or file descriptors: counted around every run). One
// directory per process, on /dev/shm when there is one so that fsync costs nothing; emptied
// between runs and removed at exit.
#include <dirent.h>
#include <stdlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/log.h"
#include "keel/core/random.h"
#include "keel/core/uuid.h"
#include "keel/eventlog/event_store.h"
#include "keel/eventlog/record.h"

namespace {

using namespace keel::eventlog;

constexpr std::size_t kSegmentBytes = 64 * 1024;

void check(bool condition) {
  if (!condition) __builtin_trap();
}

int open_descriptors() {
  int count = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++count;
    ::closedir(dir);
  }
  return count;
}

const std::string& directory() {
  // Never destroyed: the exit handler that removes the directory runs after static destructors.
  static const std::string& path = *[] {
    std::string base = std::filesystem::is_directory("/dev/shm")
                           ? std::string("/dev/shm")
                           : std::filesystem::temp_directory_path().string();
    auto* pattern = new std::string(base + "/keel-eventlog-fuzz-XXXXXX");
    if (::mkdtemp(pattern->data()) == nullptr) std::abort();
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(directory(), ignored);
    });
    (void)keel::log::set_level("off");  // torn tails are the normal case here
    return pattern;
  }();
  return path;
}

void empty_directory() {
  for (const auto& entry : std::filesystem::directory_iterator(directory()))
    std::filesystem::remove_all(entry.path());
}

void read_records(std::string_view bytes) {
  std::size_t offset = 0;
  while (offset < bytes.size()) {
    RecordView frame = read_frame(bytes.substr(offset));
    if (frame.status != RecordView::Status::kOk) return;
    check(frame.size >= kRecordHeaderBytes && frame.size <= bytes.size() - offset);
    const std::string_view original = bytes.substr(offset, frame.size);
    // Only frames whose flags and reserved bytes the encoder would write can round-trip.
    const bool canonical =
        (frame.flags & ~kLastInAppend) == 0 && frame.payload[2] == 0 && frame.payload[3] == 0;
    const bool last = (frame.flags & kLastInAppend) != 0;
    std::string again;
    if (frame.kind == RecordKind::kEvent) {
      auto event = decode_event(frame);
      if (event) {
        check(event_position(frame) == event->position);
        encode_event(*event, last, again);
        check(!canonical || again == original);
      }
    } else if (frame.kind == RecordKind::kMetadata) {
      auto metadata = decode_metadata(frame);
      if (metadata) {
        encode_metadata(metadata->stream, metadata->json, last, again);
        check(!canonical || again == original);
      }
    } else {
      auto removed = decode_removed(frame);
      if (removed) {
        check(last && removed->count > 0);
        encode_removed(*removed, again);
        check(!canonical || again == original);
      }
    }
    // The torn-tail scan must agree with itself on any bytes and stay linear.
    (void)intact_record_after(bytes, offset + 1);
    offset += frame.size;
  }
}

struct Seen {
  std::vector<std::uint64_t> positions;
  std::vector<keel::Uuid> ids;
  bool operator==(const Seen&) const = default;
};

Seen read_everything(EventStore& store) {
  Seen seen;
  const std::uint64_t next = store.next_position();
  auto forward = store.read_all(0, SIZE_MAX);
  check(forward.ok());  // open indexed only records it could decode
  std::map<std::string, std::uint64_t> streams;
  for (const auto& event : *forward) {
    check(seen.positions.empty() || event.position > seen.positions.back());
    check(event.position < next);
    seen.positions.push_back(event.position);
    seen.ids.push_back(event.id);
    streams.emplace(event.stream, 0);
  }
  auto backward = store.read_all(UINT64_MAX, SIZE_MAX, Direction::kBackward);
  check(backward.ok() && backward->size() == forward->size());
  for (std::size_t i = 0; i < backward->size(); ++i)
    check((*backward)[i].position == (*forward)[forward->size() - 1 - i].position);
  for (const auto& [name, unused] : streams) {
    auto events = store.read_stream(name, 0, SIZE_MAX);
    if (!events) continue;  // hard-deleted
    for (std::size_t i = 1; i < events->size(); ++i)
      check((*events)[i].version > (*events)[i - 1].version);
    (void)store.stream_version(name);
    (void)store.read_category(std::string(category_of(name)), 0, SIZE_MAX);
  }
  return seen;
}

void open_as_segment(std::string_view bytes) {
  empty_directory();
  {
    std::string segment(bytes.substr(0, kSegmentBytes));
    segment.resize(kSegmentBytes, '\0');
    std::ofstream(directory() + "/00000001.seg", std::ios::binary) << segment;
  }
  keel::ManualClock clock;
  StoreOptions options;
  options.segment_bytes = kSegmentBytes;
  options.durability = Durability::kNone;
  auto opened = EventStore::open(directory(), options, clock);
  if (!opened) return;
  EventStore& store = **opened;
  (void)read_everything(store);

  keel::Random random(bytes.size());
  const std::uint64_t next = store.next_position();
  auto appended = store.append("fuzz-1", ExpectedVersion::any(),
                               {{keel::Uuid::random_v4(random), "Fuzzed", "{}", ""}});
  if (appended) {
    check(!appended->duplicate && appended->first_position == next);
    check(store.next_position() == next + 1);
  }
  const Seen before = read_everything(store);
  if (!store.close()) return;
  opened->reset();

  // What one open recovered, the next one finds as it was left.
  auto reopened = EventStore::open(directory(), options, clock);
  check(reopened.ok());
  check(read_everything(**reopened) == before);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  directory();
  const int descriptors = open_descriptors();
  read_records(bytes);
  open_as_segment(bytes);
  empty_directory();
  check(open_descriptors() == descriptors);
  return 0;
}

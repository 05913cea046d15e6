#include "keel/eventlog/event_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "keel/core/hash.h"
#include "keel/core/log.h"
#include "keel/eventlog/crc32c.h"
#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {

Segment::~Segment() {
  if (map != nullptr) ::munmap(const_cast<char*>(map), capacity);
  if (fd >= 0) ::close(fd);
}

namespace {

Error invalid(const std::string& what) { return Error(errc::invalid_argument, what); }

// The smallest event record there is: one-byte stream name and type, no data.
std::uint64_t min_event_record_bytes() {
  static const std::uint64_t bytes = [] {
    RecordedEvent event;
    event.stream = "s";
    event.type = "t";
    std::string record;
    encode_event(event, true, record);
    return record.size();
  }();
  return bytes;
}

// Offset just past the last non-zero byte of `segment` at or after `from`; skips the extents the
// file system knows are unwritten.
std::uint64_t segment_written_end(const Segment& segment, std::uint64_t from) {
  std::uint64_t data_end = data_extent_end(segment.fd, segment.capacity);
  if (data_end <= from) return from;
  return written_end(std::string_view(segment.map, data_end), from);
}

std::string position_gap_message(std::uint64_t found, std::uint64_t expected) {
  if (found < expected) {
    return "event position " + std::to_string(found) + " repeats or goes back (expected " +
           std::to_string(expected) + ")";
  }
  return "position " + std::to_string(found) + " where " + std::to_string(expected) +
         " was expected: positions " + std::to_string(expected) + " to " +
         std::to_string(found - 1) + " are missing (a segment, or part of one, is gone)";
}

}  // namespace

// Computes a stream's new metadata from its writer state, under the writer lock, so that
// concurrent metadata changes and deletes build on each other instead of on a stale read.
using MetadataChange = std::function<std::optional<StoredMetadata>(const StreamWriterState&)>;

class EventStore::Impl {
 public:
  Impl(std::string directory, StoreOptions options, Clock& clock)
      : directory_(std::move(directory)), options_(std::move(options)), clock_(clock) {}
  ~Impl() {
    (void)close();
    if (lock_fd_ >= 0) ::close(lock_fd_);  // open() failed: close() had nothing to do
  }

  Status open();
  Status close();
  Result<AppendResult> append(std::string_view stream, ExpectedVersion expected,
                              std::span<const EventData> events,
                              const MetadataChange& change_metadata);
  Result<std::vector<RecordedEvent>> read_positions(const std::vector<std::uint64_t>* positions,
                                                    std::uint64_t from, std::size_t max_count);
  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream, std::uint64_t from,
                                                 std::size_t max_count, Direction direction);
  Result<std::vector<RecordedEvent>> read_all(std::uint64_t position, std::size_t max_count,
                                              Direction direction);
  Result<std::vector<RecordedEvent>> read_indexed(bool category, std::string_view name,
                                                  std::uint64_t position, std::size_t max_count);
  std::optional<std::uint64_t> stream_version(std::string_view stream);
  StoredMetadata stored_metadata(std::string_view stream);
  Status delete_stream(std::string_view stream, ExpectedVersion expected, bool hard);
  Status set_metadata(std::string_view stream, const StreamMetadata& metadata);
  Status save_snapshot(std::string_view stream, const Snapshot& snapshot);
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream);
  Result<ScavengeReport> scavenge();
  Status checkpoint_now();
  std::uint64_t next_position() const;
  bool wait_for(std::uint64_t position, Duration timeout);
  std::uint64_t add_commit_listener(std::function<void(std::uint64_t)> listener);
  const StoreOptions& options() const { return options_; }
  void remove_commit_listener(std::uint64_t id);

 private:
  void notify_listeners(std::uint64_t committed);
  int fault(std::string_view operation) const {
    return options_.inject_fault ? options_.inject_fault(operation) : 0;
  }
  std::string path(const std::string& name) const { return directory_ + "/" + name; }
  Result<std::shared_ptr<Segment>> map_segment(std::uint64_t number, bool create);
  Status recover();
  Status check_checkpoint_segments() const;
  Status apply_recovered(const std::vector<RecordedEvent>& events,
                         const std::vector<MetadataRecord>& metadata,
                         const std::vector<std::uint64_t>& locations);
  Status roll_segment_locked();
  Status check_expected(const std::string& stream, const StreamWriterState& state,
                        ExpectedVersion expected) const;
  std::optional<Result<AppendResult>> find_duplicate(std::string_view stream,
                                                     std::span<const EventData> events);
  Result<RecordedEvent> read_at(std::uint64_t position) const;  // index lock held
  bool visible(const StreamIndex& stream, const RecordedEvent& event) const;
  // For reads across streams ($all, category, type): the event's stream metadata hides it.
  bool hidden_by_metadata(const RecordedEvent& event) const;
  Status flush_as_leader(std::unique_lock<std::mutex>& lock);
  void publish(std::vector<PendingItem>& items);
  void remember_id(const Uuid& id, std::uint64_t position);
  std::vector<std::pair<Uuid, std::uint64_t>> ids_snapshot() const;
  Status write_checkpoint_locked();
  // fdatasync every segment written since its last sync (kInterval, kNone, before checkpoints).
  Status sync_dirty_segments();
  void syncer_loop();

  const std::string directory_;
  const StoreOptions options_;
  Clock& clock_;
  int lock_fd_ = -1;
  bool open_ = false;

  // Readers' view; guarded by index_mutex_.
  mutable std::shared_mutex index_mutex_;
  Index index_;
  std::map<std::uint64_t, std::shared_ptr<Segment>> segments_;
  std::uint64_t committed_position_ = 0;  // positions below this are visible

  // Called after each commit with the new committed position; guarded by listeners_mutex_.
  std::mutex listeners_mutex_;
  std::map<std::uint64_t, std::function<void(std::uint64_t)>> listeners_;
  std::uint64_t next_listener_ = 1;

  // Writers' view; guarded by mutex_.
  mutable std::mutex mutex_;
  std::condition_variable flushed_;
  std::unordered_map<std::string, StreamWriterState> writers_;
  std::unordered_map<Uuid, std::uint64_t, UuidHash> ids_;  // event id -> position
  std::deque<Uuid> id_order_;
  std::uint64_t next_position_ = 0;
  std::shared_ptr<Segment> active_;
  std::uint64_t write_offset_ = 0;  // in active_
  std::vector<PendingChunk> pending_chunks_;
  std::vector<PendingItem> pending_items_;
  std::uint64_t encoded_ticket_ = 0;
  std::uint64_t flushed_ticket_ = 0;
  bool flushing_ = false;
  std::optional<Error> failed_;
  std::uint64_t events_since_checkpoint_ = 0;

  std::condition_variable tail_;  // with mutex_: committed position moved

  std::mutex scavenge_mutex_;
  std::atomic<std::uint32_t> appenders_{0};  // threads inside append()
  Duration last_sync_ = Duration::zero();    // how long the last write and sync took

  std::thread syncer_;
  bool stopping_ = false;
  bool sync_due_ = false;
  std::condition_variable syncer_wake_;
};

// ---- opening and recovery ----

Result<std::shared_ptr<Segment>> EventStore::Impl::map_segment(std::uint64_t number, bool create) {
  auto segment = std::make_shared<Segment>();
  segment->number = number;
  segment->path = path(segment_file_name(number));
  // O_NONBLOCK: a FIFO named like a segment must not block open(); it is refused below.
  segment->fd = ::open(segment->path.c_str(),
                       O_RDWR | O_CLOEXEC | O_NONBLOCK | (create ? O_CREAT | O_EXCL : 0), 0644);
  if (segment->fd < 0) return io_error("cannot open segment", segment->path, errno);
  if (create) {
    int error_number = fault("fallocate");
    // posix_fallocate returns its error; it does not set errno.
    if (error_number == 0)
      error_number = ::posix_fallocate(segment->fd, 0, static_cast<off_t>(options_.segment_bytes));
    if (error_number == 0) {
      if (auto synced = sync_directory(directory_); !synced) return synced.error();
    } else {
      ::unlink(segment->path.c_str());
      return io_error("cannot allocate segment", segment->path, error_number);
    }
  }
  struct stat info;
  if (::fstat(segment->fd, &info) != 0) return io_error("cannot stat", segment->path, errno);
  if (!S_ISREG(info.st_mode)) {
    return Error(errc::corrupt, segment->path +
                                    " is not a regular file; the store will not open (move it "
                                    "out of the directory)");
  }
  segment->capacity = static_cast<std::uint64_t>(info.st_size);
  if (segment->capacity > 0) {
    void* map = ::mmap(nullptr, segment->capacity, PROT_READ, MAP_SHARED, segment->fd, 0);
    if (map == MAP_FAILED) return io_error("cannot map", segment->path, errno);
    segment->map = static_cast<const char*>(map);
  }
  return segment;
}

Status EventStore::Impl::open() {
  if (::mkdir(directory_.c_str(), 0755) != 0 && errno != EEXIST) {
    return io_error("cannot create directory", directory_, errno);
  }
  ::mkdir(path("snapshots").c_str(), 0755);
  lock_fd_ = ::open(path("LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return io_error("cannot open", path("LOCK"), errno);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Error(errc::io_error, directory_ + " is open in another process (LOCK is held)");
  }
  if (auto recovered = recover(); !recovered) return recovered;
  open_ = true;
  if (options_.durability == Durability::kInterval)
    syncer_ = std::thread([this] { syncer_loop(); });
  return {};
}

Status EventStore::Impl::recover() {
  // Segments present, in order.
  std::vector<std::uint64_t> numbers;
  if (DIR* dir = ::opendir(directory_.c_str())) {
    while (dirent* entry = ::readdir(dir)) {
      std::string name = entry->d_name;
      if (name.size() == 12 && name.ends_with(".seg") &&
          std::all_of(name.begin(), name.begin() + 8, [](char c) { return c >= '0' && c <= '9'; }))
        numbers.push_back(std::stoull(name.substr(0, 8)));
    }
    ::closedir(dir);
  }
  std::sort(numbers.begin(), numbers.end());
  for (std::size_t i = 0; i < numbers.size(); ++i) {
    // Segments run 1, 2, ... with none missing: scavenging rewrites a segment, never deletes it.
    if (numbers[i] != i + 1) {
      return Error(errc::corrupt, path(segment_file_name(i + 1)) +
                                      " is missing (segments are numbered from 1 with none "
                                      "missing); the store will not open (see `keel eventlog "
                                      "verify`)");
    }
    auto segment = map_segment(numbers[i], false);
    if (!segment) return segment.error();
    std::string_view start = (*segment)->bytes_from(0).substr(0, kRecordHeaderBytes + 4);
    if (std::any_of(start.begin(), start.end(), [](char c) { return c != 0; }) &&
        !plausible_header((*segment)->bytes_from(0))) {
      return Error(errc::corrupt, (*segment)->path +
                                      " does not start with a record header or zeros: it is "
                                      "not a segment of this store; the store will not open");
    }
    segments_[numbers[i]] = *segment;
  }

  // The index: from its checkpoint when there is a good one and no scavenge was cut short.
  bool scavenge_interrupted = ::access(path("scavenge.pending").c_str(), F_OK) == 0;
  auto checkpoint = read_checkpoint(path("index.chk"));
  if (!checkpoint) {
    log::get("eventlog")
        ->warn("{}; rebuilding the index from the log", checkpoint.error().message());
  } else if (checkpoint->has_value() && !scavenge_interrupted) {
    index_ = std::move((*checkpoint)->first);
    for (const auto& [name, stream] : index_.streams) {
      const StoredMetadata& m = stream.metadata;
      index_.any_metadata |= stream.has_rules() || m.tombstone || m.soft_deleted;
    }
    ids_.reserve((*checkpoint)->second.size());
    for (const auto& [id, position] : (*checkpoint)->second) remember_id(id, position);
  }
  if (scavenge_interrupted) ::unlink(path("scavenge.pending").c_str());
  if (!segments_.empty() && !segments_.contains(index_.replay_segment)) {
    // The checkpoint points into a segment that is gone: start over from the log.
    index_ = Index{};
    ids_.clear();
    id_order_.clear();
  }
  if (index_.streams.empty() && index_.locations.empty() && !segments_.empty()) {
    index_.replay_segment = segments_.begin()->first;
    index_.replay_offset = 0;
  }
  if (auto checked = check_checkpoint_segments(); !checked) return checked;

  // Replay the log after the checkpoint, one complete append at a time.
  std::vector<RecordedEvent> group_events;
  std::vector<MetadataRecord> group_metadata;
  std::vector<std::uint64_t> group_locations;
  RemovedRange group_removed;  // count 0: none in this append
  // Positions are gap-free: each event, or removed range, starts exactly where the log so far
  // ends. A hole means a segment, or part of one, is gone.
  std::uint64_t expected_position = index_.locations.size();
  // A removed range's count is not trusted to size the index: segments 1..n never held more
  // events than n segments' worth.
  std::uint64_t largest_segment = options_.segment_bytes;
  for (const auto& [number, segment] : segments_)
    largest_segment = std::max(largest_segment, segment->capacity);
  const std::uint64_t events_per_segment = largest_segment / min_event_record_bytes() + 1;
  // Segments after the last one holding anything are empty: a roll's new segment, created
  // before the crash let anything reach it. The torn-tail rule applies to the last one with data.
  std::uint64_t last_with_data = segments_.empty() ? 0 : segments_.begin()->first;
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    if (segment_written_end(*it->second, 0) > 0) {
      last_with_data = it->first;
      break;
    }
  }
  for (auto it = segments_.lower_bound(index_.replay_segment); it != segments_.end(); ++it) {
    Segment& segment = *it->second;
    if (segment.number > last_with_data) break;
    const bool last_segment = segment.number == last_with_data;
    // Records may end in zero bytes: what is scanned for them runs to the last data extent.
    const std::string_view bytes(segment.map, data_extent_end(segment.fd, segment.capacity));
    std::uint64_t offset = it->first == index_.replay_segment ? index_.replay_offset : 0;
    std::uint64_t good_end = offset;  // end of the last complete append
    auto damage = [&](std::uint64_t at, const std::string& what) {
      return Error(errc::corrupt, segment.path + " offset " + std::to_string(at) + ": " + what +
                                      "; the store will not open (see `keel eventlog verify`)");
    };
    while (offset < segment.capacity) {
      RecordView frame = read_frame(segment.bytes_from(offset));
      if (frame.status == RecordView::Status::kEnd) break;
      if (frame.status != RecordView::Status::kOk) {
        const char* why = frame.status == RecordView::Status::kBadCrc      ? "fails its CRC"
                          : frame.status == RecordView::Status::kTruncated ? "is cut short"
                                                                           : "is malformed";
        // (Not "zeros after its claimed end": a damaged length would hide what follows.)
        const bool intact_after = intact_record_after(bytes, offset + 1);
        // A torn tail: the last segment with data, and no intact record written after it.
        if (last_segment && !intact_after) break;
        // In a sealed segment, bytes after its last append that cannot be a record and hide
        // none are damage to the zero padding, not to records; the positions check below
        // still notices if anything is missing.
        if (!last_segment && !intact_after && offset == good_end &&
            !plausible_header(segment.bytes_from(offset))) {
          log::get("eventlog")
              ->warn(
                  "{} offset {}: non-zero bytes in the padding after the last record; "
                  "no record is there",
                  segment.path, offset);
          break;
        }
        return damage(offset, std::string("record ") + why +
                                  (intact_after ? " and an intact record follows it"
                                                : " and later segments hold data") +
                                  ", so this is not a torn write");
      }
      if (frame.kind == RecordKind::kEvent) {
        auto event = decode_event(frame);
        if (!event) return damage(offset, event.error().message());
        if (event->version > event->position) {
          return damage(offset, "event version " + std::to_string(event->version) +
                                    " is larger than its position " +
                                    std::to_string(event->position));
        }
        group_events.push_back(std::move(*event));
        group_locations.push_back(pack_location(segment.number, offset));
      } else if (frame.kind == RecordKind::kMetadata) {
        auto metadata = decode_metadata(frame);
        if (!metadata) return damage(offset, metadata.error().message());
        group_metadata.push_back(std::move(*metadata));
      } else {
        auto removed = decode_removed(frame);
        if (!removed) return damage(offset, removed.error().message());
        if (!group_events.empty() || !group_metadata.empty())
          return damage(offset, "a removed range inside another append");
        group_removed = *removed;  // decode_removed() refuses a count of 0
      }
      const std::uint64_t record_offset = offset;
      offset += frame.size;
      if (frame.flags & kLastInAppend) {
        for (const auto& event : group_events) {
          if (event.position != expected_position) {
            return damage(record_offset, position_gap_message(event.position, expected_position));
          }
          ++expected_position;
        }
        if (group_removed.count > 0) {
          if (group_removed.first_position != expected_position) {
            return damage(record_offset,
                          position_gap_message(group_removed.first_position, expected_position));
          }
          expected_position += group_removed.count;
          if (expected_position / events_per_segment >= segment.number)
            return damage(record_offset, "a removed range larger than the segments could hold");
          index_.locations.resize(expected_position, kRemoved);
          group_removed = {};
        }
        if (auto applied = apply_recovered(group_events, group_metadata, group_locations);
            !applied) {
          return applied;
        }
        group_events.clear();
        group_metadata.clear();
        group_locations.clear();
        good_end = offset;
      }
    }
    if (!last_segment && (!group_events.empty() || !group_metadata.empty())) {
      // Appends never span segments, so this one can only have been cut short — and later
      // segments hold later appends: not a torn tail.
      return damage(good_end,
                    "the append there lacks its last record, and later segments hold data");
    }
    segment.end = good_end;
    if (last_segment) {
      // Cut a torn tail: zero everything after the last complete append.
      std::uint64_t dirty_end = segment_written_end(segment, good_end);
      if (dirty_end > good_end) {
        log::get("eventlog")
            ->warn("{}: cutting a torn tail of {} bytes at offset {}", segment.path,
                   dirty_end - good_end, good_end);
        std::string zeros(dirty_end - good_end, '\0');
        if (::pwrite(segment.fd, zeros.data(), zeros.size(), static_cast<off_t>(good_end)) !=
                static_cast<ssize_t>(zeros.size()) ||
            ::fdatasync(segment.fd) != 0) {
          return io_error("cannot cut the torn tail of", segment.path, errno);
        }
      }
      group_events.clear();
      group_metadata.clear();
      group_removed = {};
    }
  }

  next_position_ = index_.locations.size();
  committed_position_ = next_position_;
  for (const auto& [name, stream] : index_.streams) {
    StreamWriterState& writer = writers_[name];
    writer.next_version = stream.positions.size();
    writer.committed_version = writer.next_version;
    writer.metadata = stream.metadata;
    writer.soft_deleted = stream.metadata.soft_deleted;
    writer.tombstone = stream.metadata.tombstone;
  }
  if (segments_.empty()) {
    auto segment = map_segment(1, true);
    if (!segment) return segment.error();
    segments_[1] = *segment;
  }
  active_ = segments_.rbegin()->second;
  write_offset_ = active_->end;
  index_.replay_segment = active_->number;
  index_.replay_offset = write_offset_;
  return {};
}

// The checkpoint's segments are not read at open. Check at least that each still holds the
// last record the index has in it, so that a segment cut short or gone is reported here rather
// than as events that cannot be read.
Status EventStore::Impl::check_checkpoint_segments() const {
  std::map<std::uint64_t, std::uint64_t> last_offset;  // segment -> its last indexed record
  std::uint64_t current_segment = 0;
  std::uint64_t* current_offset = nullptr;  // positions run through the segments in order
  for (std::uint64_t location : index_.locations) {
    if (location == kRemoved) continue;
    if (current_offset == nullptr || location_segment(location) != current_segment) {
      current_segment = location_segment(location);
      current_offset = &last_offset[current_segment];
    }
    *current_offset = std::max(*current_offset, location_offset(location));
  }
  for (const auto& [number, offset] : last_offset) {
    auto it = segments_.find(number);
    if (it == segments_.end()) {
      return Error(errc::corrupt, path(segment_file_name(number)) +
                                      " is missing, but the index checkpoint has events in it");
    }
    const Segment& segment = *it->second;
    if (offset >= segment.capacity ||
        read_frame(segment.bytes_from(offset)).status != RecordView::Status::kOk) {
      return Error(errc::corrupt,
                   segment.path + " offset " + std::to_string(offset) +
                       ": the index checkpoint has an event here, but the file " +
                       (offset >= segment.capacity
                            ? "ends at " + std::to_string(segment.capacity) + " (cut short?)"
                            : "has no good record there"));
    }
  }
  auto replay = segments_.find(index_.replay_segment);
  if (replay != segments_.end() && index_.replay_offset > replay->second->capacity) {
    return Error(errc::corrupt, replay->second->path + " ends at " +
                                    std::to_string(replay->second->capacity) +
                                    ", before the end of the records the index checkpoint has (" +
                                    std::to_string(index_.replay_offset) + "; cut short?)");
  }
  return {};
}

Status EventStore::Impl::apply_recovered(const std::vector<RecordedEvent>& events,
                                         const std::vector<MetadataRecord>& metadata,
                                         const std::vector<std::uint64_t>& locations) {
  for (std::size_t i = 0; i < events.size(); ++i) {
    const RecordedEvent& event = events[i];
    index_.add_event(event.stream, event.version, event.position, locations[i], event.type);
    remember_id(event.id, event.position);
  }
  for (const auto& record : metadata) {
    auto stored = StoredMetadata::from_json(record.json);
    if (!stored)
      return Error(errc::corrupt,
                   "metadata of stream '" + record.stream + "': " + stored.error().message());
    index_.streams[record.stream].metadata = *stored;
    index_.any_metadata = true;
  }
  // A recreated stream (appended after a soft delete) is no longer deleted.
  for (const auto& event : events) index_.streams[event.stream].metadata.soft_deleted = false;
  return {};
}

Status EventStore::Impl::close() {
  std::lock_guard no_scavenge(scavenge_mutex_);  // a running scavenge finishes first
  {
    std::unique_lock lock(mutex_);
    if (!open_) return {};
    flushed_.wait(lock, [&] { return !flushing_; });
    open_ = false;
    stopping_ = true;
    syncer_wake_.notify_all();
  }
  if (syncer_.joinable()) syncer_.join();
  Status result;
  {
    std::lock_guard lock(mutex_);
    if (!failed_) {
      result = write_checkpoint_locked();
    }
    flushed_.notify_all();
    tail_.notify_all();
  }
  {
    std::unique_lock index_lock(index_mutex_);
    segments_.clear();
  }
  active_.reset();
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = -1;
  return result;
}

// ---- appending ----

Status EventStore::Impl::check_expected(const std::string& stream, const StreamWriterState& state,
                                        ExpectedVersion expected) const {
  bool ok = true;
  switch (expected.kind()) {
    case ExpectedVersion::Kind::kAny:
      break;
    case ExpectedVersion::Kind::kNoStream:
      ok = !state.exists();
      break;
    case ExpectedVersion::Kind::kStreamExists:
      ok = state.exists();
      break;
    case ExpectedVersion::Kind::kExact:
      ok = state.exists() && state.next_version == expected.version() + 1;
      break;
  }
  if (ok) return {};
  std::int64_t actual = state.exists() ? static_cast<std::int64_t>(state.next_version) - 1 : -1;
  std::string now = actual < 0 ? "does not exist" : "is at version " + std::to_string(actual);
  return Error(errc::wrong_expected_version,
               "stream '" + stream + "': expected " + expected.to_string() + ", but it " + now)
      .with_detail(actual);
}

void EventStore::Impl::remember_id(const Uuid& id, std::uint64_t position) {
  if (options_.idempotency_window == 0) return;
  if (ids_.insert_or_assign(id, position).second) id_order_.push_back(id);
  while (id_order_.size() > options_.idempotency_window) {
    ids_.erase(id_order_.front());
    id_order_.pop_front();
  }
}

std::vector<std::pair<Uuid, std::uint64_t>> EventStore::Impl::ids_snapshot() const {
  std::vector<std::pair<Uuid, std::uint64_t>> ids;
  ids.reserve(id_order_.size());
  for (const Uuid& id : id_order_) {
    auto it = ids_.find(id);
    // Only durable events: an append not yet acknowledged may be lost in a crash and retried.
    if (it != ids_.end() && it->second < committed_position_) ids.emplace_back(id, it->second);
  }
  return ids;
}

std::optional<Result<AppendResult>> EventStore::Impl::find_duplicate(
    std::string_view stream, std::span<const EventData> events) {
  std::size_t known = 0;
  for (const auto& event : events) known += ids_.contains(event.id) ? 1 : 0;
  if (known == 0) return std::nullopt;
  auto conflict = [&](const std::string& why) -> Result<AppendResult> {
    return Error(errc::duplicate_event_id, "append to '" + std::string(stream) + "': " + why);
  };
  if (known != events.size())
    return conflict("some of these event ids were appended before, some not");
  // Every id is known: it is a retry only if they were appended together, here, unchanged.
  std::uint64_t first = ids_.at(events[0].id);
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (ids_.at(events[i].id) != first + i)
      return conflict("these event ids were appended, but not together");
  }
  if (first + events.size() > committed_position_) {
    return conflict("these event ids are being appended by another caller right now");
  }
  std::shared_lock index_lock(index_mutex_);
  AppendResult result;
  result.duplicate = true;
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto stored = read_at(first + i);
    if (!stored)
      return conflict("event " + events[i].id.to_string() +
                      " cannot be read back: " + stored.error().message());
    if (stored->stream != stream || stored->type != events[i].type ||
        stored->data != events[i].data || stored->metadata != events[i].metadata) {
      return conflict("event id " + events[i].id.to_string() + " was used for a different event");
    }
    if (i == 0) {
      result.first_version = stored->version;
      result.first_position = stored->position;
    }
    result.last_version = stored->version;
    result.last_position = stored->position;
  }
  return result;
}

Status EventStore::Impl::roll_segment_locked() {
  std::uint64_t number = active_->number + 1;
  auto segment = map_segment(number, true);
  if (!segment) return segment.error();
  {
    std::unique_lock index_lock(index_mutex_);
    active_->end = write_offset_;  // sealed: its records end here
    segments_[number] = *segment;
  }
  active_ = *segment;
  write_offset_ = 0;
  return {};
}

Result<AppendResult> EventStore::Impl::append(std::string_view stream_name,
                                              ExpectedVersion expected,
                                              std::span<const EventData> events,
                                              const MetadataChange& change_metadata) {
  if (stream_name.empty() || stream_name.size() > 0xffff) {
    return invalid("stream name must be 1 to 65535 bytes");
  }
  if (events.size() > options_.max_append_events) {
    return invalid("append of " + std::to_string(events.size()) +
                   " events is over max_append_events (" +
                   std::to_string(options_.max_append_events) + ")");
  }
  for (const auto& event : events) {
    if (event.type.empty() || event.type.size() > 0xffff) {
      return invalid("event " + event.id.to_string() + ": type must be 1 to 65535 bytes");
    }
    std::size_t size = event.type.size() + event.data.size() + event.metadata.size();
    if (size > options_.max_event_bytes) {
      return invalid("event " + event.id.to_string() + " is " + std::to_string(size) +
                     " bytes, over max_event_bytes (" + std::to_string(options_.max_event_bytes) +
                     ")");
    }
  }
  if (events.size() > 1) {
    std::vector<Uuid> ids;
    ids.reserve(events.size());
    for (const auto& event : events) ids.push_back(event.id);
    std::sort(ids.begin(), ids.end());
    if (auto twice = std::adjacent_find(ids.begin(), ids.end()); twice != ids.end()) {
      return Error(errc::duplicate_event_id, "append to '" + std::string(stream_name) +
                                                 "': event id " + twice->to_string() +
                                                 " appears twice in one append");
    }
  }
  const std::string stream(stream_name);

  // Appenders inside append(): a leader waits briefly for the others to join its sync.
  appenders_.fetch_add(1, std::memory_order_relaxed);
  struct Leaving {
    std::atomic<std::uint32_t>& count;
    ~Leaving() { count.fetch_sub(1, std::memory_order_relaxed); }
  } leaving{appenders_};

  std::unique_lock lock(mutex_);
  for (;;) {  // once, or again after waiting for a write in flight before a roll
    if (!open_) return Error(errc::closed, "the store is closed");
    if (failed_) return *failed_;
    if (auto duplicate = find_duplicate(stream, events)) return std::move(*duplicate);
    StreamWriterState& state = writers_[stream];
    if (state.tombstone)
      return Error(errc::stream_deleted, "stream '" + stream + "' was hard-deleted");
    if (auto ok = check_expected(stream, state, expected); !ok) {
      // The conflict may be with appends not yet durable. Wait for them (flushing them if no one
      // is), so that a writer who reloads after a conflict sees what it conflicted with.
      while (state.committed_version < state.next_version && !failed_) {
        if (!flushing_) {
          if (auto flushed = flush_as_leader(lock); !flushed) break;
        } else {
          flushed_.wait(lock);
        }
      }
      return ok.error();
    }

    // Encode, rolling to a new segment when the append does not fit (an append never spans two).
    std::string bytes;
    const std::int64_t timestamp = clock_.unix_now_ns();
    std::vector<PendingItem> items;
    AppendResult result;
    result.first_version = state.next_version;
    result.first_position = next_position_;
    std::optional<StoredMetadata> metadata_change;
    if (change_metadata) metadata_change = change_metadata(state);
    if (!metadata_change && state.soft_deleted && !events.empty()) {
      // Appending to a soft-deleted stream brings it back; its old events stay hidden.
      metadata_change = state.metadata;
      metadata_change->soft_deleted = false;
    }
    std::vector<std::size_t> offsets_in_bytes;
    for (std::size_t i = 0; i < events.size(); ++i) {
      RecordedEvent event =
          recorded(events[i], stream, state.next_version + i, next_position_ + i, timestamp);
      offsets_in_bytes.push_back(bytes.size());
      encode_event(event, i + 1 == events.size() && !metadata_change, bytes);
      items.push_back({true, stream, event.position, event.version, 0, event.type, event.id, {}});
    }
    if (metadata_change) {
      encode_metadata(stream, metadata_change->to_json(), true, bytes);
      PendingItem item;
      item.is_event = false;
      item.stream = stream;
      item.metadata = *metadata_change;
      items.push_back(std::move(item));
    }
    if (bytes.empty()) {  // an empty append only checks the expected version
      result.last_version = state.next_version == 0 ? 0 : state.next_version - 1;
      result.last_position = next_position_ == 0 ? 0 : next_position_ - 1;
      return result;
    }
    if (bytes.size() > options_.segment_bytes) {
      return invalid("append of " + std::to_string(bytes.size()) +
                     " bytes is larger than a segment");
    }
    if (write_offset_ + bytes.size() > active_->capacity) {
      if (flushing_ || !pending_chunks_.empty()) {
        // Never roll while a write to the active segment is in flight or waiting: a crash
        // would leave that segment torn with a newer one after it. Let it finish, then start
        // again (positions and versions may have moved meanwhile).
        (void)fault("roll-wait");
        if (!flushing_) {
          if (auto flushed = flush_as_leader(lock); !flushed) return flushed.error();
        } else {
          flushed_.wait(lock);
        }
        continue;
      }
      if (auto rolled = roll_segment_locked(); !rolled) return rolled.error();
    }
    for (std::size_t i = 0; i < events.size(); ++i) {
      items[i].location = pack_location(active_->number, write_offset_ + offsets_in_bytes[i]);
    }
    if (!pending_chunks_.empty() && pending_chunks_.back().segment == active_->number &&
        pending_chunks_.back().offset + pending_chunks_.back().bytes.size() == write_offset_) {
      pending_chunks_.back().bytes += bytes;
    } else {
      pending_chunks_.push_back({active_->number, write_offset_, std::move(bytes)});
    }
    write_offset_ = pending_chunks_.back().offset + pending_chunks_.back().bytes.size();
    for (auto& item : items) {
      if (item.is_event) remember_id(item.id, item.position);
      pending_items_.push_back(std::move(item));
    }
    state.next_version += events.size();
    next_position_ += events.size();
    if (metadata_change) {
      state.metadata = *metadata_change;
      state.soft_deleted = metadata_change->soft_deleted;
      state.tombstone = metadata_change->tombstone;
    }
    result.last_version = state.next_version == 0 ? 0 : state.next_version - 1;
    result.last_position = next_position_ == 0 ? 0 : next_position_ - 1;
    const std::uint64_t ticket = ++encoded_ticket_;

    // Group commit: the first waiter to find no flush under way writes everything pending.
    while (flushed_ticket_ < ticket && !failed_) {
      if (!flushing_) {
        if (auto flushed = flush_as_leader(lock); !flushed) break;
      } else {
        flushed_.wait(lock);
      }
    }
    if (flushed_ticket_ < ticket)
      return failed_ ? *failed_ : Error(errc::io_error, "append was not written");
    return result;
  }
}

Status EventStore::Impl::flush_as_leader(std::unique_lock<std::mutex>& lock) {
  flushing_ = true;
  // Commit delay (PostgreSQL's commit_delay, sized automatically): when other appenders are
  // inside append() but not yet in this batch, give them up to half a sync's time to join, so
  // one sync carries them all instead of every other one.
  std::size_t pending_bytes = 0;
  for (const auto& chunk : pending_chunks_) pending_bytes += chunk.bytes.size();
  // Only for small writes, where the sync's fixed cost dominates; a large batch fills itself.
  if (options_.durability == Durability::kEveryCommit && pending_bytes < 64 * 1024) {
    const TimePoint give_up = clock_.now() + last_sync_ / 2;
    for (int spins = 0; spins < 1000; ++spins) {
      std::uint64_t pending = encoded_ticket_ - flushed_ticket_;
      if (pending >= appenders_.load(std::memory_order_relaxed) || clock_.now() >= give_up) break;
      lock.unlock();
      std::this_thread::yield();
      lock.lock();
    }
  }
  std::vector<PendingChunk> chunks = std::move(pending_chunks_);
  std::vector<PendingItem> items = std::move(pending_items_);
  pending_chunks_.clear();
  pending_items_.clear();
  const std::uint64_t ticket = encoded_ticket_;
  std::vector<std::shared_ptr<Segment>> touched;
  {
    std::shared_lock index_lock(index_mutex_);
    for (const auto& chunk : chunks) touched.push_back(segments_.at(chunk.segment));
  }
  lock.unlock();

  std::optional<Error> error;
  for (std::size_t i = 0; i < chunks.size() && !error; ++i) {
    const PendingChunk& chunk = chunks[i];
    Segment& segment = *touched[i];
    std::size_t written = 0;
    while (written < chunk.bytes.size()) {
      int injected = fault("write");
      ssize_t n = injected != 0 ? (errno = injected, -1)
                                : ::pwrite(segment.fd, chunk.bytes.data() + written,
                                           chunk.bytes.size() - written,
                                           static_cast<off_t>(chunk.offset + written));
      if (n < 0) {
        if (errno == EINTR) continue;
        error = io_error("cannot write", segment.path, errno);
        break;
      }
      written += static_cast<std::size_t>(n);
    }
    segment.dirty = true;
  }
  const TimePoint sync_started = clock_.now();
  if (!error && options_.durability == Durability::kEveryCommit) {
    for (std::size_t i = 0; i < touched.size() && !error; ++i) {
      if (i > 0 && touched[i] == touched[i - 1]) continue;
      int injected = fault("sync");
      if (injected != 0 || ::fdatasync(touched[i]->fd) != 0) {
        error = io_error("cannot sync", touched[i]->path, injected != 0 ? injected : errno);
      }
      touched[i]->dirty = false;
    }
  }

  const Duration sync_took = clock_.now() - sync_started;
  lock.lock();
  last_sync_ = std::min<Duration>(sync_took, 2ms);
  if (error) {
    // After a failed write or sync the kernel may have dropped the data; nothing written
    // after it can be trusted either. Stop taking appends; reopening recovers from disk.
    failed_ = Error(errc::io_error,
                    error->message() + "; the store takes no more appends until reopened");
    flushing_ = false;
    flushed_.notify_all();
    return *failed_;
  }
  publish(items);
  notify_listeners(next_position());
  flushed_ticket_ = ticket;
  events_since_checkpoint_ += std::count_if(items.begin(), items.end(),
                                            [](const PendingItem& item) { return item.is_event; });
  flushed_.notify_all();
  tail_.notify_all();
  Status checkpointed;
  if (events_since_checkpoint_ >= options_.checkpoint_every_events) {
    // Still the leader (flushing_ is set): nobody publishes meanwhile, appends keep encoding.
    Index copy;
    std::vector<std::pair<Uuid, std::uint64_t>> ids = ids_snapshot();
    {
      std::shared_lock index_lock(index_mutex_);
      copy = index_;
    }
    events_since_checkpoint_ = 0;
    lock.unlock();
    if (options_.durability != Durability::kEveryCommit) checkpointed = sync_dirty_segments();
    if (checkpointed.ok()) checkpointed = write_checkpoint(path("index.chk"), copy, ids);
    lock.lock();
    if (!checkpointed)
      log::get("eventlog")->error("index checkpoint: {}", checkpointed.error().message());
  }
  flushing_ = false;
  flushed_.notify_all();
  return {};
}

void EventStore::Impl::publish(std::vector<PendingItem>& items) {
  std::unique_lock index_lock(index_mutex_);
  for (auto& item : items) {
    if (item.is_event) {
      StreamWriterState& writer = writers_[item.stream];
      writer.committed_version = std::max(writer.committed_version, item.version + 1);
      index_.add_event(item.stream, item.version, item.position, item.location, item.type);
      StreamIndex& stream = index_.streams[item.stream];
      stream.metadata.soft_deleted = false;
    } else {
      index_.streams[item.stream].metadata = item.metadata;
      index_.any_metadata = true;
    }
  }
  committed_position_ = index_.locations.size();
  index_.replay_segment = active_->number;
  index_.replay_offset = write_offset_;
  // Whatever is pending was encoded after what we publish; replay starts at the first chunk
  // not yet written.
  if (!pending_chunks_.empty()) {
    index_.replay_segment = pending_chunks_.front().segment;
    index_.replay_offset = pending_chunks_.front().offset;
  }
}

Status EventStore::Impl::write_checkpoint_locked() {
  // The checkpoint must describe only what is on disk: without per-commit syncs, sync first.
  if (options_.durability != Durability::kEveryCommit) {
    if (auto synced = sync_dirty_segments(); !synced) return synced;
  }
  std::vector<std::pair<Uuid, std::uint64_t>> ids = ids_snapshot();
  std::shared_lock index_lock(index_mutex_);
  events_since_checkpoint_ = 0;
  return write_checkpoint(path("index.chk"), index_, ids);
}

Status EventStore::Impl::checkpoint_now() {
  std::unique_lock lock(mutex_);
  flushed_.wait(lock, [&] { return !flushing_; });
  if (!open_) return Error(errc::closed, "the store is closed");
  flushing_ = true;
  Status status = write_checkpoint_locked();
  flushing_ = false;
  flushed_.notify_all();
  return status;
}

Status EventStore::Impl::sync_dirty_segments() {
  std::vector<std::shared_ptr<Segment>> dirty;
  {
    std::shared_lock index_lock(index_mutex_);
    for (const auto& [number, segment] : segments_) {
      if (segment->dirty.exchange(false)) dirty.push_back(segment);
    }
  }
  for (const auto& segment : dirty) {
    int injected = fault("sync");
    if (injected != 0 || ::fdatasync(segment->fd) != 0) {
      return io_error("cannot sync", segment->path, injected != 0 ? injected : errno);
    }
  }
  return {};
}

void EventStore::Impl::syncer_loop() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // The interval runs on the injected clock, so tests drive it with advance().
    sync_due_ = false;
    TimerId timer = clock_.schedule_after(options_.sync_interval, [this] {
      std::lock_guard wake(mutex_);
      sync_due_ = true;
      syncer_wake_.notify_all();
    });
    syncer_wake_.wait(lock, [&] { return stopping_ || sync_due_; });
    const bool stop = stopping_;
    lock.unlock();
    clock_.cancel(timer);  // never under mutex_: a running callback takes it
    Status synced = stop ? Status() : sync_dirty_segments();
    lock.lock();
    if (!synced && !failed_) failed_ = synced.error();
  }
}

std::uint64_t EventStore::Impl::next_position() const {
  std::shared_lock index_lock(index_mutex_);
  return committed_position_;
}

std::uint64_t EventStore::Impl::add_commit_listener(std::function<void(std::uint64_t)> listener) {
  std::lock_guard lock(listeners_mutex_);
  listeners_.emplace(next_listener_, std::move(listener));
  return next_listener_++;
}

void EventStore::Impl::remove_commit_listener(std::uint64_t id) {
  std::lock_guard lock(listeners_mutex_);
  listeners_.erase(id);
}

void EventStore::Impl::notify_listeners(std::uint64_t committed) {
  std::lock_guard lock(listeners_mutex_);
  for (auto& [id, listener] : listeners_) listener(committed);
}

bool EventStore::Impl::wait_for(std::uint64_t position, Duration timeout) {
  std::unique_lock lock(mutex_);
  auto reached = [&] {
    std::shared_lock index_lock(index_mutex_);
    return committed_position_ > position || !open_;
  };
  if (reached()) return committed_position_ > position;
  TimerId timer = clock_.schedule_after(timeout, [this] {
    std::lock_guard wake(mutex_);
    tail_.notify_all();
  });
  TimePoint deadline = clock_.now() + timeout;
  while (!reached() && clock_.now() < deadline) tail_.wait(lock);
  lock.unlock();
  clock_.cancel(timer);
  std::shared_lock index_lock(index_mutex_);
  return committed_position_ > position;
}

// ---- reading ----

Result<RecordedEvent> EventStore::Impl::read_at(std::uint64_t position) const {
  std::uint64_t location = index_.locations[position];
  auto segment = segments_.find(location_segment(location));
  if (segment == segments_.end()) {
    return Error(errc::corrupt,
                 "event " + std::to_string(position) + " points at a missing segment");
  }
  RecordView frame;
  if (location_offset(location) < segment->second->capacity)
    frame = read_frame(segment->second->bytes_from(location_offset(location)));
  if (frame.status != RecordView::Status::kOk || frame.kind != RecordKind::kEvent) {
    return Error(errc::corrupt,
                 segment->second->path + " offset " + std::to_string(location_offset(location)) +
                     ": the record of event " + std::to_string(position) + " fails its checks");
  }
  auto event = decode_event(frame);
  // The index is trusted to point at records, not to point at the right one: a checkpoint
  // with a valid CRC may still hold wrong locations. Never serve another event.
  if (event && event->position != position) {
    return Error(errc::corrupt,
                 segment->second->path + " offset " + std::to_string(location_offset(location)) +
                     ": the index has event " + std::to_string(position) +
                     " here, but the record there is event " + std::to_string(event->position));
  }
  return event;
}

bool EventStore::Impl::hidden_by_metadata(const RecordedEvent& event) const {
  if (!index_.any_metadata) return false;
  auto stream = index_.streams.find(event.stream);
  if (stream == index_.streams.end()) return false;
  // A soft delete hides through its truncate-before rule; a tombstone hides everything.
  return stream->second.metadata.tombstone || !visible(stream->second, event);
}

bool EventStore::Impl::visible(const StreamIndex& stream, const RecordedEvent& event) const {
  const StreamMetadata& rules = stream.metadata.rules;
  if (rules.truncate_before && event.version < *rules.truncate_before) return false;
  // Of the stream's events, the last max_count stay (written so that a huge max_count, meaning
  // "no limit", cannot overflow).
  if (rules.max_count && *rules.max_count < stream.positions.size() &&
      event.version < stream.positions.size() - *rules.max_count) {
    return false;
  }
  if (rules.max_age &&
      event.timestamp_ns <
          clock_.unix_now_ns() -
              std::chrono::duration_cast<std::chrono::nanoseconds>(*rules.max_age).count()) {
    return false;
  }
  return true;
}

Result<std::vector<RecordedEvent>> EventStore::Impl::read_stream(std::string_view name,
                                                                 std::uint64_t from,
                                                                 std::size_t max_count,
                                                                 Direction direction) {
  max_count = std::min<std::size_t>(max_count, options_.max_read_count);
  std::shared_lock index_lock(index_mutex_);
  std::vector<RecordedEvent> events;
  auto it = index_.streams.find(std::string(name));
  if (it == index_.streams.end()) return events;
  const StreamIndex& stream = it->second;
  if (stream.metadata.tombstone)
    return Error(errc::stream_deleted, "stream '" + std::string(name) + "' was hard-deleted");
  if (stream.metadata.soft_deleted) return events;
  const auto& positions = stream.positions;
  if (positions.empty()) return events;
  auto consider = [&](std::uint64_t version) -> Status {
    std::uint64_t position = positions[version];
    if (position == kRemoved || index_.locations[position] == kRemoved) return {};
    auto event = read_at(position);
    if (!event) return event.error();
    if (event->stream != it->first || event->version != version) {
      return Error(errc::corrupt, "event " + std::to_string(position) + " is " + event->stream +
                                      "@" + std::to_string(event->version) +
                                      ", but the index has " + it->first + "@" +
                                      std::to_string(version) + " there");
    }
    if (visible(stream, *event)) events.push_back(std::move(*event));
    return {};
  };
  if (direction == Direction::kForward) {
    for (std::uint64_t v = from; v < positions.size() && events.size() < max_count; ++v) {
      if (auto ok = consider(v); !ok) return ok.error();
    }
  } else {
    std::uint64_t v = std::min<std::uint64_t>(from, positions.size() - 1);
    for (;; --v) {
      if (events.size() >= max_count) break;
      if (auto ok = consider(v); !ok) return ok.error();
      if (v == 0) break;
    }
  }
  return events;
}

Result<std::vector<RecordedEvent>> EventStore::Impl::read_all(std::uint64_t from,
                                                              std::size_t max_count,
                                                              Direction direction) {
  max_count = std::min<std::size_t>(max_count, options_.max_read_count);
  std::shared_lock index_lock(index_mutex_);
  std::vector<RecordedEvent> events;
  const std::uint64_t end = committed_position_;
  if (end == 0) return events;
  auto consider = [&](std::uint64_t position) -> Status {
    if (index_.locations[position] == kRemoved) return {};
    auto event = read_at(position);
    if (!event) return event.error();
    if (hidden_by_metadata(*event)) return {};
    events.push_back(std::move(*event));
    return {};
  };
  if (direction == Direction::kForward) {
    events.reserve(std::min<std::uint64_t>(max_count, end > from ? end - from : 0));
    for (std::uint64_t p = from; p < end && events.size() < max_count; ++p) {
      if (auto ok = consider(p); !ok) return ok.error();
    }
  } else {
    for (std::uint64_t p = std::min(from, end - 1);; --p) {
      if (events.size() >= max_count) break;
      if (auto ok = consider(p); !ok) return ok.error();
      if (p == 0) break;
    }
  }
  return events;
}

Result<std::vector<RecordedEvent>> EventStore::Impl::read_indexed(bool category,
                                                                  std::string_view name,
                                                                  std::uint64_t position,
                                                                  std::size_t max_count) {
  max_count = std::min<std::size_t>(max_count, options_.max_read_count);
  std::shared_lock index_lock(index_mutex_);
  std::vector<RecordedEvent> events;
  const auto& map = category ? index_.categories : index_.types;
  auto it = map.find(std::string(name));
  if (it == map.end()) return events;
  const auto& positions = it->second;
  for (auto p = std::lower_bound(positions.begin(), positions.end(), position);
       p != positions.end() && events.size() < max_count; ++p) {
    if (*p >= committed_position_ || index_.locations[*p] == kRemoved) continue;
    auto event = read_at(*p);
    if (!event) return event.error();
    if (hidden_by_metadata(*event)) continue;
    events.push_back(std::move(*event));
  }
  return events;
}

std::optional<std::uint64_t> EventStore::Impl::stream_version(std::string_view name) {
  std::shared_lock index_lock(index_mutex_);
  auto it = index_.streams.find(std::string(name));
  if (it == index_.streams.end() || it->second.positions.empty() ||
      it->second.metadata.soft_deleted || it->second.metadata.tombstone) {
    return std::nullopt;
  }
  return it->second.positions.size() - 1;
}

StoredMetadata EventStore::Impl::stored_metadata(std::string_view name) {
  std::shared_lock index_lock(index_mutex_);
  auto it = index_.streams.find(std::string(name));
  return it == index_.streams.end() ? StoredMetadata{} : it->second.metadata;
}

Status EventStore::Impl::set_metadata(std::string_view stream, const StreamMetadata& metadata) {
  auto result = append(stream, ExpectedVersion::any(), {}, [&](const StreamWriterState& state) {
    StoredMetadata stored = state.metadata;
    stored.rules = metadata;
    return std::optional<StoredMetadata>(stored);
  });
  if (!result) return result.error();
  return {};
}

Status EventStore::Impl::delete_stream(std::string_view stream, ExpectedVersion expected,
                                       bool hard) {
  auto result = append(stream, expected, {}, [&](const StreamWriterState& state) {
    StoredMetadata stored = state.metadata;
    if (hard) {
      stored.tombstone = true;
    } else {
      stored.soft_deleted = true;
      // Everything up to now (appends not yet durable included) stays hidden, even after the
      // stream is recreated.
      stored.rules.truncate_before = state.next_version;
    }
    return std::optional<StoredMetadata>(stored);
  });
  if (!result) return result.error();
  return {};
}

// ---- snapshots ----

namespace {
std::string snapshot_file(std::string_view stream) {
  char name[40];
  std::snprintf(name, sizeof name, "snapshots/%016llx.snap",
                static_cast<unsigned long long>(hash64(stream)));
  return name;
}
}  // namespace

Status EventStore::Impl::save_snapshot(std::string_view stream, const Snapshot& snapshot) {
  std::string bytes = "KEELSNP1";
  auto put = [&](const void* data, std::size_t size) {
    bytes.append(static_cast<const char*>(data), size);
  };
  std::uint32_t stream_size = static_cast<std::uint32_t>(stream.size());
  std::uint32_t data_size = static_cast<std::uint32_t>(snapshot.data.size());
  put(&stream_size, 4);
  bytes += stream;
  put(&snapshot.version, 8);
  put(&data_size, 4);
  bytes += snapshot.data;
  std::uint32_t crc = crc32c(bytes.data(), bytes.size());
  put(&crc, 4);
  return write_file_atomically(path(snapshot_file(stream)), bytes);
}

Result<std::optional<Snapshot>> EventStore::Impl::load_snapshot(std::string_view stream) {
  std::string file_path = path(snapshot_file(stream));
  struct stat info;
  if (::stat(file_path.c_str(), &info) != 0) return std::optional<Snapshot>();
  if (!S_ISREG(info.st_mode)) {  // a FIFO would block the read below
    return Error(errc::corrupt, file_path + ": snapshot is not a regular file");
  }
  std::ifstream file(file_path, std::ios::binary);
  if (!file) return std::optional<Snapshot>();
  std::ostringstream buffer;
  buffer << file.rdbuf();
  std::string bytes = buffer.str();
  auto damaged = [&] { return Error(errc::corrupt, file_path + ": snapshot fails its checks"); };
  if (bytes.size() < 8 + 4 + 8 + 4 + 4 || bytes.compare(0, 8, "KEELSNP1") != 0) return damaged();
  std::uint32_t crc;
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  if (crc32c(bytes.data(), bytes.size() - 4) != crc) return damaged();
  std::uint32_t stream_size, data_size;
  std::memcpy(&stream_size, bytes.data() + 8, 4);
  if (12 + std::uint64_t{stream_size} + 12 + 4 > bytes.size()) return damaged();
  if (std::string_view(bytes).substr(12, stream_size) != stream)
    return std::optional<Snapshot>();  // hash collision
  Snapshot snapshot;
  std::memcpy(&snapshot.version, bytes.data() + 12 + stream_size, 8);
  std::memcpy(&data_size, bytes.data() + 20 + stream_size, 4);
  if (24 + std::uint64_t{stream_size} + data_size + 4 != bytes.size()) return damaged();
  snapshot.data = bytes.substr(24 + stream_size, data_size);
  return std::optional<Snapshot>(std::move(snapshot));
}

// ---- scavenging ----

Result<ScavengeReport> EventStore::Impl::scavenge() {
  ScavengeReport report;
  // Appends go on meanwhile: scavenging reads only sealed segments, and swaps each rewritten
  // one in under the index lock. The scavenge.pending marker makes a crash before the final
  // checkpoint rebuild the index from the log instead of trusting an older checkpoint.
  std::lock_guard one_at_a_time(scavenge_mutex_);
  std::unique_lock lock(mutex_);
  if (!open_) return Error(errc::closed, "the store is closed");
  lock.unlock();

  // Sealed segments whose every record is durable and published: before the replay point.
  std::vector<std::shared_ptr<Segment>> sealed;
  {
    std::shared_lock index_lock(index_mutex_);
    for (const auto& [number, segment] : segments_) {
      if (number < index_.replay_segment) sealed.push_back(segment);
    }
  }
  Status status;
  std::string marker = path("scavenge.pending");
  bool marked = false;
  for (const auto& segment : sealed) {
    // Which records stay: metadata records, and events still visible.
    std::string kept;
    std::optional<RemovedRange> removed_run;  // removed events not yet written as a range
    std::vector<std::pair<std::uint64_t, std::uint64_t>> moved;  // position -> new offset
    std::vector<std::uint64_t> removed;
    {
      std::shared_lock index_lock(index_mutex_);
      // The records run to the zeroed tail (or to the end of a rewritten file). Not to
      // segment->end: that is known only for segments replayed at open, not for those the
      // checkpoint covered.
      std::uint64_t offset = 0;
      while (offset < segment->capacity) {
        RecordView frame = read_frame(segment->bytes_from(offset));
        if (frame.status == RecordView::Status::kEnd) break;
        std::optional<Result<RecordedEvent>> event;
        if (frame.status == RecordView::Status::kOk && frame.kind == RecordKind::kEvent)
          event = decode_event(frame);
        if (frame.status != RecordView::Status::kOk || (event && !event->ok())) {
          // Rewriting would silently drop everything after the damage.
          status = Error(errc::corrupt, segment->path + " offset " + std::to_string(offset) +
                                            ": record fails its checks; scavenge stopped");
          break;
        }
        bool keep = true;
        if (frame.kind == RecordKind::kRemoved) {
          // An earlier scavenge's range: it may grow with what is removed right before it.
          auto range = decode_removed(frame);
          if (range && removed_run &&
              removed_run->first_position + removed_run->count == range->first_position) {
            removed_run->count += range->count;
            offset += frame.size;
            continue;
          }
        }
        if (event) {
          auto stream = index_.streams.find((*event)->stream);
          // A stream's last event stays even when hidden: an index rebuilt from the log
          // learns the stream's version, and the log's next position, from it.
          keep = stream == index_.streams.end() ||
                 (!stream->second.metadata.tombstone && visible(stream->second, **event)) ||
                 (*event)->version + 1 == stream->second.positions.size();
          if (!keep) {
            removed.push_back((*event)->position);
            if (removed_run) {
              ++removed_run->count;
            } else {
              removed_run = RemovedRange{(*event)->position, 1};
            }
          }
        }
        if (keep) {
          // Removed events leave a range record where they were, so that the log still
          // accounts for every position: a hole in the positions is then always damage.
          if (removed_run) encode_removed(*std::exchange(removed_run, std::nullopt), kept);
          if (event) moved.emplace_back((*event)->position, kept.size());
          kept.append(frame.payload.data() - kRecordHeaderBytes, frame.size);
        }
        offset += frame.size;
      }
      if (removed_run) encode_removed(*removed_run, kept);
    }
    if (!status) break;
    if (removed.empty()) continue;
    if (!marked) {
      if (auto written = write_file_atomically(marker, "scavenge"); !written) {
        status = written;
        break;
      }
      marked = true;
    }
    // The file stays even when only ranges are left in it: segment numbers have no gaps.
    std::string temporary = segment->path + ".scavenge";
    if (auto written = write_file_atomically(temporary, kept); !written) {
      status = written;
      break;
    }
    if (::rename(temporary.c_str(), segment->path.c_str()) != 0) {
      status = io_error("cannot rename", temporary, errno);
      break;
    }
    auto remapped = map_segment(segment->number, false);
    if (!remapped) {
      status = remapped.error();
      break;
    }
    std::shared_ptr<Segment> replacement = *remapped;
    replacement->end = kept.size();
    {
      std::unique_lock index_lock(index_mutex_);
      for (std::uint64_t position : removed) index_.locations[position] = kRemoved;
      for (const auto& [position, offset] : moved)
        index_.locations[position] = pack_location(segment->number, offset);
      segments_[segment->number] = replacement;
    }
    if (moved.empty()) {
      ++report.segments_emptied;
    } else {
      ++report.segments_rewritten;
    }
    report.bytes_reclaimed += segment->capacity - kept.size();
    report.events_removed += removed.size();
  }
  lock.lock();
  if (marked && status.ok()) {
    flushed_.wait(lock, [&] { return !flushing_; });
    flushing_ = true;  // no other checkpoint or publication while this one is written
    status = write_checkpoint_locked();
    if (status.ok()) ::unlink(marker.c_str());
    flushing_ = false;
    flushed_.notify_all();
  }
  if (!status) return status.error();
  return report;
}

// ---- EventStore ----

EventStore::EventStore(std::string directory, StoreOptions options, Clock& clock)
    : directory_(directory),
      impl_(std::make_unique<Impl>(std::move(directory), std::move(options), clock)) {}

EventStore::~EventStore() = default;

Result<std::unique_ptr<EventStore>> EventStore::open(const std::string& directory,
                                                     StoreOptions options, Clock& clock) {
  if (options.segment_bytes < 4096 || options.segment_bytes >= (1ull << kOffsetBits)) {
    return invalid("segment_bytes must be from 4096 to 2^40");
  }
  std::unique_ptr<EventStore> store(new EventStore(directory, std::move(options), clock));
  if (auto opened = store->impl_->open(); !opened) return opened.error();
  return store;
}

Status EventStore::close() { return impl_->close(); }

namespace {
Status check_user_stream(std::string_view stream) {
  if (!stream.empty() && stream[0] == '$') {
    return invalid("stream '" + std::string(stream) +
                   "': names starting with '$' are reserved for Keel's own bookkeeping");
  }
  return {};
}
Status check_system_stream(std::string_view stream) {
  if (stream.empty() || stream[0] != '$') {
    return invalid("stream '" + std::string(stream) + "' is not a system stream (no leading '$')");
  }
  return {};
}
}  // namespace

Result<AppendResult> EventStore::append(std::string_view stream, ExpectedVersion expected,
                                        std::span<const EventData> events) {
  if (auto ok = check_user_stream(stream); !ok) return ok.error();
  return impl_->append(stream, expected, events, nullptr);
}

Result<AppendResult> EventStore::append_system(std::string_view stream, ExpectedVersion expected,
                                               std::span<const EventData> events) {
  if (auto ok = check_system_stream(stream); !ok) return ok.error();
  return impl_->append(stream, expected, events, nullptr);
}

Status EventStore::set_system_metadata(std::string_view stream, const StreamMetadata& metadata) {
  if (auto ok = check_system_stream(stream); !ok) return ok.error();
  return impl_->set_metadata(stream, metadata);
}

std::uint64_t EventStore::add_commit_listener(std::function<void(std::uint64_t)> listener) {
  return impl_->add_commit_listener(std::move(listener));
}
void EventStore::remove_commit_listener(std::uint64_t id) { impl_->remove_commit_listener(id); }

Result<std::vector<RecordedEvent>> EventStore::read_stream(std::string_view stream,
                                                           std::uint64_t from,
                                                           std::size_t max_count,
                                                           Direction direction) {
  return impl_->read_stream(stream, from, max_count, direction);
}

Result<std::vector<RecordedEvent>> EventStore::read_all(std::uint64_t position,
                                                        std::size_t max_count,
                                                        Direction direction) {
  return impl_->read_all(position, max_count, direction);
}

Result<std::vector<RecordedEvent>> EventStore::read_category(std::string_view category,
                                                             std::uint64_t position,
                                                             std::size_t max_count) {
  return impl_->read_indexed(true, category, position, max_count);
}

Result<std::vector<RecordedEvent>> EventStore::read_event_type(std::string_view type,
                                                               std::uint64_t position,
                                                               std::size_t max_count) {
  return impl_->read_indexed(false, type, position, max_count);
}

std::optional<std::uint64_t> EventStore::stream_version(std::string_view stream) {
  return impl_->stream_version(stream);
}

Status EventStore::set_metadata(std::string_view stream, const StreamMetadata& metadata) {
  if (auto ok = check_user_stream(stream); !ok) return ok.error();
  return impl_->set_metadata(stream, metadata);
}

StreamMetadata EventStore::metadata(std::string_view stream) {
  return impl_->stored_metadata(stream).rules;
}

Status EventStore::delete_stream(std::string_view stream, ExpectedVersion expected, bool hard) {
  if (auto ok = check_user_stream(stream); !ok) return ok.error();
  return impl_->delete_stream(stream, expected, hard);
}

Status EventStore::save_snapshot(std::string_view stream, const Snapshot& snapshot) {
  return impl_->save_snapshot(stream, snapshot);
}

Result<std::optional<Snapshot>> EventStore::load_snapshot(std::string_view stream) {
  return impl_->load_snapshot(stream);
}

Result<ScavengeReport> EventStore::scavenge() { return impl_->scavenge(); }
std::uint64_t EventStore::next_position() const { return impl_->next_position(); }
bool EventStore::wait_for(std::uint64_t position, Duration timeout) {
  return impl_->wait_for(position, timeout);
}
const StoreOptions& EventStore::options() const { return impl_->options(); }
Status EventStore::checkpoint() { return impl_->checkpoint_now(); }

}  // namespace keel::eventlog

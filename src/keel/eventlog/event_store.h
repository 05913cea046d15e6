// EventStore: Event Sourcing as a storage engine a C++ service embeds (no server).
//
// Streams of events with optimistic concurrency (expected versions), idempotent appends (event
// ids), a gap-free global log ($all) with per-category and per-type indexes, stream metadata
// (max count, max age, truncate-before, soft and hard delete), snapshots, and scavenging.
//
// Storage: append-only segment files of CRC32C-framed records (record.h), preallocated so that
// a commit needs only fdatasync. Appends from many threads share one write and one sync (group
// commit). An append is acknowledged only after its records are durable under the chosen
// durability policy. The index lives in memory, is checkpointed to `index.chk`, and is brought
// up to date from the log tail on open; a torn tail is cut off, any other damage is reported
// with file and offset and the store refuses to open.
//
// Thread-safety: every method may be called from any thread. Reads run concurrently with each
// other and with appends; appends serialise only on the in-memory bookkeeping, not on I/O.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/core/uuid.h"
#include "keel/eventlog/errc.h"
#include "keel/eventlog/event.h"

namespace keel::eventlog {

enum class Durability {
  // fdatasync before every acknowledgement (shared by concurrent appends). An acknowledged
  // append survives a crash or power loss.
  kEveryCommit,
  // Acknowledge after write(); fdatasync every sync_interval. A process crash loses nothing
  // (the OS has the data); a power loss can lose the last interval.
  kInterval,
  // Never fdatasync; the OS writes back when it likes. A power loss can lose anything not yet
  // written back (typically up to 30 s). For tests and bulk loads.
  kNone,
};

struct StoreOptions {
  std::uint64_t segment_bytes = 256ull << 20;
  Durability durability = Durability::kEveryCommit;
  Duration sync_interval = 100ms;
  std::uint32_t max_event_bytes = 4u << 20;  // type + data + metadata of one event
  std::uint32_t max_append_events = 10000;
  std::uint32_t max_read_count = 100000;
  // Event ids remembered for idempotency: re-appending ids older than this many events is
  // caught only by the expected version.
  std::uint32_t idempotency_window = 1000000;
  // Write index.chk after this many new events (and on close()). A background thread writes
  // it; appends wait only while the index is copied for it, not for the file.
  std::uint64_t checkpoint_every_events = 1000000;
  // Test seam for disk faults: called before each file operation ("fallocate", "write",
  // "sync"); a non-zero errno makes that operation fail with it. Also called, its answer
  // ignored, with "roll-wait" when an append that must roll to a new segment waits for a write
  // in flight (so tests can see the wait).
  std::function<int(std::string_view operation)> inject_fault;
};

struct AppendResult {
  std::uint64_t first_version = 0;
  std::uint64_t last_version = 0;  // the stream's version now: expect this next time
  std::uint64_t first_position = 0;
  std::uint64_t last_position = 0;
  bool duplicate = false;  // these event ids were appended before; nothing new was written
};

struct StreamMetadata {
  std::optional<std::uint64_t> max_count;
  std::optional<Duration> max_age;
  std::optional<std::uint64_t> truncate_before;  // versions below this are gone

  std::string to_json() const;
  static Result<StreamMetadata> from_json(std::string_view json);
};

struct Snapshot {
  std::uint64_t version = 0;  // the last event the snapshot includes
  std::string data;
};

enum class Direction { kForward, kBackward };

struct ScavengeReport {
  std::uint64_t events_removed = 0;
  std::uint64_t segments_emptied = 0;    // no event left: only removed ranges and metadata
  std::uint64_t segments_rewritten = 0;  // some events left
  std::uint64_t bytes_reclaimed = 0;
};

// What the store has done since it was opened: how well appends share writes and syncs.
struct StoreStats {
  std::uint64_t appends = 0;  // append() calls written (and synced, with every_commit)
  std::uint64_t commits = 0;  // group commits: one write of everything pending
  std::uint64_t syncs = 0;    // fdatasync calls on segment files
};

class EventStore {
 public:
  // Opens (creating when absent) the store in `directory`.
  static Result<std::unique_ptr<EventStore>> open(const std::string& directory,
                                                  StoreOptions options, Clock& clock);
  ~EventStore();
  EventStore(const EventStore&) = delete;
  EventStore& operator=(const EventStore&) = delete;

  // Writes the index checkpoint, stops the background syncer, closes the files. Idempotent;
  // the destructor calls it.
  Status close();

  // Atomically appends `events` to `stream` if it is at `expected`. A conflict fails with
  // errc::wrong_expected_version and the stream's actual version in Error::detail() (-1: no
  // stream). Re-appending ids already appended together returns the first result with
  // `duplicate` set; an id reused for anything else fails with errc::duplicate_event_id.
  Result<AppendResult> append(std::string_view stream, ExpectedVersion expected,
                              std::span<const EventData> events);
  Result<AppendResult> append(std::string_view stream, ExpectedVersion expected,
                              std::initializer_list<EventData> events) {
    return append(stream, expected, std::span<const EventData>(events.begin(), events.size()));
  }
  // The same append without a thread waiting for it: `done` is called once with what append()
  // would return, on the calling thread when the answer is known at once (a refusal, a
  // duplicate), else on the store's flusher thread once the events are durable. Appends taken
  // this way share syncs with each other and with append(); a server's I/O threads use it so
  // that no thread per waiting request is needed. `done` must not block; close() answers every
  // append taken before it. `events` need not outlive the call.
  void append_async(std::string_view stream, ExpectedVersion expected,
                    std::span<const EventData> events,
                    std::function<void(Result<AppendResult>)> done);

  // Up to `max_count` events of `stream` from version `from` (inclusive) in `direction`;
  // from = UINT64_MAX with kBackward means "from the end". A missing or soft-deleted stream
  // reads as empty; a hard-deleted one fails with errc::stream_deleted. Events hidden by the
  // stream's metadata (truncate-before, max count, max age) are not returned.
  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream, std::uint64_t from,
                                                 std::size_t max_count,
                                                 Direction direction = Direction::kForward);
  // The whole log from `position` (inclusive); UINT64_MAX with kBackward reads from the end.
  Result<std::vector<RecordedEvent>> read_all(std::uint64_t position, std::size_t max_count,
                                              Direction direction = Direction::kForward);
  // Events of one category or one event type, forward from `position`, via their indexes.
  Result<std::vector<RecordedEvent>> read_category(std::string_view category,
                                                   std::uint64_t position, std::size_t max_count);
  Result<std::vector<RecordedEvent>> read_event_type(std::string_view type, std::uint64_t position,
                                                     std::size_t max_count);

  // The stream's last version, or nullopt for a missing, soft-deleted or hard-deleted stream.
  std::optional<std::uint64_t> stream_version(std::string_view stream);

  // Streams whose name starts with `prefix` (missing and deleted ones left out), in name order,
  // at most `limit`, with `more` set when others match too. For operators (the console): it
  // scans every stream name under the index's read lock, so it is not for a request path.
  struct StreamSummary {
    std::string name;
    std::uint64_t version = 0;  // the last event's
  };
  struct StreamList {
    std::vector<StreamSummary> streams;
    bool more = false;
  };
  StreamList list_streams(std::string_view prefix, std::size_t limit);

  Status set_metadata(std::string_view stream, const StreamMetadata& metadata);
  StreamMetadata metadata(std::string_view stream);
  // Soft delete hides the stream's events; appending again recreates it, its versions going on
  // from where they were. Hard delete (a tombstone) is final: the name can never be used again.
  Status delete_stream(std::string_view stream, ExpectedVersion expected, bool hard);

  // The latest snapshot of a stream replaces the previous one; stored durably beside the log.
  Status save_snapshot(std::string_view stream, const Snapshot& snapshot);
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream);

  // Removes deleted, truncated and expired events from sealed segments, deleting segments
  // left empty. Runs beside appends (which use the active segment only).
  Result<ScavengeReport> scavenge();

  // The position the next event will get (= events appended so far).
  std::uint64_t next_position() const;
  StoreStats stats() const;
  // Blocks until an event at `position` or later is committed, or `timeout` passes; returns
  // whether it was. For subscriptions that tail the log.
  bool wait_for(std::uint64_t position, Duration timeout);

  // Calls `listener` after every commit with the new next_position(), from the committing
  // thread with store locks held: it must only note the position and wake its own thread
  // (never call back into the store). Returns an id for remove_commit_listener(), which waits
  // for a call in progress to finish.
  std::uint64_t add_commit_listener(std::function<void(std::uint64_t next_position)> listener);
  void remove_commit_listener(std::uint64_t id);

  // Bookkeeping streams of the layers above (consumer-group checkpoints, parked events): their
  // names start with '$', which append(), set_metadata() and delete_stream() refuse. They are
  // in $all like any stream; subscriptions skip them unless a filter asks for them.
  Result<AppendResult> append_system(std::string_view stream, ExpectedVersion expected,
                                     std::span<const EventData> events);
  Result<AppendResult> append_system(std::string_view stream, ExpectedVersion expected,
                                     std::initializer_list<EventData> events) {
    return append_system(stream, expected,
                         std::span<const EventData>(events.begin(), events.size()));
  }
  void append_system_async(std::string_view stream, ExpectedVersion expected,
                           std::span<const EventData> events,
                           std::function<void(Result<AppendResult>)> done);
  Status set_system_metadata(std::string_view stream, const StreamMetadata& metadata);

  // Writes index.chk now (also done every checkpoint_every_events events and on close).
  Status checkpoint();

  const std::string& directory() const { return directory_; }
  const StoreOptions& options() const;

  class Impl;

 private:
  EventStore(std::string directory, StoreOptions options, Clock& clock);
  std::string directory_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::eventlog

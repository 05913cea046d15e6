// Internals of EventStore, shared by its .cc files. Not part of the public API.
//
// EventStore::Impl is one object whose parts live in one file each:
//   event_store.cc  the public methods, open() and close(), commit listeners, wait_for()
//   recovery.cc     what open() does to the log: listing, the checkpoint and its checks, replay,
//                   the torn-tail cut (the walk itself is LogScanner's, log_scanner.h)
//   writer.cc       append(), group commit, rolling segments, index checkpoints, the syncer
//   reader.cc       read_at() and the stream, $all, category and type reads; visibility rules
//   metadata.cc     stream metadata: its JSON, set_metadata() and delete_stream()
//   snapshot.cc     save_snapshot() and load_snapshot() (the file format is snapshot.h's)
//   scavenge.cc     scavenge()
//   checkpoint.cc   the index.chk format
// Every segment byte goes through SegmentFiles (segment_file.h); every file name is layout.h's.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <unordered_set>

#include "keel/eventlog/event_store.h"
#include "keel/eventlog/id_window.h"
#include "keel/eventlog/layout.h"
#include "keel/eventlog/record.h"
#include "keel/eventlog/segment_file.h"

namespace keel::eventlog {

// Stream state as stored in metadata records: the user's rules plus deletion.
struct StoredMetadata {
  StreamMetadata rules;
  bool soft_deleted = false;
  bool tombstone = false;
  std::string to_json() const;
  static Result<StoredMetadata> from_json(std::string_view json);
};

// What readers see of a stream.
struct StreamIndex {
  std::vector<std::uint64_t> positions;  // by version; kRemovedLocation where scavenged
  StoredMetadata metadata;
  bool has_rules() const {
    const auto& r = metadata.rules;
    return r.max_count || r.max_age || r.truncate_before;
  }
};

// What writers check appends against (includes appends not yet durable).
struct StreamWriterState {
  StoredMetadata metadata;  // including changes not yet durable
  std::uint64_t next_version = 0;
  std::uint64_t committed_version = 0;  // next_version as readers see it
  bool soft_deleted = false;
  bool tombstone = false;
  bool exists() const { return next_version > 0 && !soft_deleted; }
};

// A change waiting for its append to become durable before readers see it.
struct PendingItem {
  bool is_event = true;
  std::string stream;
  // events
  std::uint64_t position = 0;
  std::uint64_t version = 0;
  std::uint64_t location = 0;
  std::string type;
  Uuid id;
  // metadata
  StoredMetadata metadata;
};

struct PendingChunk {
  std::uint64_t segment = 0;
  std::uint64_t offset = 0;
  std::string bytes;
};

// The in-memory index, replaced wholesale when loading a checkpoint.
struct Index {
  std::vector<std::uint64_t> locations;  // by position
  std::unordered_map<std::string, StreamIndex> streams;
  std::unordered_map<std::string, std::vector<std::uint64_t>> categories;
  std::unordered_map<std::string, std::vector<std::uint64_t>> types;
  // False while no stream has ever had metadata: then every event in the log is visible and
  // $all, category and type reads skip the per-event stream lookup.
  bool any_metadata = false;
  std::uint64_t replay_segment = 1;  // where the log tail after this index starts
  std::uint64_t replay_offset = 0;

  void add_event(const std::string& stream, std::uint64_t version, std::uint64_t position,
                 std::uint64_t location, const std::string& type);
};

// Index checkpoint file (index.chk).
Status write_checkpoint(const std::string& path, const Index& index,
                        const std::vector<std::pair<Uuid, std::uint64_t>>& ids);
// Ok(nullopt) when absent; an error when present but damaged.
using LoadedCheckpoint =
    std::optional<std::pair<Index, std::vector<std::pair<Uuid, std::uint64_t>>>>;
Result<LoadedCheckpoint> read_checkpoint(const std::string& path);

// Computes a stream's new metadata from its writer state, under the writer lock, so that
// concurrent metadata changes and deletes build on each other instead of on a stale read.
using MetadataChange = std::function<std::optional<StoredMetadata>(const StreamWriterState&)>;

struct ScannedAppend;

class EventStore::Impl {
 public:
  Impl(std::string directory, StoreOptions options, Clock& clock);
  ~Impl();

  // event_store.cc
  Status open();
  Status close();
  std::uint64_t next_position() const;
  StoreStats stats() const {
    return {appends_committed_.load(std::memory_order_relaxed),
            commits_.load(std::memory_order_relaxed), files_.syncs()};
  }
  bool wait_for(std::uint64_t position, Duration timeout);
  std::uint64_t add_commit_listener(std::function<void(std::uint64_t)> listener);
  void remove_commit_listener(std::uint64_t id);
  const StoreOptions& options() const { return options_; }

  // writer.cc
  Result<AppendResult> append(std::string_view stream, ExpectedVersion expected,
                              std::span<const EventData> events,
                              const MetadataChange& change_metadata);
  using AppendDone = std::function<void(Result<AppendResult>)>;
  void append_async(std::string_view stream, ExpectedVersion expected,
                    std::span<const EventData> events, AppendDone done);
  Status checkpoint_now();

  // reader.cc
  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream, std::uint64_t from,
                                                 std::size_t max_count, Direction direction);
  Result<std::vector<RecordedEvent>> read_all(std::uint64_t position, std::size_t max_count,
                                              Direction direction);
  Result<std::vector<RecordedEvent>> read_indexed(bool category, std::string_view name,
                                                  std::uint64_t position, std::size_t max_count);
  std::optional<std::uint64_t> stream_version(std::string_view stream);
  EventStore::StreamList list_streams(std::string_view prefix, std::size_t limit);
  StoredMetadata stored_metadata(std::string_view stream);

  // metadata.cc
  Status delete_stream(std::string_view stream, ExpectedVersion expected, bool hard);
  Status set_metadata(std::string_view stream, const StreamMetadata& metadata);

  // snapshot.cc
  Status save_snapshot(std::string_view stream, const Snapshot& snapshot);
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream);

  // scavenge.cc
  Result<ScavengeReport> scavenge();

 private:
  class Replay;  // recovery.cc

  std::string path(std::string_view name) const { return path_in(directory_, name); }

  // event_store.cc
  void notify_listeners(std::uint64_t committed);

  // recovery.cc
  Status recover();
  void load_checkpoint();
  Status check_checkpoint_segments() const;
  Status apply_recovered(const ScannedAppend& append);
  void start_writing_after_recovery();

  // writer.cc
  // What the first half of an append (under mutex_, never waiting) made of it.
  struct Encoded {
    enum Kind {
      kDone,             // `result` is the answer now
      kQueued,           // pending: `result` is the answer once `ticket` is flushed
      kAfterFlush,       // `result` (a conflict) is the answer once `ticket` is flushed
      kRetryAfterFlush,  // must roll while a write is in flight: encode again after `ticket`
    } kind;
    Result<AppendResult> result;
    std::uint64_t ticket = 0;
  };
  // An append_async() waiting for its ticket (kQueued or kAfterFlush); guarded by mutex_.
  struct AsyncAppend {
    std::uint64_t ticket = 0;
    Encoded::Kind kind;
    Result<AppendResult> result;
    AppendDone done;
  };

  Status check_append(std::string_view stream, std::span<const EventData> events) const;
  Encoded encode_append(const std::string& stream, ExpectedVersion expected,
                        std::span<const EventData> events, const MetadataChange& change_metadata);
  // append_async()'s thread, started by the first: flushes what async appends wait for and
  // answers them, in ticket order.
  void flusher_loop();
  Status roll_segment_locked();
  Status check_expected(const std::string& stream, const StreamWriterState& state,
                        ExpectedVersion expected) const;
  std::optional<Result<AppendResult>> find_duplicate(std::string_view stream,
                                                     std::span<const EventData> events);
  Status flush_as_leader(std::unique_lock<std::mutex>& lock);
  // Until `ticket` is flushed (writing as the leader when no one is) or the store failed.
  void wait_for_ticket(std::unique_lock<std::mutex>& lock, std::uint64_t ticket);
  void publish(std::vector<PendingItem>& items);
  void remember_id(const Uuid& id, std::uint64_t position);
  std::vector<std::pair<Uuid, std::uint64_t>> ids_snapshot() const;
  Status write_checkpoint_locked();
  // The periodic index checkpoint, on its own thread: a commit that makes one due only wakes
  // it, so no append waits while index.chk is written.
  void checkpointer_loop();
  // The nice value of the thread that writes a background checkpoint's file.
  static constexpr int kCheckpointerNice = 10;
  static void lower_priority();
  Status checkpoint_in_background();
  // fdatasync every segment written since its last sync (kInterval, kNone, before checkpoints).
  Status sync_dirty_segments();
  void syncer_loop();

  // reader.cc
  Result<RecordedEvent> read_at(std::uint64_t position) const;  // index lock held
  bool visible(const StreamIndex& stream, const RecordedEvent& event) const;
  // For reads across streams ($all, category, type): the event's stream metadata hides it.
  bool hidden_by_metadata(const RecordedEvent& event) const;

  const std::string directory_;
  const StoreOptions options_;
  Clock& clock_;
  const SegmentFiles files_;
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
  IdWindow ids_{options_.idempotency_window};  // event id -> position, the last N appended
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
  std::mutex checkpoint_file_mutex_;  // one writer of index.chk at a time
  std::uint64_t index_epoch_ = 0;     // guarded by index_mutex_: bumped by each scavenge rewrite
  std::atomic<std::uint32_t> appenders_{0};          // threads inside append()
  std::atomic<std::uint64_t> appends_committed_{0};  // for stats()
  std::atomic<std::uint64_t> commits_{0};
  Duration last_sync_ = Duration::zero();  // how long the last write and sync took

  std::thread syncer_;
  bool stopping_ = false;
  bool sync_due_ = false;
  std::condition_variable syncer_wake_;

  std::deque<AsyncAppend> async_appends_;  // guarded by mutex_, tickets in order
  std::thread flusher_;                    // guarded by mutex_ (started by append_async)
  bool flusher_stopping_ = false;
  std::condition_variable flusher_wake_;

  std::thread checkpointer_;
  bool checkpoint_due_ = false;  // guarded by mutex_
  std::condition_variable checkpointer_wake_;
};

}  // namespace keel::eventlog

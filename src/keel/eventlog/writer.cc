// Appending: the checks an append must pass, group commit (the first appender to find no write
// under way writes and syncs everything pending; the others wait), rolling to a new segment,
// publishing what became durable to readers, index checkpoints and the interval syncer.
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#include "keel/core/log.h"
#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {
namespace {

Error invalid(const std::string& what) { return Error(errc::invalid_argument, what); }

}  // namespace

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
  ids_.insert_or_assign(id, position);
}

std::vector<std::pair<Uuid, std::uint64_t>> EventStore::Impl::ids_snapshot() const {
  std::vector<std::pair<Uuid, std::uint64_t>> ids;
  ids.reserve(ids_.size());
  ids_.for_each([&](const Uuid& id, std::uint64_t position) {
    // Only durable events: an append not yet acknowledged may be lost in a crash and retried.
    if (position < committed_position_) ids.emplace_back(id, position);
  });
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
  const std::uint64_t first = *ids_.find(events[0].id);
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (*ids_.find(events[i].id) != first + i)
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
  auto segment = files_.create(number);
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

Status EventStore::Impl::check_append(std::string_view stream_name,
                                      std::span<const EventData> events) const {
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
  return {};
}

EventStore::Impl::Encoded EventStore::Impl::encode_append(const std::string& stream,
                                                          ExpectedVersion expected,
                                                          std::span<const EventData> events,
                                                          const MetadataChange& change_metadata) {
  auto done = [](Result<AppendResult> result) {
    return Encoded{Encoded::kDone, std::move(result), 0};
  };
  if (!open_) return done(Error(errc::closed, "the store is closed"));
  if (failed_) return done(*failed_);
  if (auto duplicate = find_duplicate(stream, events)) return done(std::move(*duplicate));
  StreamWriterState& state = writers_[stream];
  if (state.tombstone)
    return done(Error(errc::stream_deleted, "stream '" + stream + "' was hard-deleted"));
  if (auto ok = check_expected(stream, state, expected); !ok) {
    // The conflict may be with appends not yet durable: answer once they are, so that a writer
    // who reloads after a conflict sees what it conflicted with.
    if (state.committed_version < state.next_version)
      return Encoded{Encoded::kAfterFlush, ok.error(), encoded_ticket_};
    return done(ok.error());
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
    return done(result);
  }
  if (bytes.size() > options_.segment_bytes) {
    return done(
        invalid("append of " + std::to_string(bytes.size()) + " bytes is larger than a segment"));
  }
  if (write_offset_ + bytes.size() > active_->capacity) {
    if (flushing_ || !pending_chunks_.empty()) {
      // Never roll while a write to the active segment is in flight or waiting: a crash would
      // leave that segment torn with a newer one after it. Let it finish, then start again
      // (positions and versions may have moved meanwhile).
      (void)files_.fault("roll-wait");
      return Encoded{Encoded::kRetryAfterFlush, Error(errc::io_error, "roll-wait"),
                     encoded_ticket_};
    }
    if (auto rolled = roll_segment_locked(); !rolled) return done(rolled.error());
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
  return Encoded{Encoded::kQueued, result, ++encoded_ticket_};
}

Result<AppendResult> EventStore::Impl::append(std::string_view stream_name,
                                              ExpectedVersion expected,
                                              std::span<const EventData> events,
                                              const MetadataChange& change_metadata) {
  if (auto ok = check_append(stream_name, events); !ok) return ok.error();
  const std::string stream(stream_name);

  // Appenders inside append(): a leader waits briefly for the others to join its sync.
  appenders_.fetch_add(1, std::memory_order_relaxed);
  struct Leaving {
    std::atomic<std::uint32_t>& count;
    ~Leaving() { count.fetch_sub(1, std::memory_order_relaxed); }
  } leaving{appenders_};

  std::unique_lock lock(mutex_);
  for (;;) {  // once, or again after waiting for a write in flight before a roll
    Encoded encoded = encode_append(stream, expected, events, change_metadata);
    if (encoded.kind == Encoded::kDone) return std::move(encoded.result);
    wait_for_ticket(lock, encoded.ticket);
    if (encoded.kind == Encoded::kRetryAfterFlush) {
      if (failed_) return *failed_;
      continue;
    }
    if (encoded.kind == Encoded::kQueued && flushed_ticket_ < encoded.ticket)
      return failed_ ? *failed_ : Error(errc::io_error, "append was not written");
    return std::move(encoded.result);
  }
}

void EventStore::Impl::wait_for_ticket(std::unique_lock<std::mutex>& lock, std::uint64_t ticket) {
  // Group commit: the first waiter to find no flush under way writes everything pending.
  while (flushed_ticket_ < ticket && !failed_) {
    if (!flushing_) {
      if (auto flushed = flush_as_leader(lock); !flushed) break;
    } else {
      flushed_.wait(lock);
    }
  }
}

void EventStore::Impl::append_async(std::string_view stream_name, ExpectedVersion expected,
                                    std::span<const EventData> events, AppendDone done) {
  if (auto ok = check_append(stream_name, events); !ok) return done(ok.error());
  const std::string stream(stream_name);
  std::unique_lock lock(mutex_);
  Encoded encoded = encode_append(stream, expected, events, nullptr);
  while (encoded.kind == Encoded::kRetryAfterFlush) {
    // A segment roll while a write is in flight: wait for it here, as append() does (once a
    // segment, for one write), so that appends are still encoded in the order they came.
    wait_for_ticket(lock, encoded.ticket);
    encoded = encode_append(stream, expected, events, nullptr);
  }
  if (encoded.kind == Encoded::kDone) {
    lock.unlock();
    return done(std::move(encoded.result));
  }
  async_appends_.push_back(
      {encoded.ticket, encoded.kind, std::move(encoded.result), std::move(done)});
  if (!flusher_.joinable()) flusher_ = std::thread([this] { flusher_loop(); });
  if (!flushing_) flusher_wake_.notify_one();
}

void EventStore::Impl::flusher_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    // Answer what is durable (or everything, once the store has failed), outside the lock.
    std::vector<AsyncAppend> ready;
    while (!async_appends_.empty() &&
           (async_appends_.front().ticket <= flushed_ticket_ || failed_)) {
      ready.push_back(std::move(async_appends_.front()));
      async_appends_.pop_front();
    }
    if (!ready.empty()) {
      const std::optional<Error> failed = failed_;
      const std::uint64_t flushed = flushed_ticket_;
      lock.unlock();
      for (AsyncAppend& append : ready) {
        if (append.kind == Encoded::kQueued && append.ticket > flushed) {
          append.done(failed ? *failed : Error(errc::io_error, "append was not written"));
        } else {
          append.done(std::move(append.result));
        }
      }
      lock.lock();
      continue;
    }
    if (!async_appends_.empty() && !flushing_) {
      (void)flush_as_leader(lock);  // a failure is answered above
      continue;
    }
    if (async_appends_.empty() && flusher_stopping_) return;
    flusher_wake_.wait(lock);
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
    if (auto written = files_.write(segment, chunk.offset, chunk.bytes); !written)
      error = written.error();
    segment.dirty = true;
  }
  const TimePoint sync_started = clock_.now();
  if (!error && options_.durability == Durability::kEveryCommit) {
    for (std::size_t i = 0; i < touched.size() && !error; ++i) {
      if (i > 0 && touched[i] == touched[i - 1]) continue;
      if (auto synced = files_.sync(*touched[i]); !synced) error = synced.error();
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
    flusher_wake_.notify_one();
    return *failed_;
  }
  publish(items);
  notify_listeners(next_position());
  appends_committed_.fetch_add(ticket - flushed_ticket_, std::memory_order_relaxed);
  commits_.fetch_add(1, std::memory_order_relaxed);
  flushed_ticket_ = ticket;
  events_since_checkpoint_ += std::count_if(items.begin(), items.end(),
                                            [](const PendingItem& item) { return item.is_event; });
  if (events_since_checkpoint_ >= options_.checkpoint_every_events) {
    events_since_checkpoint_ = 0;
    checkpoint_due_ = true;
    checkpointer_wake_.notify_one();
  }
  flushing_ = false;
  flushed_.notify_all();
  tail_.notify_all();
  if (!async_appends_.empty()) flusher_wake_.notify_one();
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
  std::lock_guard file(checkpoint_file_mutex_);
  std::shared_lock index_lock(index_mutex_);
  events_since_checkpoint_ = 0;
  return write_checkpoint(path(kCheckpointFileName), index_, ids);
}

void EventStore::Impl::checkpointer_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    checkpointer_wake_.wait(lock, [&] { return stopping_ || checkpoint_due_; });
    if (stopping_) return;  // close() writes the last one
    checkpoint_due_ = false;
    lock.unlock();
    if (Status written = checkpoint_in_background(); !written)
      log::get("eventlog")->error("index checkpoint: {}", written.error().message());
    lock.lock();
  }
}

Status EventStore::Impl::checkpoint_in_background() {
  // The copy is taken under the writer lock, so that nothing is published meanwhile and the
  // ids agree with the index; appends wait only for the copy, not for the file.
  Index copy;
  std::vector<std::pair<Uuid, std::uint64_t>> ids;
  std::uint64_t epoch = 0;
  {
    std::lock_guard lock(mutex_);
    ids = ids_snapshot();
    std::shared_lock index_lock(index_mutex_);
    copy = index_;
    epoch = index_epoch_;
  }
  // The checkpoint must describe only what is on disk: without per-commit syncs, sync first.
  if (options_.durability != Durability::kEveryCommit) {
    if (auto synced = sync_dirty_segments(); !synced) return synced;
  }
  std::lock_guard file(checkpoint_file_mutex_);
  {
    // A scavenge that rewrote segments since the copy leaves its locations stale; the scavenge
    // writes a checkpoint of its own when it ends. (An older checkpoint of the same epoch is
    // still true, only with more log to replay.)
    std::shared_lock index_lock(index_mutex_);
    if (index_epoch_ != epoch) return {};
  }
  // Writing the file is upkeep: the log is the truth and a late checkpoint only means more log
  // to replay at the next open, but serializing and writing a large index (120 MB at 3 M
  // events) takes seconds of CPU that appends, reads and fetches of a busy node would wait
  // behind. So it runs on a thread of its own at nice 10 (about a tenth of a busy core, all of
  // an idle one); the copy above stays at normal priority, since appends wait for it. A thread
  // per checkpoint, because a thread may lower its priority but not raise it back.
  Status written;
  std::thread writer([&] {
    lower_priority();
    written = write_checkpoint(path(kCheckpointFileName), copy, ids);
  });
  writer.join();
  return written;
}

void EventStore::Impl::lower_priority() {
#ifdef __linux__
  // Linux keeps a nice value per thread; elsewhere the write runs at normal priority.
  const auto tid = static_cast<id_t>(::syscall(SYS_gettid));
  if (::setpriority(PRIO_PROCESS, tid, kCheckpointerNice) != 0)
    log::get("eventlog")->debug("index checkpoint writer keeps its priority: errno {}", errno);
#endif
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
    if (auto synced = files_.sync(*segment); !synced) return synced;
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

}  // namespace keel::eventlog

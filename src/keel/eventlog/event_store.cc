// EventStore: the public methods, and the parts of EventStore::Impl that belong to no one
// step — opening (the LOCK, then recovery.cc) and closing, commit listeners, waiting for the log
// to grow. event_store_impl.h lists which file holds the rest.
#include "keel/eventlog/event_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {
namespace {

Error invalid(const std::string& what) { return Error(errc::invalid_argument, what); }

}  // namespace

EventStore::Impl::Impl(std::string directory, StoreOptions options, Clock& clock)
    : directory_(std::move(directory)),
      options_(std::move(options)),
      clock_(clock),
      files_(directory_, options_.segment_bytes, options_.inject_fault) {}

EventStore::Impl::~Impl() {
  (void)close();
  if (lock_fd_ >= 0) ::close(lock_fd_);  // open() failed: close() had nothing to do
}

Status EventStore::Impl::open() {
  if (::mkdir(directory_.c_str(), 0755) != 0 && errno != EEXIST) {
    return io_error("cannot create directory", directory_, errno);
  }
  ::mkdir(path(kSnapshotsDirectoryName).c_str(), 0755);
  lock_fd_ = ::open(path(kLockFileName).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) return io_error("cannot open", path(kLockFileName), errno);
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Error(errc::io_error, directory_ + " is open in another process (LOCK is held)");
  }
  if (auto recovered = recover(); !recovered) return recovered;
  open_ = true;
  if (options_.durability == Durability::kInterval)
    syncer_ = std::thread([this] { syncer_loop(); });
  checkpointer_ = std::thread([this] { checkpointer_loop(); });
  return {};
}

Status EventStore::Impl::close() {
  std::lock_guard no_scavenge(scavenge_mutex_);  // a running scavenge finishes first
  std::thread flusher;
  {
    std::unique_lock lock(mutex_);
    if (!open_) return {};
    flushed_.wait(lock, [&] { return !flushing_; });
    open_ = false;
    stopping_ = true;
    syncer_wake_.notify_all();
    checkpointer_wake_.notify_all();
    flusher_stopping_ = true;  // it answers every async append taken before it stops
    flusher_wake_.notify_all();
    flusher = std::move(flusher_);
  }
  if (flusher.joinable()) flusher.join();
  if (syncer_.joinable()) syncer_.join();
  if (checkpointer_.joinable()) checkpointer_.join();
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
  wait_until(clock_, tail_, lock, clock_.now() + timeout, [&] {
    std::shared_lock index_lock(index_mutex_);
    return committed_position_ > position || !open_;
  });
  lock.unlock();
  std::shared_lock index_lock(index_mutex_);
  return committed_position_ > position;
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

void EventStore::append_async(std::string_view stream, ExpectedVersion expected,
                              std::span<const EventData> events,
                              std::function<void(Result<AppendResult>)> done) {
  if (auto ok = check_user_stream(stream); !ok) return done(ok.error());
  impl_->append_async(stream, expected, events, std::move(done));
}

void EventStore::append_system_async(std::string_view stream, ExpectedVersion expected,
                                     std::span<const EventData> events,
                                     std::function<void(Result<AppendResult>)> done) {
  if (auto ok = check_system_stream(stream); !ok) return done(ok.error());
  impl_->append_async(stream, expected, events, std::move(done));
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

EventStore::StreamList EventStore::list_streams(std::string_view prefix, std::size_t limit) {
  return impl_->list_streams(prefix, limit);
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

StoreStats EventStore::stats() const { return impl_->stats(); }
bool EventStore::wait_for(std::uint64_t position, Duration timeout) {
  return impl_->wait_for(position, timeout);
}
const StoreOptions& EventStore::options() const { return impl_->options(); }
Status EventStore::checkpoint() { return impl_->checkpoint_now(); }

}  // namespace keel::eventlog

#include "keel/resilience/bulkhead.h"

#include <cassert>

#include "keel/core/check.h"

namespace keel::resilience {
namespace {

constexpr std::uint64_t kPermitMask = 0xffff'ffff;
constexpr std::uint64_t kOneWaiter = std::uint64_t{1} << 32;

std::uint32_t free_permits(std::uint64_t state) {
  return static_cast<std::uint32_t>(state & kPermitMask);
}
std::uint32_t waiter_count(std::uint64_t state) { return static_cast<std::uint32_t>(state >> 32); }

void count(metrics::Counter* counter) {
  if (counter != nullptr) counter->inc();
}

}  // namespace

// ---- BulkheadPermit ----

BulkheadPermit& BulkheadPermit::operator=(BulkheadPermit&& other) noexcept {
  if (this != &other) {
    release();
    owner_ = std::exchange(other.owner_, nullptr);
  }
  return *this;
}

void BulkheadPermit::release() {
  if (SemaphoreBulkhead* owner = std::exchange(owner_, nullptr)) owner->release_permit();
}

// ---- SemaphoreBulkhead ----

SemaphoreBulkhead::Config SemaphoreBulkhead::read_config(const config::Node& node) {
  Config config;
  node.read("max_concurrent_calls", config.max_concurrent_calls, 1);
  node.read_ms("max_wait_ms", config.max_wait);
  node.read("max_waiting_calls", config.max_waiting_calls);
  node.expect_only({"max_concurrent_calls", "max_wait_ms", "max_waiting_calls"});
  return config;
}

SemaphoreBulkhead::SemaphoreBulkhead(std::string name, Config config, Clock& clock)
    : name_(std::move(name)), config_(config), clock_(clock), state_(config.max_concurrent_calls) {
  KEEL_CHECK(config_.max_concurrent_calls >= 1, "a bulkhead needs max_concurrent_calls >= 1");
  KEEL_CHECK(config_.max_wait >= Duration::zero(), "max_wait must not be negative");
}

SemaphoreBulkhead::~SemaphoreBulkhead() {
  // Only a misuse (a permit outliving us) leaves waiters; still, no timer may call into a
  // destroyed bulkhead and no blocked caller should hang.
  std::map<std::uint64_t, Waiter> waiters;
  {
    std::lock_guard lock(mutex_);
    waiters.swap(waiters_);
    state_.fetch_sub(kOneWaiter * waiters.size(), std::memory_order_relaxed);
  }
  for (auto& [id, waiter] : waiters) {
    if (waiter.timer != 0) clock_.cancel(waiter.timer);
  }
  for (auto& [id, waiter] : waiters) waiter.done(Rejection{errc::stopped});
  assert(free_permits(state_.load()) == config_.max_concurrent_calls &&
         "a BulkheadPermit outlived its bulkhead");
}

bool SemaphoreBulkhead::take_free_permit() {
  std::uint64_t state = state_.load(std::memory_order_relaxed);
  while (free_permits(state) > 0 && waiter_count(state) == 0) {
    if (state_.compare_exchange_weak(state, state - 1, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

Admission<BulkheadPermit> SemaphoreBulkhead::try_acquire() {
  if (take_free_permit()) {
    count(permitted_);
    return BulkheadPermit(this);
  }
  count(rejected_);
  return Rejection{errc::bulkhead_full};
}

void SemaphoreBulkhead::acquire_async(AcquireCallback done) {
  if (take_free_permit()) {
    count(permitted_);
    done(BulkheadPermit(this));
    return;
  }
  if (config_.max_wait == Duration::zero()) {
    count(rejected_);
    done(Rejection{errc::bulkhead_full});
    return;
  }

  std::unique_lock lock(mutex_);
  // Taking a permit and joining the queue are decided by one compare-and-swap on the word a
  // releaser reads, so a release either frees a permit we then see, or sees us waiting and
  // takes the lock to serve us — after we are in `waiters_`, since we hold the lock.
  std::uint64_t state = state_.load(std::memory_order_relaxed);
  for (;;) {
    if (free_permits(state) > 0 && waiter_count(state) == 0) {
      if (state_.compare_exchange_weak(state, state - 1, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        lock.unlock();
        count(permitted_);
        done(BulkheadPermit(this));
        return;
      }
      continue;
    }
    if (waiter_count(state) >= config_.max_waiting_calls) {
      lock.unlock();
      count(rejected_);
      done(Rejection{errc::bulkhead_full});
      return;
    }
    if (state_.compare_exchange_weak(state, state + kOneWaiter, std::memory_order_relaxed)) break;
  }

  std::uint64_t id = next_waiter_id_++;
  Waiter& waiter = waiters_[id];
  waiter.done = std::move(done);
  // Scheduling under our lock is safe (the clock never calls back while holding its own lock)
  // and means the timer cannot fire before `waiter.timer` is set.
  TimePoint now = clock_.now();
  if (config_.max_wait < TimePoint::max() - now) {
    waiter.timer = clock_.schedule_at(now + config_.max_wait, [this, id] { on_wait_timeout(id); });
  }
}

Admission<BulkheadPermit> SemaphoreBulkhead::acquire() {
  if (take_free_permit()) {
    count(permitted_);
    return BulkheadPermit(this);
  }
  if (config_.max_wait == Duration::zero()) {
    count(rejected_);
    return Rejection{errc::bulkhead_full};
  }
  auto promise = std::make_shared<std::promise<Admission<BulkheadPermit>>>();
  std::future<Admission<BulkheadPermit>> outcome = promise->get_future();
  acquire_async(
      [promise](Admission<BulkheadPermit> admission) { promise->set_value(std::move(admission)); });
  return outcome.get();
}

void SemaphoreBulkhead::release_permit() {
  std::uint64_t state = state_.load(std::memory_order_relaxed);
  while (waiter_count(state) == 0) {
    if (state_.compare_exchange_weak(state, state + 1, std::memory_order_release,
                                     std::memory_order_relaxed)) {
      return;
    }
  }

  std::unique_lock lock(mutex_);
  if (waiters_.empty()) {
    // The waiters we saw timed out meanwhile; nobody can queue while we hold the lock.
    state_.fetch_add(1, std::memory_order_release);
    return;
  }
  auto oldest = waiters_.begin();
  Waiter waiter = std::move(oldest->second);
  waiters_.erase(oldest);
  state_.fetch_sub(kOneWaiter, std::memory_order_acq_rel);
  metrics::Counter* permitted = permitted_;
  lock.unlock();

  // Outside the lock: cancel() may wait for a timer callback that is waiting for our lock.
  if (waiter.timer != 0) clock_.cancel(waiter.timer);
  count(permitted);
  waiter.done(BulkheadPermit(this));
}

void SemaphoreBulkhead::on_wait_timeout(std::uint64_t waiter_id) {
  std::unique_lock lock(mutex_);
  auto it = waiters_.find(waiter_id);
  if (it == waiters_.end()) return;  // served just before the timer fired
  AcquireCallback done = std::move(it->second.done);
  waiters_.erase(it);
  state_.fetch_sub(kOneWaiter, std::memory_order_relaxed);
  metrics::Counter* timed_out = timed_out_;
  lock.unlock();

  count(timed_out);
  done(Rejection{errc::bulkhead_timeout});
}

std::uint32_t SemaphoreBulkhead::available_permits() const {
  return free_permits(state_.load(std::memory_order_relaxed));
}

std::uint32_t SemaphoreBulkhead::waiting_calls() const {
  return waiter_count(state_.load(std::memory_order_relaxed));
}

void SemaphoreBulkhead::bind_metrics(metrics::Registry& registry) {
  const metrics::Labels labels = {{"bulkhead", name_}};
  auto calls = [&](const char* result) {
    return &registry.counter("keel_bulkhead_calls_total",
                             "Calls to a semaphore bulkhead, by whether they got a permit.",
                             {{"bulkhead", name_}, {"result", result}});
  };
  permitted_ = calls("permitted");
  rejected_ = calls("rejected");
  timed_out_ = calls("timed_out");
  gauges_.push_back(registry.gauge_callback("keel_bulkhead_available_permits",
                                            "Permits a semaphore bulkhead can still grant.", labels,
                                            [this] { return available_permits(); }));
  gauges_.push_back(registry.gauge_callback(
      "keel_bulkhead_max_allowed", "The most concurrent calls a semaphore bulkhead admits.", labels,
      [this] { return config_.max_concurrent_calls; }));
  gauges_.push_back(registry.gauge_callback("keel_bulkhead_waiting_calls",
                                            "Callers waiting for a semaphore bulkhead permit.",
                                            labels, [this] { return waiting_calls(); }));
}

// ---- ThreadPoolBulkhead ----

ThreadPoolBulkhead::Config ThreadPoolBulkhead::read_config(const config::Node& node) {
  Config config;
  node.read("threads", config.threads, 1);
  node.read("queue_capacity", config.queue_capacity, 1);
  node.expect_only({"threads", "queue_capacity"});
  return config;
}

ThreadPoolBulkhead::ThreadPoolBulkhead(std::string name, Config config)
    : name_(std::move(name)), config_(config) {
  KEEL_CHECK(config_.threads >= 1, "a thread-pool bulkhead needs threads >= 1");
  KEEL_CHECK(config_.queue_capacity >= 1, "a thread-pool bulkhead needs queue_capacity >= 1");
  workers_.reserve(config_.threads);
  for (std::uint32_t i = 0; i < config_.threads; ++i)
    workers_.emplace_back([this] { run_worker(); });
}

ThreadPoolBulkhead::~ThreadPoolBulkhead() { stop(); }

std::optional<Rejection> ThreadPoolBulkhead::enqueue(detail::MoveOnlyTask task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= config_.queue_capacity) {
      count(rejected_);
      return Rejection{stopping_ ? errc::stopped : errc::bulkhead_full};
    }
    queue_.push_back(std::move(task));
  }
  work_available_.notify_one();
  count(permitted_);
  return std::nullopt;
}

void ThreadPoolBulkhead::run_worker() {
  for (;;) {
    detail::MoveOnlyTask task;
    {
      std::unique_lock lock(mutex_);
      work_available_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      active_.fetch_add(1, std::memory_order_relaxed);
    }
    task();  // a packaged_task: exceptions land in its future
    active_.fetch_sub(1, std::memory_order_relaxed);
  }
}

void ThreadPoolBulkhead::stop(bool run_queued) {
  std::deque<detail::MoveOnlyTask> dropped;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (!run_queued) dropped.swap(queue_);
  }
  work_available_.notify_all();
  dropped.clear();

  std::lock_guard join_lock(join_mutex_);
  for (std::thread& worker : workers_) {
    KEEL_CHECK(worker.get_id() != std::this_thread::get_id(),
               "ThreadPoolBulkhead::stop() called from one of its own tasks");
    if (worker.joinable()) worker.join();
  }
}

std::uint32_t ThreadPoolBulkhead::queue_depth() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::uint32_t>(queue_.size());
}

std::uint32_t ThreadPoolBulkhead::remaining_queue_capacity() const {
  return config_.queue_capacity - queue_depth();
}

void ThreadPoolBulkhead::bind_metrics(metrics::Registry& registry) {
  const metrics::Labels labels = {{"bulkhead", name_}};
  auto calls = [&](const char* result) {
    return &registry.counter("keel_thread_pool_bulkhead_calls_total",
                             "Tasks submitted to a thread-pool bulkhead, by whether they were "
                             "queued.",
                             {{"bulkhead", name_}, {"result", result}});
  };
  permitted_ = calls("permitted");
  rejected_ = calls("rejected");
  auto gauge = [&](const char* name, const char* help, std::function<double()> read) {
    gauges_.push_back(registry.gauge_callback(name, help, labels, std::move(read)));
  };
  gauge("keel_thread_pool_bulkhead_queue_depth", "Tasks waiting for a worker.",
        [this] { return queue_depth(); });
  gauge("keel_thread_pool_bulkhead_queue_capacity", "The most tasks that may wait for a worker.",
        [this] { return config_.queue_capacity; });
  gauge("keel_thread_pool_bulkhead_remaining_queue_capacity",
        "Tasks that may still be queued before submissions are rejected.",
        [this] { return remaining_queue_capacity(); });
  gauge("keel_thread_pool_bulkhead_active_threads", "Workers running a task.",
        [this] { return active_threads(); });
  gauge("keel_thread_pool_bulkhead_threads", "Worker threads of a thread-pool bulkhead.",
        [this] { return config_.threads; });
}

}  // namespace keel::resilience

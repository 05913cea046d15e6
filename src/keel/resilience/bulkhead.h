// Bulkheads: cap how much of a process one dependency can occupy, so that a slow dependency
// fills its own compartment instead of sinking every thread and connection.
//
// Two kinds, after resilience4j's:
//
//   SemaphoreBulkhead   at most `max_concurrent_calls` calls in flight. A caller with no permit
//                       may wait, in FIFO order, up to `max_wait`, in a queue bounded by
//                       `max_waiting_calls`. The caller makes the call on its own thread.
//   ThreadPoolBulkhead  a fixed set of worker threads fed from a bounded queue. The call runs
//                       on a worker; the caller gets a std::future.
//
// Decide → act → record: both refuse with a `Rejection` (errc::bulkhead_full,
// errc::bulkhead_timeout, errc::stopped) instead of throwing or blocking without bound.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/config.h"
#include "keel/core/metrics.h"
#include "keel/core/thread_stripe.h"
#include "keel/resilience/outcome.h"

namespace keel::resilience {

class SemaphoreBulkhead;

// The right to occupy one slot of a SemaphoreBulkhead. Move-only; the slot is given back by
// `release()` or by the destructor, whichever comes first. A default-constructed or moved-from
// permit is empty and releases nothing. A permit must not outlive its bulkhead.
class BulkheadPermit {
 public:
  BulkheadPermit() = default;
  BulkheadPermit(BulkheadPermit&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
  // Releases the slot this permit held, if any, then takes `other`'s.
  BulkheadPermit& operator=(BulkheadPermit&& other) noexcept;
  BulkheadPermit(const BulkheadPermit&) = delete;
  BulkheadPermit& operator=(const BulkheadPermit&) = delete;
  ~BulkheadPermit() { release(); }

  // Gives the slot back (to the oldest waiter, if any). Idempotent.
  void release();
  bool held() const { return owner_ != nullptr; }

 private:
  friend class SemaphoreBulkhead;
  explicit BulkheadPermit(SemaphoreBulkhead* owner) : owner_(owner) {}
  SemaphoreBulkhead* owner_ = nullptr;
};

// Limits concurrent calls with a fair semaphore.
//
// Fairness: waiters are served strictly in arrival order, and while anyone waits a new caller
// cannot take a freed slot ahead of them: `try_acquire()` is rejected and `acquire_async()` /
// `acquire()` join the back of the queue. A released slot goes straight to the oldest waiter.
//
// Cost: when nobody waits, `try_acquire()` and `BulkheadPermit::release()` are one
// compare-and-swap on one atomic word each — no lock, no allocation. The lock is taken only to
// queue a waiter, or by a release that has a waiter to serve.
//
// Thread-safety: every method may be called from any thread, except `bind_metrics()`, which
// belongs at set-up before the bulkhead is shared. Callbacks of `acquire_async()` run outside
// the bulkhead's lock, so they may acquire or release permits themselves.
//
// Lifetime: every permit must be released before the bulkhead is destroyed (so nobody can be
// waiting then either).
class SemaphoreBulkhead {
 public:
  struct Config {
    std::uint32_t max_concurrent_calls = 25;
    // How long a caller may wait for a permit; zero never waits.
    Duration max_wait = Duration::zero();
    // Callers allowed to wait at once; beyond it acquiring fails at once with bulkhead_full.
    std::uint32_t max_waiting_calls = 1000;
  };

  // Reads max_concurrent_calls (at least 1), max_wait_ms and max_waiting_calls from `node` over
  // the defaults above. Mistakes (wrong types, out-of-range values, unknown fields) are
  // recorded in the node's document; check `Document::status()` afterwards.
  static Config read_config(const config::Node& node);

  // `clock` times out waiters and must outlive the bulkhead. Aborts when
  // max_concurrent_calls is 0 or max_wait is negative.
  SemaphoreBulkhead(std::string name, Config config, Clock& clock);
  ~SemaphoreBulkhead();
  SemaphoreBulkhead(const SemaphoreBulkhead&) = delete;
  SemaphoreBulkhead& operator=(const SemaphoreBulkhead&) = delete;

  // Takes a permit if one is free and nobody waits; never waits. Otherwise bulkhead_full.
  Admission<BulkheadPermit> try_acquire();

  using AcquireCallback = std::function<void(Admission<BulkheadPermit>)>;
  // Calls `done` exactly once with a permit or a rejection:
  //  - at once, on this thread, with a permit when one is free and nobody waits;
  //  - at once, on this thread, with bulkhead_full when max_wait is zero or the wait queue
  //    holds max_waiting_calls callers;
  //  - later, on the releasing thread, with a permit when a slot is handed over;
  //  - later, on the clock's timer thread, with bulkhead_timeout after max_wait.
  void acquire_async(AcquireCallback done);

  // Like acquire_async(), but blocks the calling thread until the outcome is known. The
  // time-out is the clock's timer, so under a ManualClock the thread stays blocked until
  // another thread advances the clock past max_wait or releases a permit.
  Admission<BulkheadPermit> acquire();

  std::uint32_t available_permits() const;
  std::uint32_t waiting_calls() const;
  const std::string& name() const { return name_; }
  const Config& config() const { return config_; }

  // Registers, labelled bulkhead="<name>": gauges keel_bulkhead_available_permits,
  // keel_bulkhead_max_allowed and keel_bulkhead_waiting_calls, and the counter
  // keel_bulkhead_calls_total{result="permitted|rejected|timed_out"}. The gauges are
  // unregistered when the bulkhead is destroyed; `registry` must outlive it. Call once.
  void bind_metrics(metrics::Registry& registry);

 private:
  friend class BulkheadPermit;
  struct Waiter {
    AcquireCallback done;
    TimerId timer = 0;
  };

  bool take_free_permit();
  void release_permit();
  void on_wait_timeout(std::uint64_t waiter_id);

  const std::string name_;
  const Config config_;
  Clock& clock_;

  // Low 32 bits: free permits. High 32 bits: callers waiting. Invariant: while anyone waits,
  // no permit is free (a release hands its slot over instead of freeing it). The waiter count
  // changes only under `mutex_`, together with `waiters_`.
  alignas(kNoFalseSharing) std::atomic<std::uint64_t> state_;

  alignas(kNoFalseSharing) mutable std::mutex mutex_;
  std::map<std::uint64_t, Waiter> waiters_;  // by arrival; the oldest first
  std::uint64_t next_waiter_id_ = 0;

  metrics::Counter* permitted_ = nullptr;
  metrics::Counter* rejected_ = nullptr;
  metrics::Counter* timed_out_ = nullptr;
  // Last, so the gauges are unregistered before anything they read is destroyed.
  std::vector<metrics::CallbackRegistration> gauges_;
};

namespace detail {

// A move-only `void()` callable: std::function needs copyable targets, and a
// std::packaged_task is not copyable.
class MoveOnlyTask {
 public:
  MoveOnlyTask() = default;
  template <typename F>
  requires(!std::is_same_v<std::decay_t<F>, MoveOnlyTask>) explicit MoveOnlyTask(F&& callable)
      : callable_(std::make_unique<Model<std::decay_t<F>>>(std::forward<F>(callable))) {}

  void operator()() { callable_->call(); }
  explicit operator bool() const { return callable_ != nullptr; }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual void call() = 0;
  };
  template <typename F>
  struct Model final : Concept {
    template <typename G>
    explicit Model(G&& target) : callable(std::forward<G>(target)) {}
    void call() override { callable(); }
    F callable;
  };
  std::unique_ptr<Concept> callable_;
};

}  // namespace detail

// Runs calls on a fixed set of worker threads fed from a bounded FIFO queue, so a dependency
// can never occupy more than `threads` threads nor hold more than `queue_capacity` calls
// waiting.
//
// Thread-safety: every method may be called from any thread, except `bind_metrics()` (set-up
// only) and `stop()`, which must not be called from one of the pool's own tasks.
class ThreadPoolBulkhead {
 public:
  struct Config {
    std::uint32_t threads = 4;
    // Calls waiting for a worker (not counting those running); at least 1.
    std::uint32_t queue_capacity = 100;
  };

  // Reads threads and queue_capacity (each at least 1) from `node` over the defaults; mistakes
  // are recorded in the node's document.
  static Config read_config(const config::Node& node);

  // Starts the worker threads. Aborts when threads or queue_capacity is 0.
  ThreadPoolBulkhead(std::string name, Config config);
  // Calls stop(): queued tasks still run.
  ~ThreadPoolBulkhead();
  ThreadPoolBulkhead(const ThreadPoolBulkhead&) = delete;
  ThreadPoolBulkhead& operator=(const ThreadPoolBulkhead&) = delete;

  template <typename F>
  using TaskResult = std::invoke_result_t<std::decay_t<F>&>;

  // Queues `task` to run on a worker. Its result, or the exception it threw, arrives in the
  // future. Rejected with bulkhead_full when the queue is full and with errc::stopped after
  // stop(); a rejected task is destroyed without running.
  template <typename F>
  Admission<std::future<TaskResult<F>>> submit(F&& task) {
    std::packaged_task<TaskResult<F>()> packaged(std::forward<F>(task));
    std::future<TaskResult<F>> result = packaged.get_future();
    if (std::optional<Rejection> rejection = enqueue(detail::MoveOnlyTask(std::move(packaged)))) {
      return *rejection;
    }
    return Admission<std::future<TaskResult<F>>>(std::move(result));
  }

  // Stops accepting tasks; then runs every queued task (`run_queued`) or destroys them, which
  // makes their futures throw std::future_error(broken_promise); then waits for the workers to
  // finish and joins them. Idempotent; a later call may still drop what an earlier one left
  // queued.
  void stop(bool run_queued = true);

  std::uint32_t queue_depth() const;
  std::uint32_t remaining_queue_capacity() const;
  // Workers running a task right now.
  std::uint32_t active_threads() const { return active_.load(std::memory_order_relaxed); }
  const std::string& name() const { return name_; }
  const Config& config() const { return config_; }

  // Registers, labelled bulkhead="<name>": gauges keel_thread_pool_bulkhead_queue_depth,
  // keel_thread_pool_bulkhead_queue_capacity, keel_thread_pool_bulkhead_remaining_queue_capacity,
  // keel_thread_pool_bulkhead_active_threads and keel_thread_pool_bulkhead_threads, and the
  // counter keel_thread_pool_bulkhead_calls_total{result="permitted|rejected"}. `registry` must
  // outlive the bulkhead. Call once.
  void bind_metrics(metrics::Registry& registry);

 private:
  // Empty when queued.
  std::optional<Rejection> enqueue(detail::MoveOnlyTask task);
  void run_worker();

  const std::string name_;
  const Config config_;

  mutable std::mutex mutex_;
  std::condition_variable work_available_;
  std::deque<detail::MoveOnlyTask> queue_;
  bool stopping_ = false;
  std::atomic<std::uint32_t> active_{0};

  std::mutex join_mutex_;  // one stop() joins at a time
  std::vector<std::thread> workers_;

  metrics::Counter* permitted_ = nullptr;
  metrics::Counter* rejected_ = nullptr;
  std::vector<metrics::CallbackRegistration> gauges_;
};

}  // namespace keel::resilience

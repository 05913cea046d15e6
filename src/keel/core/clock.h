// Time as a dependency. Library code never reads the system clock directly: it takes a
// `Clock&`, so production passes `SteadyClock` and tests pass `ManualClock`, whose time moves
// only when the test says so and whose timers fire in a fixed order.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

namespace keel {

using Duration = std::chrono::nanoseconds;
// A point on a monotonic timeline. Only differences between two points mean anything.
using TimePoint = std::chrono::time_point<std::chrono::steady_clock, Duration>;

using namespace std::chrono_literals;

// Identifies a scheduled timer. Zero is never a valid id.
using TimerId = std::uint64_t;

// A monotonic clock with one-shot timers.
//
// Thread-safety: every method may be called from any thread. Timer callbacks run on the
// clock's timer thread (SteadyClock) or on the thread that advances time (ManualClock), one at
// a time, never while the clock's own lock is held, so a callback may schedule or cancel timers.
class Clock {
 public:
  virtual ~Clock() = default;

  virtual TimePoint now() const = 0;

  // Wall-clock time in nanoseconds since the Unix epoch, for timestamps people read and for
  // ages (an event's max age). Not monotonic on a real clock.
  virtual std::int64_t unix_now_ns() const = 0;

  // Runs `callback` once, at or after `deadline`. Callbacks due at the same instant run in the
  // order they were scheduled.
  virtual TimerId schedule_at(TimePoint deadline, std::function<void()> callback) = 0;

  TimerId schedule_after(Duration delay, std::function<void()> callback) {
    return schedule_at(now() + delay, std::move(callback));
  }

  // Stops a timer from firing. Returns true when it had not fired yet. When the callback is
  // running on another thread, waits for it to finish before returning false, so after
  // `cancel()` returns the callback's captures may be destroyed. Calling it from inside the
  // callback itself returns false at once.
  virtual bool cancel(TimerId id) = 0;
};

// Shared timer bookkeeping for the two clocks: pending timers ordered by (deadline, sequence).
class TimerQueue {
 public:
  TimerId add(TimePoint deadline, std::function<void()> callback);
  bool remove(TimerId id);
  bool empty() const { return by_time_.empty(); }
  std::size_t size() const { return by_time_.size(); }
  TimePoint next_deadline() const { return by_time_.begin()->first.first; }
  // Removes and returns the earliest timer.
  std::pair<TimerId, std::function<void()>> pop();

 private:
  using Key = std::pair<TimePoint, TimerId>;
  std::map<Key, std::function<void()>> by_time_;
  std::map<TimerId, TimePoint> deadline_of_;
  TimerId next_id_ = 1;
};

// The real monotonic clock. Timers run on one background thread, started on the first
// `schedule_at()` and joined by `stop()` or the destructor.
class SteadyClock final : public Clock {
 public:
  SteadyClock() = default;
  ~SteadyClock() override { stop(); }
  SteadyClock(const SteadyClock&) = delete;
  SteadyClock& operator=(const SteadyClock&) = delete;

  TimePoint now() const override { return std::chrono::steady_clock::now(); }
  std::int64_t unix_now_ns() const override {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  TimerId schedule_at(TimePoint deadline, std::function<void()> callback) override;
  bool cancel(TimerId id) override;

  // Drops every pending timer and joins the timer thread. Idempotent.
  void stop();

  // One process-wide instance for code that has no clock of its own to pass (the CLI).
  static SteadyClock& instance();

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  TimerQueue timers_;
  std::thread thread_;
  bool stopping_ = false;
  TimerId running_ = 0;
  std::thread::id running_on_;
  std::condition_variable callback_done_;
};

// A clock for tests: time stands still until `advance()` or `advance_to()`, which fire every
// timer due by the new time in deadline order, setting `now()` to each timer's deadline while
// its callback runs. Starts at an arbitrary fixed point far from zero.
class ManualClock final : public Clock {
 public:
  ManualClock();

  TimePoint now() const override;
  // Starts at 2026-01-01T00:00:00Z and moves with advance().
  std::int64_t unix_now_ns() const override;
  TimerId schedule_at(TimePoint deadline, std::function<void()> callback) override;
  bool cancel(TimerId id) override;

  void advance(Duration delta);
  void advance_to(TimePoint target);
  std::size_t pending_timers() const;

 private:
  mutable std::mutex mutex_;
  const TimePoint start_;
  TimePoint now_;
  TimerQueue timers_;
};

// Blocks the calling thread until `clock` reaches `deadline` (through the clock's own timer, so
// a ManualClock's advance() on another thread wakes it).
void sleep_until(Clock& clock, TimePoint deadline);

// Waits on `cv` until `done()` holds or `clock` reaches `deadline`, and returns done(). One
// timer serves the whole wait however often `cv` is notified. `lock` is held on entry and on
// return; the clock's timer takes its mutex to notify, so `cv` and that mutex must outlive a
// timer in flight (members of the waiting object, not locals). A stopped clock schedules no
// timer: the wait then returns at once.
template <typename Done>
bool wait_until(Clock& clock, std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
                TimePoint deadline, Done done) {
  if (done() || clock.now() >= deadline) return done();
  std::mutex& mutex = *lock.mutex();
  const TimerId timer = clock.schedule_at(deadline, [&mutex, &cv] {
    std::lock_guard wake(mutex);
    cv.notify_all();
  });
  if (timer == 0) return done();
  while (!done() && clock.now() < deadline) cv.wait(lock);
  // cancel() waits for a callback in progress, which needs the mutex: let go of it first.
  lock.unlock();
  clock.cancel(timer);
  lock.lock();
  return done();
}

// Milliseconds in a `Duration`, as a double, for logs and metrics.
inline double to_ms(Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

}  // namespace keel

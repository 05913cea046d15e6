#include "keel/core/clock.h"

#include <cassert>
#include <memory>

namespace keel {

TimerId TimerQueue::add(TimePoint deadline, std::function<void()> callback) {
  TimerId id = next_id_++;
  by_time_.emplace(Key{deadline, id}, std::move(callback));
  deadline_of_.emplace(id, deadline);
  return id;
}

bool TimerQueue::remove(TimerId id) {
  auto it = deadline_of_.find(id);
  if (it == deadline_of_.end()) return false;
  by_time_.erase(Key{it->second, id});
  deadline_of_.erase(it);
  return true;
}

std::pair<TimerId, std::function<void()>> TimerQueue::pop() {
  auto first = by_time_.begin();
  TimerId id = first->first.second;
  std::function<void()> callback = std::move(first->second);
  by_time_.erase(first);
  deadline_of_.erase(id);
  return {id, std::move(callback)};
}

// ---- SteadyClock ----

TimerId SteadyClock::schedule_at(TimePoint deadline, std::function<void()> callback) {
  std::lock_guard lock(mutex_);
  if (stopping_) return 0;
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  bool earliest = timers_.empty() || deadline < timers_.next_deadline();
  TimerId id = timers_.add(deadline, std::move(callback));
  if (earliest) wake_.notify_one();
  return id;
}

bool SteadyClock::cancel(TimerId id) {
  std::unique_lock lock(mutex_);
  if (timers_.remove(id)) return true;
  if (running_ == id && running_on_ != std::this_thread::get_id()) {
    callback_done_.wait(lock, [&] { return running_ != id; });
  }
  return false;
}

void SteadyClock::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (timers_.empty()) {
      wake_.wait(lock);
      continue;
    }
    TimePoint deadline = timers_.next_deadline();
    if (now() < deadline) {
      wake_.wait_until(lock, deadline);
      continue;
    }
    auto [id, callback] = timers_.pop();
    running_ = id;
    running_on_ = std::this_thread::get_id();
    lock.unlock();
    callback();
    lock.lock();
    running_ = 0;
    callback_done_.notify_all();
  }
}

void SteadyClock::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    while (!timers_.empty()) timers_.pop();
    wake_.notify_one();
  }
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

SteadyClock& SteadyClock::instance() {
  static SteadyClock clock;
  return clock;
}

// ---- ManualClock ----

ManualClock::ManualClock() : start_(TimePoint(std::chrono::hours(24 * 365))), now_(start_) {}

std::int64_t ManualClock::unix_now_ns() const {
  constexpr std::int64_t k2026 = 1767225600LL * 1'000'000'000LL;
  return k2026 + (now() - start_).count();
}

TimePoint ManualClock::now() const {
  std::lock_guard lock(mutex_);
  return now_;
}

TimerId ManualClock::schedule_at(TimePoint deadline, std::function<void()> callback) {
  std::lock_guard lock(mutex_);
  return timers_.add(deadline, std::move(callback));
}

bool ManualClock::cancel(TimerId id) {
  std::lock_guard lock(mutex_);
  return timers_.remove(id);
}

void ManualClock::advance(Duration delta) {
  assert(delta >= Duration::zero());
  advance_to(now() + delta);
}

void ManualClock::advance_to(TimePoint target) {
  std::unique_lock lock(mutex_);
  while (!timers_.empty() && timers_.next_deadline() <= target) {
    TimePoint deadline = timers_.next_deadline();
    if (deadline > now_) now_ = deadline;
    auto [id, callback] = timers_.pop();
    lock.unlock();
    callback();
    lock.lock();
  }
  if (target > now_) now_ = target;
}

std::size_t ManualClock::pending_timers() const {
  std::lock_guard lock(mutex_);
  return timers_.size();
}

void sleep_until(Clock& clock, TimePoint deadline) {
  if (clock.now() >= deadline) return;
  struct Wake {
    std::mutex mutex;
    std::condition_variable cv;
    bool due = false;
  };
  auto wake = std::make_shared<Wake>();
  TimerId id = clock.schedule_at(deadline, [wake] {
    std::lock_guard lock(wake->mutex);
    wake->due = true;
    wake->cv.notify_one();
  });
  if (id == 0) return;  // the clock is stopped
  std::unique_lock lock(wake->mutex);
  wake->cv.wait(lock, [&] { return wake->due; });
}

}  // namespace keel

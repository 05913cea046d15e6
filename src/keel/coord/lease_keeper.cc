#include "keel/coord/lease_keeper.h"

#include <algorithm>

namespace keel::coord {

Result<std::shared_ptr<LeaseKeeper>> LeaseKeeper::start(Coordinator& coordinator, Clock& clock,
                                                        Duration ttl, double deadline_fraction) {
  const TimePoint granted_at = clock.now();
  auto lease = coordinator.grant(ttl);
  if (!lease) return lease.error();
  std::shared_ptr<LeaseKeeper> keeper(
      new LeaseKeeper(coordinator, clock, ttl, deadline_fraction, *lease, granted_at));
  keeper->arm_deadline(granted_at);
  keeper->schedule_renewal();
  return keeper;
}

LeaseKeeper::LeaseKeeper(Coordinator& coordinator, Clock& clock, Duration ttl,
                         double deadline_fraction, LeaseId lease, TimePoint granted_at)
    : coordinator_(coordinator),
      clock_(clock),
      ttl_(ttl),
      deadline_fraction_(deadline_fraction),
      lease_(lease),
      next_renewal_(granted_at) {}

LeaseKeeper::~LeaseKeeper() { (void)release(); }

void LeaseKeeper::arm_deadline(TimePoint renewed_at) {
  std::weak_ptr<LeaseKeeper> weak = weak_from_this();
  Duration allowed = std::chrono::duration_cast<Duration>(ttl_ * deadline_fraction_);
  {
    std::lock_guard lock(mutex_);
    deadline_ = renewed_at + allowed;
  }
  TimerId timer = clock_.schedule_at(renewed_at + allowed, [weak] {
    auto alive = weak.lock();
    if (!alive) return;
    alive->mark_lost();
    // Give the lease up (if the backend can be reached) so that nobody waits for it to expire.
    (void)alive->coordinator_.revoke(alive->lease_);
  });
  TimerId old;
  {
    std::lock_guard lock(mutex_);
    old = std::exchange(deadline_timer_, timer);
  }
  if (old != 0) clock_.cancel(old);
}

void LeaseKeeper::schedule_renewal() {
  std::weak_ptr<LeaseKeeper> weak = weak_from_this();
  std::lock_guard lock(mutex_);
  if (lost_ || released_) return;  // a lost lease must be free to expire
  next_renewal_ += ttl_ / 3;
  renew_timer_ = clock_.schedule_at(next_renewal_, [weak] {
    auto alive = weak.lock();
    if (!alive || alive->lost()) return;
    const TimePoint asked_at = alive->clock_.now();
    auto renewed = alive->coordinator_.keep_alive(alive->lease_);
    if (renewed) {
      alive->arm_deadline(asked_at);
    } else if (renewed.error().is(errc::lease_not_found)) {
      alive->mark_lost();
    }  // unreachable backend: keep trying; the local deadline decides
    alive->schedule_renewal();
  });
}

bool LeaseKeeper::lost() const {
  std::lock_guard lock(mutex_);
  // The deadline also counts before its timer has run (the timer thread may be busy).
  return lost_ || clock_.now() >= deadline_;
}

Duration LeaseKeeper::time_left() const {
  std::lock_guard lock(mutex_);
  if (lost_) return Duration::zero();
  return std::max(Duration::zero(), deadline_ - clock_.now());
}

void LeaseKeeper::mark_lost() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard lock(mutex_);
    if (lost_) return;
    lost_ = true;
    callbacks.swap(on_lost_);
  }
  changed_.notify_all();
  for (auto& callback : callbacks) callback();
}

bool LeaseKeeper::wait_lost(Duration timeout) {
  std::weak_ptr<LeaseKeeper> weak = weak_from_this();
  TimerId timer = clock_.schedule_after(timeout, [weak] {
    if (auto alive = weak.lock()) alive->changed_.notify_all();
  });
  const TimePoint deadline = clock_.now() + timeout;
  {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return lost_ || clock_.now() >= deadline; });
  }
  clock_.cancel(timer);
  return lost();
}

void LeaseKeeper::on_lost(std::function<void()> callback) {
  {
    std::lock_guard lock(mutex_);
    if (!lost_) {
      on_lost_.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

Status LeaseKeeper::release() {
  TimerId renew, deadline;
  {
    std::lock_guard lock(mutex_);
    if (released_) return {};
    released_ = true;
    renew = std::exchange(renew_timer_, 0);
    deadline = std::exchange(deadline_timer_, 0);
  }
  if (renew != 0) clock_.cancel(renew);
  if (deadline != 0) clock_.cancel(deadline);
  mark_lost();
  Status revoked = coordinator_.revoke(lease_);
  if (!revoked && revoked.error().is(errc::lease_not_found)) return {};  // already gone
  return revoked;
}

}  // namespace keel::coord

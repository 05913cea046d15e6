// Keeps a lease alive for whoever holds something under it (a leader key, a membership entry):
// renews every ttl/3 at a fixed cadence from the grant, and counts the lease as lost — and
// stops renewing, and revokes it if the backend can be reached — at a local deadline
// (deadline_fraction × ttl after the last successful renewal, measured from before the
// request, so never later than the backend's own expiry), when a renewal finds the lease gone,
// or when the holder says so. Timers run on the injected clock; no thread of its own.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "keel/coord/coordinator.h"

namespace keel::coord {

class LeaseKeeper : public std::enable_shared_from_this<LeaseKeeper> {
 public:
  // Grants a lease of `ttl` and starts renewing it.
  static Result<std::shared_ptr<LeaseKeeper>> start(Coordinator& coordinator, Clock& clock,
                                                    Duration ttl, double deadline_fraction);
  ~LeaseKeeper();

  LeaseId lease() const { return lease_; }
  // True from the local deadline on, even before its timer has run.
  bool lost() const;
  // Until the local deadline, on the clock; zero once lost. What a request made on the lease's
  // behalf may wait at most (a fenced write).
  Duration time_left() const;
  // Blocks until lost or until `timeout` passes on the clock; returns lost().
  bool wait_lost(Duration timeout);
  // Called once when the lease is lost (at once if it already is).
  void on_lost(std::function<void()> callback);
  // Counts the lease as lost (the holder learned it otherwise, e.g. its key vanished).
  void mark_lost();
  // Stops renewing and revokes the lease. Idempotent.
  Status release();

 private:
  LeaseKeeper(Coordinator& coordinator, Clock& clock, Duration ttl, double deadline_fraction,
              LeaseId lease, TimePoint granted_at);
  void arm_deadline(TimePoint renewed_at);
  void schedule_renewal();

  Coordinator& coordinator_;
  Clock& clock_;
  const Duration ttl_;
  const double deadline_fraction_;
  const LeaseId lease_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  bool lost_ = false;
  bool released_ = false;
  std::vector<std::function<void()>> on_lost_;
  TimerId renew_timer_ = 0;
  TimerId deadline_timer_ = 0;
  TimePoint next_renewal_;
  TimePoint deadline_ = TimePoint::max();  // lost from then on unless renewed
};

}  // namespace keel::coord

// Rate limiters: how many calls may start per unit of time, whatever their duration (a
// bulkhead bounds how many run at once). Both follow decide → act; there is nothing to record
// afterwards, so the permit is an empty token.
//
//   TokenBucket limiter("upstream", {.rate_per_second = 50, .burst = 10}, clock);
//   if (auto admission = limiter.try_acquire(); !admission) {
//     return admission.rejection().to_error(limiter.name(), clock.now());  // rate_limited
//   }
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "keel/core/clock.h"
#include "keel/core/config.h"
#include "keel/core/metrics.h"
#include "keel/core/thread_stripe.h"
#include "keel/resilience/outcome.h"

namespace keel::resilience {

// What an admitted call holds. Nothing to give back: a rate is spent when the call starts.
namespace detail {
// The series both limiters expose, bound by bind_metrics(); counting is a no-op until then.
struct RateLimiterMetrics {
  metrics::Counter* permitted = nullptr;
  metrics::Counter* rejected = nullptr;
  metrics::CallbackRegistration available;

  void bind(metrics::Registry& registry, const std::string& name,
            std::function<double()> read_available);
  void count(bool admitted) const {
    if (metrics::Counter* counter = admitted ? permitted : rejected) counter->inc();
  }
};
}  // namespace detail

struct RateToken {};

// A token bucket, implemented as the Generic Cell Rate Algorithm: the whole state is one
// atomic "theoretical arrival time" in nanoseconds, moved forward by compare-and-swap, so
// try_acquire() is lock-free, never allocates, and is exact to the nanosecond. The bucket holds
// up to `burst` tokens, refills at `rate_per_second`, and starts full. Each token costs
// round(1e9 / rate_per_second) ns of refill, so the rate is exact to within 0.5 ns per token.
//
// Thread-safe: every method may be called from any thread. The clock is borrowed and must
// outlive the bucket.
class TokenBucket {
 public:
  struct Config {
    // Refill rate; above 0 and at most 1e9 (one token per nanosecond).
    double rate_per_second = 100;
    // Capacity, at least 1: how many tokens may be taken at once after a quiet spell.
    // burst / rate_per_second (the time to refill from empty) must be at most 1e8 s.
    std::uint32_t burst = 100;
  };

  // Aborts on a config read_config() would reject.
  TokenBucket(std::string name, Config config, Clock& clock);
  TokenBucket(const TokenBucket&) = delete;
  TokenBucket& operator=(const TokenBucket&) = delete;

  // Takes `tokens` now, or nothing. On refusal the Rejection is errc::rate_limited with
  // retry_at = when enough tokens will have been refilled (if nobody else takes them), or
  // TimePoint::max() when `tokens` > burst, which can never succeed. Zero tokens always succeed.
  Admission<RateToken> try_acquire(std::uint32_t tokens = 1);

  // Tokens in the bucket now, from 0 to burst (fractional while refilling).
  double available() const;

  const std::string& name() const { return name_; }
  const Config& config() const { return config_; }

  // Registers keel_rate_limiter_calls_total{limiter=<name>, result="permitted"|"rejected"} and
  // keel_rate_limiter_available{limiter=<name>} (read at scrape time). Call once, before the
  // bucket is shared between threads; the registry must outlive the bucket.
  void bind_metrics(metrics::Registry& registry);

  // Reads rate_per_second (> 0) and burst (>= 1) over the defaults; errors are recorded in the
  // node's document.
  static Config read_config(const config::Node& node);

 private:
  const std::string name_;
  const Config config_;
  Clock& clock_;
  const std::int64_t interval_ns_;   // refill time of one token
  const std::int64_t tolerance_ns_;  // burst * interval_ns_: how far ahead of now TAT may run

  // Time since the clock's epoch at which the bucket will be full again; at or before now
  // means full.
  alignas(kNoFalseSharing) std::atomic<std::int64_t> theoretical_arrival_ns_;

  detail::RateLimiterMetrics metrics_;
};

// At most `limit` calls per sliding `window`, estimated from two fixed windows as Cloudflare's
// and nginx-style limiters do:
//   count = current window's calls + previous window's calls * (1 - elapsed / window)
// where `elapsed` is the time since the current fixed window began. A call is admitted when
// count + 1 <= limit (the arithmetic is exact integers).
//
// Approximate: the estimate assumes the previous window's calls were spread evenly. If they
// were bunched at its end, a true sliding window can hold up to (but never more than)
// 2 * limit calls, because every fixed window admits at most `limit`; if bunched at its start,
// calls are refused while the true count is below the limit. On real traffic Cloudflare
// measured 0.003% of requests judged wrongly. Memory is O(1) per limiter.
//
// Thread-safe: a short mutex guards the three counters (they change together and need more
// than 64 bits). The clock is borrowed and must outlive the limiter.
class SlidingWindowLimiter {
 public:
  struct Config {
    std::uint32_t limit = 100;  // at least 1
    Duration window = 1s;       // at least 1 ms
  };

  // Aborts on a config read_config() would reject.
  SlidingWindowLimiter(std::string name, Config config, Clock& clock);
  SlidingWindowLimiter(const SlidingWindowLimiter&) = delete;
  SlidingWindowLimiter& operator=(const SlidingWindowLimiter&) = delete;

  // Counts the call, or refuses it with errc::rate_limited and retry_at = the first instant at
  // which the estimate leaves room for one more call (if no other call is admitted meanwhile).
  Admission<RateToken> try_acquire();

  // limit - estimated count, at least 0: calls that would be admitted now.
  double available() const;

  const std::string& name() const { return name_; }
  const Config& config() const { return config_; }

  // As TokenBucket::bind_metrics, with the same series names.
  void bind_metrics(metrics::Registry& registry);

  // Reads limit (>= 1) and window_ms (>= 1) over the defaults; errors are recorded in the
  // node's document.
  static Config read_config(const config::Node& node);

 private:
  // Moves the fixed windows forward to the one holding `now`; returns the time elapsed in it.
  std::int64_t roll_locked(TimePoint now) const;

  const std::string name_;
  const Config config_;
  Clock& clock_;
  const TimePoint origin_;
  const std::int64_t window_ns_;

  mutable std::mutex mutex_;
  mutable std::int64_t window_index_ = 0;
  mutable std::uint64_t current_ = 0;
  mutable std::uint64_t previous_ = 0;

  detail::RateLimiterMetrics metrics_;
};

}  // namespace keel::resilience

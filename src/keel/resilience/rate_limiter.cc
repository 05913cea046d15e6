#include "keel/resilience/rate_limiter.h"

#include <algorithm>
#include <cmath>

#include "keel/core/check.h"

namespace keel::resilience {
namespace {

// Both limiters share these series, so they must register them with the same help text.
constexpr const char* kCallsName = "keel_rate_limiter_calls_total";
constexpr const char* kCallsHelp = "Calls a rate limiter permitted or rejected.";
constexpr const char* kAvailableName = "keel_rate_limiter_available";
constexpr const char* kAvailableHelp =
    "Calls a rate limiter would permit now: tokens in the bucket, or room left in the window.";

// Keeps the theoretical arrival time far from int64 overflow for any clock that has run for
// less than a century.
constexpr double kMaxRefillSeconds = 1e8;

std::int64_t since_epoch_ns(TimePoint time) { return time.time_since_epoch().count(); }
TimePoint from_epoch_ns(std::int64_t ns) { return TimePoint(Duration(ns)); }

std::int64_t interval_of(double rate_per_second) {
  return std::max<std::int64_t>(1, std::llround(1e9 / rate_per_second));
}

}  // namespace

TokenBucket::TokenBucket(std::string name, Config config, Clock& clock)
    : name_(std::move(name)),
      config_(config),
      clock_(clock),
      interval_ns_(config.rate_per_second > 0 ? interval_of(config.rate_per_second) : 0),
      tolerance_ns_(interval_ns_ * static_cast<std::int64_t>(config.burst)),
      theoretical_arrival_ns_(since_epoch_ns(clock.now())) {
  KEEL_CHECK(config_.rate_per_second > 0 && config_.rate_per_second <= 1e9,
             "rate_per_second must be above 0 and at most 1e9");
  KEEL_CHECK(config_.burst >= 1, "burst must be at least 1");
  KEEL_CHECK(config_.burst / config_.rate_per_second <= kMaxRefillSeconds,
             "burst / rate_per_second must be at most 1e8 seconds");
}

Admission<RateToken> TokenBucket::try_acquire(std::uint32_t tokens) {
  if (tokens > config_.burst) {
    metrics_.count(false);
    return Rejection{errc::rate_limited, TimePoint::max()};
  }
  const std::int64_t cost = interval_ns_ * static_cast<std::int64_t>(tokens);
  // The clock is read after the state, and again after a lost race, so `now` is never older
  // than the time a competing caller used: a caller descheduled between the two reads would
  // otherwise see the bucket as ahead of it and be refused a token that is there.
  std::int64_t arrival = theoretical_arrival_ns_.load(std::memory_order_acquire);
  for (;;) {
    const std::int64_t now = since_epoch_ns(clock_.now());
    const std::int64_t next_arrival = std::max(arrival, now) + cost;
    const std::int64_t conforming_at = next_arrival - tolerance_ns_;
    if (conforming_at > now) {
      metrics_.count(false);
      return Rejection{errc::rate_limited, from_epoch_ns(conforming_at)};
    }
    if (theoretical_arrival_ns_.compare_exchange_weak(
            arrival, next_arrival, std::memory_order_release, std::memory_order_acquire)) {
      metrics_.count(true);
      return RateToken{};
    }
  }
}

double TokenBucket::available() const {
  const std::int64_t now = since_epoch_ns(clock_.now());
  const std::int64_t arrival =
      std::max(theoretical_arrival_ns_.load(std::memory_order_relaxed), now);
  const double tokens =
      static_cast<double>(now + tolerance_ns_ - arrival) / static_cast<double>(interval_ns_);
  return std::clamp(tokens, 0.0, static_cast<double>(config_.burst));
}

void detail::RateLimiterMetrics::bind(metrics::Registry& registry, const std::string& name,
                                      std::function<double()> read_available) {
  permitted =
      &registry.counter(kCallsName, kCallsHelp, {{"limiter", name}, {"result", "permitted"}});
  rejected = &registry.counter(kCallsName, kCallsHelp, {{"limiter", name}, {"result", "rejected"}});
  available = registry.gauge_callback(kAvailableName, kAvailableHelp, {{"limiter", name}},
                                      std::move(read_available));
}

void TokenBucket::bind_metrics(metrics::Registry& registry) {
  metrics_.bind(registry, name_, [this] { return available(); });
}

TokenBucket::Config TokenBucket::read_config(const config::Node& node) {
  Config config;
  node.read("rate_per_second", config.rate_per_second, 0.0, 1e9);
  node.read("burst", config.burst, 1);
  if (config.rate_per_second <= 0) {
    node.fail("rate_per_second", "expected a number above 0");
  } else if (config.burst / config.rate_per_second > kMaxRefillSeconds) {
    node.fail("burst", "refilling the bucket (burst / rate_per_second) must take at most 1e8 s");
  }
  node.expect_only({"rate_per_second", "burst"});
  return config;
}

SlidingWindowLimiter::SlidingWindowLimiter(std::string name, Config config, Clock& clock)
    : name_(std::move(name)),
      config_(config),
      clock_(clock),
      origin_(clock.now()),
      window_ns_(config.window.count()) {
  KEEL_CHECK(config_.limit >= 1, "limit must be at least 1");
  KEEL_CHECK(config_.window >= 1ms, "window must be at least 1 ms");
}

std::int64_t SlidingWindowLimiter::roll_locked(TimePoint now) const {
  const std::int64_t since_origin = (now - origin_).count();
  const std::int64_t index = since_origin / window_ns_;
  if (index == window_index_ + 1) {
    previous_ = current_;
    current_ = 0;
  } else if (index > window_index_ + 1) {
    previous_ = 0;
    current_ = 0;
  }
  window_index_ = std::max(window_index_, index);
  // Zero when another thread already rolled past the time this caller read.
  return std::max<std::int64_t>(0, since_origin - window_index_ * window_ns_);
}

Admission<RateToken> SlidingWindowLimiter::try_acquire() {
  using Wide = __int128;  // limit * window in ns does not fit in 64 bits
  const TimePoint now = clock_.now();
  std::unique_lock lock(mutex_);
  const std::int64_t elapsed = roll_locked(now);
  const Wide window = window_ns_;
  const Wide limit = config_.limit;
  const Wide current = current_;
  const Wide previous = previous_;
  // count + 1 <= limit, multiplied through by the window.
  if ((current + 1) * window + previous * (window - elapsed) <= limit * window) {
    ++current_;
    lock.unlock();
    metrics_.count(true);
    return RateToken{};
  }

  // The earliest elapsed time e at which previous' * (window - e) <= room * window holds, in
  // this window while it still has room for one more call, otherwise in the next one (where
  // this window's calls become the previous ones).
  const TimePoint window_start = origin_ + Duration(window_index_ * window_ns_);
  Wide start_of_search = 0;
  Wide decaying = previous;
  Wide room = limit - current - 1;
  if (current + 1 > limit) {
    start_of_search = window;
    decaying = current;
    room = limit - 1;
  }
  lock.unlock();
  const Wide wait_in_window = window - (room * window) / decaying;
  const auto retry_offset = static_cast<std::int64_t>(start_of_search + wait_in_window);
  metrics_.count(false);
  return Rejection{errc::rate_limited, window_start + Duration(retry_offset)};
}

double SlidingWindowLimiter::available() const {
  const TimePoint now = clock_.now();
  std::lock_guard lock(mutex_);
  const std::int64_t elapsed = roll_locked(now);
  const double weight = static_cast<double>(window_ns_ - elapsed) / static_cast<double>(window_ns_);
  const double estimate = static_cast<double>(current_) + static_cast<double>(previous_) * weight;
  return std::max(0.0, static_cast<double>(config_.limit) - estimate);
}

void SlidingWindowLimiter::bind_metrics(metrics::Registry& registry) {
  metrics_.bind(registry, name_, [this] { return available(); });
}

SlidingWindowLimiter::Config SlidingWindowLimiter::read_config(const config::Node& node) {
  Config config;
  node.read("limit", config.limit, 1);
  node.read_ms("window_ms", config.window, 1ms, 24h);
  node.expect_only({"limit", "window_ms"});
  return config;
}

}  // namespace keel::resilience

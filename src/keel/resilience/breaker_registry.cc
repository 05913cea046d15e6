#include "keel/resilience/breaker_registry.h"

#include <mutex>

namespace keel::resilience {

BreakerRegistry::BreakerRegistry(Clock& clock, Options options)
    : clock_(clock), options_(std::move(options)), last_sweep_(clock.now()) {}

Result<std::shared_ptr<CircuitBreaker>> BreakerRegistry::get(std::string_view name) {
  return get(name, options_.defaults);
}

Result<std::shared_ptr<CircuitBreaker>> BreakerRegistry::get(std::string_view name,
                                                             const CircuitBreakerConfig& config) {
  const TimePoint now = clock_.now();
  const std::int64_t now_ns = now.time_since_epoch().count();
  {
    std::shared_lock lock(mutex_);
    auto it = entries_.find(name);
    if (it != entries_.end()) {
      it->second->last_used_ns.store(now_ns, std::memory_order_relaxed);
      return it->second->breaker;
    }
  }
  std::unique_lock lock(mutex_);
  auto it = entries_.find(name);
  if (it != entries_.end()) {
    it->second->last_used_ns.store(now_ns, std::memory_order_relaxed);
    return it->second->breaker;
  }
  if (now - last_sweep_ >= options_.idle_ttl / 2 || entries_.size() >= options_.max_breakers) {
    evict_idle_locked(now);
  }
  if (entries_.size() >= options_.max_breakers) {
    return Error(errc::bulkhead_full,
                 "breaker registry holds " + std::to_string(entries_.size()) +
                     " breakers (max_breakers) and none is idle; cannot create '" +
                     std::string(name) + "'");
  }
  auto entry = std::make_unique<Entry>();
  entry->breaker = std::make_shared<CircuitBreaker>(std::string(name), config, clock_);
  if (options_.metrics != nullptr) entry->breaker->bind_metrics(*options_.metrics);
  entry->last_used_ns.store(now_ns, std::memory_order_relaxed);
  auto breaker = entry->breaker;
  entries_.emplace(std::string(name), std::move(entry));
  return breaker;
}

std::size_t BreakerRegistry::evict_idle() {
  std::unique_lock lock(mutex_);
  return evict_idle_locked(clock_.now());
}

std::size_t BreakerRegistry::evict_idle_locked(TimePoint now) {
  last_sweep_ = now;
  const std::int64_t cutoff = (now - options_.idle_ttl).time_since_epoch().count();
  std::size_t evicted = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const Entry& entry = *it->second;
    BreakerState state = entry.breaker->state();
    bool quiet = state == BreakerState::kClosed || state == BreakerState::kDisabled ||
                 state == BreakerState::kMetricsOnly;
    if (quiet && entry.breaker.use_count() == 1 &&
        entry.last_used_ns.load(std::memory_order_relaxed) <= cutoff) {
      it = entries_.erase(it);
      ++evicted;
    } else {
      ++it;
    }
  }
  return evicted;
}

std::size_t BreakerRegistry::size() const {
  std::shared_lock lock(mutex_);
  return entries_.size();
}

}  // namespace keel::resilience

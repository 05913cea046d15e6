// Named circuit breakers created on first use: one breaker per upstream host, per tenant or
// per route key, with breakers that have sat idle evicted so the set stays bounded.
//
//   BreakerRegistry registry(clock, {.defaults = config, .idle_ttl = 10min});
//   auto breaker = registry.get("payments.eu-1");
//   if (!breaker) ...  // registry full of busy breakers
//   auto admission = (*breaker)->acquire();
//
// Thread-safety: all methods may be called from any thread. Lookups of existing breakers take
// a shared lock only.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/core/result.h"
#include "keel/resilience/circuit_breaker.h"

namespace keel::resilience {

class BreakerRegistry {
 public:
  struct Options {
    CircuitBreakerConfig defaults;
    // A breaker unused for this long, held by no caller, and CLOSED (or DISABLED or
    // METRICS_ONLY) may be evicted. An OPEN breaker is never evicted: forgetting it would send
    // traffic to a dependency known to be failing.
    Duration idle_ttl = std::chrono::minutes(10);
    std::uint32_t max_breakers = 10000;
    // When set, each breaker created is bound to it (see CircuitBreaker::bind_metrics).
    metrics::Registry* metrics = nullptr;
  };

  BreakerRegistry(Clock& clock, Options options);

  // The breaker named `name`, created with the default config on first use. Fails with
  // errc::bulkhead_full when max_breakers exist and none can be evicted.
  Result<std::shared_ptr<CircuitBreaker>> get(std::string_view name);
  // As above, creating it with `config` (ignored when it exists already).
  Result<std::shared_ptr<CircuitBreaker>> get(std::string_view name,
                                              const CircuitBreakerConfig& config);

  // Evicts breakers idle past idle_ttl; returns how many. Also done lazily by get().
  std::size_t evict_idle();
  std::size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<CircuitBreaker> breaker;
    std::atomic<std::int64_t> last_used_ns{0};
  };
  std::size_t evict_idle_locked(TimePoint now);

  Clock& clock_;
  const Options options_;
  mutable std::shared_mutex mutex_;
  std::map<std::string, std::unique_ptr<Entry>, std::less<>> entries_;
  TimePoint last_sweep_;
};

}  // namespace keel::resilience

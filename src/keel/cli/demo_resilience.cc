#include <algorithm>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

#include "keel/cli/demo.h"
#include "keel/core/clock.h"
#include "keel/core/config.h"
#include "keel/core/random.h"
#include "keel/resilience/bulkhead.h"
#include "keel/resilience/circuit_breaker.h"
#include "keel/resilience/pipeline.h"
#include "keel/resilience/retry.h"

namespace keel::cli {
namespace {

using namespace keel::resilience;
using keel::resilience::errc;

// The settings `make demo` uses; examples/demo/resilience.yaml holds the same values.
constexpr const char* kBuiltInConfig = R"(
bulkhead:
  max_concurrent_calls: 8
  max_wait_ms: 0
circuit_breaker:
  window_size: 20
  minimum_calls: 10
  failure_rate_threshold: 50
  slow_call_rate_threshold: 80
  slow_call_duration_ms: 200
  open_duration_ms: 1500
  open_backoff_multiplier: 1.5
  max_open_duration_ms: 3000
  half_open_permitted_calls: 3
  half_open_max_wait_ms: 1000
retry:
  max_attempts: 2
  backoff: exponential
  base_backoff_ms: 20
  max_backoff_ms: 100
  jitter: 0.5
  per_attempt_timeout_ms: 250
retry_budget:
  budget_ratio: 0.2
  min_retries_per_second: 3
  window_ms: 10000
)";

struct Settings {
  SemaphoreBulkhead::Config bulkhead;
  CircuitBreakerConfig breaker;
  RetryConfig retry;
  RetryBudget::Config budget;
};

Result<Settings> load_settings(const DemoOptions& options) {
  auto document = options.config_path.empty()
                      ? config::Document::parse(kBuiltInConfig, "built-in demo config")
                      : config::Document::load_file(options.config_path);
  if (!document) return document.error();
  config::Node root = document->root();
  Settings settings;
  settings.bulkhead = SemaphoreBulkhead::read_config(root.child("bulkhead"));
  settings.breaker = CircuitBreakerConfig::read(root.child("circuit_breaker"));
  settings.retry = RetryPolicy::read_config(root.child("retry"));
  settings.budget = RetryBudget::read_config(root.child("retry_budget"));
  root.expect_only({"bulkhead", "circuit_breaker", "retry", "retry_budget"});
  if (auto status = document->status(); !status) return status.error();
  return settings;
}

// A dependency that is healthy, then slows down, then fails outright, then recovers.
class FlakyDependency {
 public:
  FlakyDependency(Clock& clock, TimePoint start, Duration total, std::uint64_t seed)
      : clock_(clock), start_(start), total_(total), random_(seed) {}

  struct Phase {
    const char* name;
    double error_rate;
    Duration min_latency;
    Duration max_latency;
  };

  const Phase& phase(TimePoint now) const {
    static const Phase kHealthy{"healthy: 2% errors, 10-30 ms", 0.02, 10ms, 30ms};
    static const Phase kSlow{"slow: 10% errors, 100-400 ms", 0.10, 100ms, 400ms};
    static const Phase kFailing{"failing: 70% errors, 50-400 ms", 0.70, 50ms, 400ms};
    Duration elapsed = now - start_;
    if (elapsed < total_ * 4 / 15) return kHealthy;
    if (elapsed < total_ * 7 / 15) return kSlow;
    if (elapsed < total_ * 10 / 15) return kFailing;
    return kHealthy;
  }

  Status call(const CallContext& context) {
    TimePoint now = clock_.now();
    const Phase& current = phase(now);
    double failure_roll, latency_roll;
    {
      std::lock_guard lock(mutex_);
      failure_roll = random_.uniform01();
      latency_roll = random_.uniform01();
    }
    Duration latency =
        current.min_latency + std::chrono::duration_cast<Duration>(
                                  (current.max_latency - current.min_latency) * latency_roll);
    // A well-behaved client stops waiting at its deadline.
    TimePoint wake = std::min(now + latency, context.deadline);
    std::this_thread::sleep_until(std::chrono::steady_clock::time_point(wake.time_since_epoch()));
    if (failure_roll < current.error_rate) {
      return Error(keel::errc::io_error, "inventory service answered 503");
    }
    return {};
  }

 private:
  Clock& clock_;
  TimePoint start_;
  Duration total_;
  std::mutex mutex_;
  Random random_;
};

constexpr int kCallers = 12;

struct Tally {
  std::atomic<std::uint64_t> calls{0}, ok{0}, failed{0}, bulkhead_rejected{0}, breaker_rejected{0};

  void count(const Status& status) {
    ++calls;
    if (status.ok()) {
      ++ok;
    } else if (status.error().is(errc::bulkhead_full)) {
      ++bulkhead_rejected;
    } else if (status.error().is(errc::circuit_open) || status.error().is(errc::half_open_full)) {
      ++breaker_rejected;
    } else {
      ++failed;
    }
  }
};

}  // namespace

int run_resilience_demo(const DemoOptions& options) {
  auto settings = load_settings(options);
  if (!settings) {
    std::fprintf(stderr, "keel demo: %s\n", settings.error().to_string().c_str());
    return 2;
  }
  SteadyClock clock;
  const TimePoint start = clock.now();
  const Duration total = std::chrono::seconds(options.seconds);
  FlakyDependency dependency(clock, start, total, options.seed);

  SemaphoreBulkhead bulkhead("inventory", settings->bulkhead, clock);
  CircuitBreaker breaker("inventory", settings->breaker, clock);
  RetryBudget budget("inventory", settings->budget, clock);
  Pipeline pipeline("inventory",
                    {.bulkhead = &bulkhead,
                     .breaker = &breaker,
                     .retry = settings->retry,
                     .retry_budget = &budget},
                    clock, options.seed);

  std::mutex print_mutex;
  auto seconds_since_start = [&] { return to_ms(clock.now() - start) / 1000.0; };
  breaker.on_state_change([&](const BreakerTransition& t) {
    std::lock_guard lock(print_mutex);
    std::printf("  %5.2fs  breaker %s -> %s (%s)\n", seconds_since_start(), to_string(t.from),
                to_string(t.to), t.reason);
  });

  std::printf(
      "Resilience: %d callers -> [bulkhead %u | circuit breaker | retry x%u, %.0f%% budget | "
      "%lld ms timeout] -> inventory service\n",
      kCallers, settings->bulkhead.max_concurrent_calls, settings->retry.max_attempts,
      settings->budget.budget_ratio * 100,
      static_cast<long long>(to_ms(settings->retry.per_attempt_timeout)));
  std::printf(
      "The service is healthy, then slows down, then fails, then recovers. Each line is "
      "one second; the bulkhead and\nbreaker columns count calls refused at once, without "
      "waiting on the sick service.\n\n");
  std::printf("  time   calls    ok  failed  bulkhead  breaker  state      service\n");

  Tally tally;
  std::atomic<bool> stop{false};
  std::vector<std::thread> callers;
  for (int i = 0; i < kCallers; ++i) {
    callers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        Status status = pipeline.call<void>(
            [&](const CallContext& context) { return dependency.call(context); });
        tally.count(status);
        std::this_thread::sleep_for(30ms);  // a caller's think time between requests
      }
    });
  }

  Tally last;
  for (int second = 1; second <= options.seconds; ++second) {
    sleep_until(clock, start + std::chrono::seconds(second));
    auto delta = [](std::atomic<std::uint64_t>& now, std::atomic<std::uint64_t>& before) {
      std::uint64_t value = now.load();
      return value - before.exchange(value);
    };
    std::lock_guard lock(print_mutex);
    std::printf(
        "  %3ds  %6llu %5llu  %6llu  %8llu  %7llu  %-9s  %s\n", second,
        static_cast<unsigned long long>(delta(tally.calls, last.calls)),
        static_cast<unsigned long long>(delta(tally.ok, last.ok)),
        static_cast<unsigned long long>(delta(tally.failed, last.failed)),
        static_cast<unsigned long long>(delta(tally.bulkhead_rejected, last.bulkhead_rejected)),
        static_cast<unsigned long long>(delta(tally.breaker_rejected, last.breaker_rejected)),
        to_string(breaker.state()), dependency.phase(clock.now() - 500ms).name);
    std::fflush(stdout);
  }
  stop = true;
  for (auto& caller : callers) caller.join();
  clock.stop();

  auto metrics = breaker.metrics();
  std::printf(
      "\nSummary: %llu calls: %llu ok, %llu failed after retries; refused without "
      "touching the service: %llu by the bulkhead, %llu by the breaker.\n",
      static_cast<unsigned long long>(tally.calls.load()),
      static_cast<unsigned long long>(tally.ok.load()),
      static_cast<unsigned long long>(tally.failed.load()),
      static_cast<unsigned long long>(tally.bulkhead_rejected.load()),
      static_cast<unsigned long long>(tally.breaker_rejected.load()));
  std::printf("The breaker saw %llu successes and %llu failures (%llu slow) and ended %s.\n",
              static_cast<unsigned long long>(metrics.successful_calls_total),
              static_cast<unsigned long long>(metrics.failed_calls_total),
              static_cast<unsigned long long>(metrics.slow_calls_total), to_string(metrics.state));
  return 0;
}

}  // namespace keel::cli

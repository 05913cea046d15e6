#include <benchmark/benchmark.h>

#include "keel/resilience/rate_limiter.h"

namespace keel::resilience {
namespace {

// A rate no caller can reach, so every call takes the admit path (load, compare, CAS).
constexpr TokenBucket::Config kNeverEmpty = {.rate_per_second = 1e9, .burst = 1'000'000};

void BM_TokenBucketTryAcquire(benchmark::State& state) {
  static SteadyClock clock;
  static TokenBucket bucket("benchmark", kNeverEmpty, clock);
  std::int64_t rejected = 0;
  for (auto _ : state) {
    auto admission = bucket.try_acquire();
    if (!admission) ++rejected;
    benchmark::DoNotOptimize(admission);
  }
  state.counters["rejected"] = static_cast<double>(rejected);
}
BENCHMARK(BM_TokenBucketTryAcquire)->Threads(1)->Threads(2)->UseRealTime();

void BM_SlidingWindowTryAcquire(benchmark::State& state) {
  static SteadyClock clock;
  static SlidingWindowLimiter limiter("benchmark", {.limit = 4'000'000'000u, .window = 1s}, clock);
  for (auto _ : state) {
    auto admission = limiter.try_acquire();
    benchmark::DoNotOptimize(admission);
  }
}
BENCHMARK(BM_SlidingWindowTryAcquire)->Threads(1)->Threads(2)->UseRealTime();

// The clock read alone, to show how much of the figures above is SteadyClock::now().
void BM_SteadyClockNow(benchmark::State& state) {
  static SteadyClock clock;
  for (auto _ : state) benchmark::DoNotOptimize(clock.now());
}
BENCHMARK(BM_SteadyClockNow);

}  // namespace
}  // namespace keel::resilience

BENCHMARK_MAIN();

#include <benchmark/benchmark.h>

#include "keel/resilience/adaptive_limiter.h"
#include "keel/resilience/bulkhead.h"

namespace keel::resilience {
namespace {

SemaphoreBulkhead::Config bulkhead_config(std::uint32_t max_calls) {
  SemaphoreBulkhead::Config config;
  config.max_concurrent_calls = max_calls;
  return config;
}

void BM_SemaphoreBulkheadTryAcquireRelease(benchmark::State& state) {
  SemaphoreBulkhead bulkhead("bench", bulkhead_config(25), SteadyClock::instance());
  for (auto _ : state) {
    auto admission = bulkhead.try_acquire();
    benchmark::DoNotOptimize(admission);
    admission.permit().release();
  }
}
BENCHMARK(BM_SemaphoreBulkheadTryAcquireRelease)->UseRealTime();

// One bulkhead shared by every benchmark thread; the limit is high enough that nobody is
// rejected, so this measures contention on the state word alone.
SemaphoreBulkhead& shared_bulkhead() {
  static SemaphoreBulkhead bulkhead("bench-shared", bulkhead_config(1'000'000),
                                    SteadyClock::instance());
  return bulkhead;
}

void BM_SemaphoreBulkheadTryAcquireReleaseShared(benchmark::State& state) {
  SemaphoreBulkhead& bulkhead = shared_bulkhead();
  for (auto _ : state) {
    auto admission = bulkhead.try_acquire();
    benchmark::DoNotOptimize(admission);
    admission.permit().release();
  }
}
BENCHMARK(BM_SemaphoreBulkheadTryAcquireReleaseShared)->Threads(1)->Threads(2)->UseRealTime();

void BM_SemaphoreBulkheadWithMetrics(benchmark::State& state) {
  metrics::Registry registry;
  SemaphoreBulkhead bulkhead("bench", bulkhead_config(25), SteadyClock::instance());
  bulkhead.bind_metrics(registry);
  for (auto _ : state) {
    auto admission = bulkhead.try_acquire();
    benchmark::DoNotOptimize(admission);
    admission.permit().release();
  }
}
BENCHMARK(BM_SemaphoreBulkheadWithMetrics)->UseRealTime();

void BM_ConcurrencyLimiterAcquireRecord(benchmark::State& state) {
  ConcurrencyLimiter limiter("bench", std::make_unique<AimdLimit>(), SteadyClock::instance());
  for (auto _ : state) {
    auto admission = limiter.acquire();
    benchmark::DoNotOptimize(admission);
    limiter.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
}
BENCHMARK(BM_ConcurrencyLimiterAcquireRecord)->UseRealTime();

void BM_ConcurrencyLimiterGradient(benchmark::State& state) {
  ConcurrencyLimiter limiter("bench", std::make_unique<GradientLimit>(), SteadyClock::instance());
  for (auto _ : state) {
    auto admission = limiter.acquire();
    benchmark::DoNotOptimize(admission);
    limiter.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
}
BENCHMARK(BM_ConcurrencyLimiterGradient)->UseRealTime();

}  // namespace
}  // namespace keel::resilience

BENCHMARK_MAIN();

// Keel's breaker against the one a team would write by hand: a count window behind a mutex.
// Both evaluate the same rule (failure or slow-call rate over the last N calls) after every call.
#include <benchmark/benchmark.h>

#include <mutex>
#include <vector>

#include "keel/resilience/circuit_breaker.h"

namespace keel::resilience {
namespace {

// The hand-written baseline: correct, simple, and serialised on one lock.
class MutexBreaker {
 public:
  explicit MutexBreaker(std::size_t window) : ring_(window, 0) {}

  bool acquire() {
    std::lock_guard lock(mutex_);
    return !open_;
  }

  void record(bool failed, bool slow) {
    std::lock_guard lock(mutex_);
    std::uint8_t& slot = ring_[next_++ % ring_.size()];
    if (slot & 1) {
      --calls_;
      failures_ -= (slot >> 1) & 1;
      slow_ -= (slot >> 2) & 1;
    }
    slot = static_cast<std::uint8_t>(1 | (failed ? 2 : 0) | (slow ? 4 : 0));
    ++calls_;
    failures_ += failed;
    slow_ += slow;
    if (calls_ >= 100 && (failures_ * 2 >= calls_ || slow_ >= calls_)) open_ = true;
  }

  void force_open() {
    std::lock_guard lock(mutex_);
    open_ = true;
  }

 private:
  std::mutex mutex_;
  std::vector<std::uint8_t> ring_;
  std::size_t next_ = 0;
  std::int64_t calls_ = 0, failures_ = 0, slow_ = 0;
  bool open_ = false;
};

CircuitBreakerConfig bench_config() {
  CircuitBreakerConfig config;  // count window of 100, 50% failure threshold
  config.slow_call_duration = 1s;
  return config;
}

SteadyClock& bench_clock() {
  static SteadyClock clock;
  return clock;
}

CircuitBreaker& shared_breaker() {
  static CircuitBreaker breaker("bench", bench_config(), bench_clock());
  return breaker;
}

MutexBreaker& shared_mutex_breaker() {
  static MutexBreaker breaker(100);
  return breaker;
}

void BM_KeelClosedAcquireRecord(benchmark::State& state) {
  CircuitBreaker& breaker = shared_breaker();
  for (auto _ : state) {
    auto admission = breaker.acquire();
    breaker.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeelClosedAcquireRecord)->Threads(1)->Threads(2)->UseRealTime();

void BM_MutexClosedAcquireRecord(benchmark::State& state) {
  MutexBreaker& breaker = shared_mutex_breaker();
  for (auto _ : state) {
    if (breaker.acquire()) breaker.record(false, false);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MutexClosedAcquireRecord)->Threads(1)->Threads(2)->UseRealTime();

void BM_KeelOpenReject(benchmark::State& state) {
  static CircuitBreaker breaker("bench-open", bench_config(), bench_clock());
  if (state.thread_index() == 0) breaker.transition_to_forced_open();
  for (auto _ : state) {
    auto admission = breaker.acquire();
    benchmark::DoNotOptimize(admission);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeelOpenReject)->Threads(1)->Threads(2)->UseRealTime();

void BM_MutexOpenReject(benchmark::State& state) {
  static MutexBreaker breaker(100);
  if (state.thread_index() == 0) breaker.force_open();
  for (auto _ : state) benchmark::DoNotOptimize(breaker.acquire());
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_MutexOpenReject)->Threads(1)->Threads(2)->UseRealTime();

void BM_KeelTimeWindowAcquireRecord(benchmark::State& state) {
  static CircuitBreaker breaker = [] {
    auto config = bench_config();
    config.window_type = CircuitBreakerConfig::WindowType::kTimeBased;
    config.window_size = 10;
    return CircuitBreaker("bench-time", config, bench_clock());
  }();
  for (auto _ : state) {
    auto admission = breaker.acquire();
    breaker.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_KeelTimeWindowAcquireRecord)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace keel::resilience

BENCHMARK_MAIN();

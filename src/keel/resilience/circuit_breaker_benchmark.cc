// Keel's breaker against the one a team would write by hand: a count window behind a mutex.
// Both do the same work per call: admit it if not open, classify it as failed or slow from the
// outcome and latency, count it in the lifetime totals, put it in a count window of 100 and
// decide on the failure and slow-call rates. The hand-written one decides after every call;
// Keel decides after every failure or slow call and after every batch of successes (see
// circuit_breaker.h), which is where its advantage comes from, together with not sharing a
// cache line between threads on the success path.
//
// Threads are pinned, one per CPU the process may use (thread i on the i-th), so a 2-thread run
// has a core per thread on a 2-CPU machine and runs do not differ by where the scheduler put
// them. KEEL_BENCH_PIN=0 leaves placement to the scheduler. Each run reports the CPU each
// thread ended on as cpu_t<i> and the placement as its label.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "keel/resilience/circuit_breaker.h"

namespace keel::resilience {
namespace {

CircuitBreakerConfig bench_config() {
  CircuitBreakerConfig config;  // count window of 100, 50% failure threshold
  config.slow_call_duration = 1s;
  return config;
}

// The hand-written baseline: correct, simple, and serialised on one lock.
class MutexBreaker {
 public:
  explicit MutexBreaker(const CircuitBreakerConfig& config)
      : ring_(config.window_size, 0),
        minimum_calls_(std::min(config.minimum_calls, config.window_size)),
        failure_rate_threshold_(config.failure_rate_threshold),
        slow_call_rate_threshold_(config.slow_call_rate_threshold),
        slow_call_duration_(config.slow_call_duration) {}

  bool acquire() {
    std::lock_guard lock(mutex_);
    return !open_;
  }

  void record(Outcome outcome, Duration latency) {
    if (outcome == Outcome::kIgnored || outcome == Outcome::kCancelled) return;
    const bool failed = outcome == Outcome::kFailure;
    const bool slow = latency > slow_call_duration_;
    std::lock_guard lock(mutex_);
    ++(failed ? failed_total_ : successful_total_);
    slow_total_ += slow;
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
    if (calls_ < minimum_calls_) return;
    const double calls = static_cast<double>(calls_);
    if (static_cast<double>(failures_) * 100.0 / calls >= failure_rate_threshold_ ||
        static_cast<double>(slow_) * 100.0 / calls >= slow_call_rate_threshold_) {
      open_ = true;
    }
  }

  void force_open() {
    std::lock_guard lock(mutex_);
    open_ = true;
  }

 private:
  std::mutex mutex_;
  std::vector<std::uint8_t> ring_;
  const std::int64_t minimum_calls_;
  const double failure_rate_threshold_;
  const double slow_call_rate_threshold_;
  const Duration slow_call_duration_;
  std::size_t next_ = 0;
  std::int64_t calls_ = 0, failures_ = 0, slow_ = 0;
  std::uint64_t successful_total_ = 0, failed_total_ = 0, slow_total_ = 0;
  bool open_ = false;
};

// The CPUs this process may run on, read before any benchmark thread has been pinned.
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    }
  }
  return cpus;
}
const std::vector<int> kCpus = allowed_cpus();

bool pinning_enabled() {
  const char* pin = std::getenv("KEEL_BENCH_PIN");
  return pin == nullptr || std::strcmp(pin, "0") != 0;
}

// Call before the timed loop: pins this benchmark thread and labels the run with the placement.
void place_thread(benchmark::State& state) {
  std::string label = "unpinned";
  if (pinning_enabled() && !kCpus.empty()) {
    const int cpu = kCpus[static_cast<std::size_t>(state.thread_index()) % kCpus.size()];
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    const bool pinned = pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
    label = pinned ? "pinned cpus" : "pinning failed";
    if (pinned) {
      for (int t = 0; t < state.threads(); ++t) {
        label += (t == 0 ? " " : ",") +
                 std::to_string(kCpus[static_cast<std::size_t>(t) % kCpus.size()]);
      }
    }
  }
  if (state.thread_index() == 0) state.SetLabel(label);
}

// Call after the timed loop: where this thread ended up (for unpinned runs, where the
// scheduler put it).
void report_cpu(benchmark::State& state) {
  state.counters["cpu_t" + std::to_string(state.thread_index())] = sched_getcpu();
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
  static MutexBreaker breaker(bench_config());
  return breaker;
}

void BM_KeelClosedAcquireRecord(benchmark::State& state) {
  CircuitBreaker& breaker = shared_breaker();
  place_thread(state);
  for (auto _ : state) {
    auto admission = breaker.acquire();
    if (admission) breaker.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
  state.SetItemsProcessed(state.iterations());
  report_cpu(state);
}
BENCHMARK(BM_KeelClosedAcquireRecord)->Threads(1)->Threads(2)->UseRealTime();

void BM_MutexClosedAcquireRecord(benchmark::State& state) {
  MutexBreaker& breaker = shared_mutex_breaker();
  place_thread(state);
  for (auto _ : state) {
    if (breaker.acquire()) breaker.record(Outcome::kSuccess, 1ms);
  }
  state.SetItemsProcessed(state.iterations());
  report_cpu(state);
}
BENCHMARK(BM_MutexClosedAcquireRecord)->Threads(1)->Threads(2)->UseRealTime();

void BM_KeelOpenReject(benchmark::State& state) {
  static CircuitBreaker breaker("bench-open", bench_config(), bench_clock());
  if (state.thread_index() == 0) breaker.transition_to_forced_open();
  place_thread(state);
  for (auto _ : state) {
    auto admission = breaker.acquire();
    benchmark::DoNotOptimize(admission);
  }
  state.SetItemsProcessed(state.iterations());
  report_cpu(state);
}
BENCHMARK(BM_KeelOpenReject)->Threads(1)->Threads(2)->UseRealTime();

void BM_MutexOpenReject(benchmark::State& state) {
  static MutexBreaker breaker(bench_config());
  if (state.thread_index() == 0) breaker.force_open();
  place_thread(state);
  for (auto _ : state) benchmark::DoNotOptimize(breaker.acquire());
  state.SetItemsProcessed(state.iterations());
  report_cpu(state);
}
BENCHMARK(BM_MutexOpenReject)->Threads(1)->Threads(2)->UseRealTime();

void BM_KeelTimeWindowAcquireRecord(benchmark::State& state) {
  static CircuitBreaker breaker = [] {
    auto config = bench_config();
    config.window_type = CircuitBreakerConfig::WindowType::kTimeBased;
    config.window_size = 10;
    return CircuitBreaker("bench-time", config, bench_clock());
  }();
  place_thread(state);
  for (auto _ : state) {
    auto admission = breaker.acquire();
    if (admission) breaker.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
  state.SetItemsProcessed(state.iterations());
  report_cpu(state);
}
BENCHMARK(BM_KeelTimeWindowAcquireRecord)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace keel::resilience

BENCHMARK_MAIN();

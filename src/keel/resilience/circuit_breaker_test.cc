#include "keel/resilience/circuit_breaker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

namespace keel::resilience {
namespace {

CircuitBreakerConfig small_config() {
  CircuitBreakerConfig config;
  config.window_size = 10;
  config.minimum_calls = 5;
  config.failure_rate_threshold = 50;
  config.slow_call_duration = 1s;
  config.open_duration = 10s;
  config.half_open_permitted_calls = 3;
  config.half_open_max_wait = 30s;
  return config;
}

void call(CircuitBreaker& breaker, Outcome outcome, Duration latency = 10ms) {
  auto admission = breaker.acquire();
  ASSERT_TRUE(admission.admitted()) << to_string(breaker.state());
  breaker.record(std::move(admission).permit(), outcome, latency);
}

void open_breaker(CircuitBreaker& breaker) {
  for (int i = 0; i < 5; ++i) call(breaker, Outcome::kFailure);
  ASSERT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, StaysClosedBelowMinimumCalls) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  for (int i = 0; i < 4; ++i) call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker.metrics().failure_rate, -1);
}

TEST(CircuitBreaker, OpensAfterFailureRateCrossesThreshold) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  call(breaker, Outcome::kSuccess);
  call(breaker, Outcome::kSuccess);
  call(breaker, Outcome::kSuccess);
  call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  call(breaker, Outcome::kFailure);  // 2/5 = 40%
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  call(breaker, Outcome::kFailure);  // 3/6 = 50%
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, CountWindowForgetsTheOldestCalls) {
  ManualClock clock;
  auto config = small_config();
  config.failure_rate_threshold = 60;
  config.minimum_calls = 10;
  CircuitBreaker rolling("r", config, clock);
  for (int i = 0; i < 4; ++i) call(rolling, Outcome::kFailure);
  for (int i = 0; i < 6; ++i) call(rolling, Outcome::kSuccess);  // 4/10 = 40%
  EXPECT_EQ(rolling.metrics().buffered_calls, 10u);
  for (int i = 0; i < 4; ++i) call(rolling, Outcome::kSuccess);  // pushes the failures out
  EXPECT_EQ(rolling.metrics().failed_calls, 0u);
  EXPECT_EQ(rolling.metrics().buffered_calls, 10u);
  for (int i = 0; i < 5; ++i) call(rolling, Outcome::kFailure);  // 5/10 = 50% < 60%
  EXPECT_EQ(rolling.state(), BreakerState::kClosed);
  call(rolling, Outcome::kFailure);  // 6/10
  EXPECT_EQ(rolling.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, OpensWhenSlowCallRateCrossesThreshold) {
  ManualClock clock;
  auto config = small_config();
  config.slow_call_rate_threshold = 80;
  CircuitBreaker breaker("b", config, clock);
  call(breaker, Outcome::kSuccess, 2s);
  call(breaker, Outcome::kSuccess, 2s);
  call(breaker, Outcome::kFailure, 2s);  // slow failures count as slow too
  call(breaker, Outcome::kSuccess, 1s);  // exactly the threshold is not slow
  call(breaker, Outcome::kSuccess, 2s);  // 4/5 = 80%
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
  EXPECT_EQ(breaker.metrics().slow_calls_total, 4u);
}

TEST(CircuitBreaker, ConsecutiveFailuresTripBeforeMinimumCalls) {
  ManualClock clock;
  auto config = small_config();
  config.minimum_calls = 100;
  config.window_size = 100;
  config.consecutive_failures = 3;
  CircuitBreaker breaker("b", config, clock);
  call(breaker, Outcome::kFailure);
  call(breaker, Outcome::kFailure);
  call(breaker, Outcome::kSuccess);  // resets the run
  call(breaker, Outcome::kFailure);
  call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, OpenRejectsWithRetryAtUntilTheTimerMovesItToHalfOpen) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  TimePoint opened_at = clock.now();
  open_breaker(breaker);

  auto rejected = breaker.acquire();
  ASSERT_FALSE(rejected.admitted());
  EXPECT_EQ(rejected.rejection().reason, errc::circuit_open);
  EXPECT_EQ(rejected.rejection().retry_at, opened_at + 10s);
  Error error = rejected.rejection().to_error("b", clock.now() + 4s);
  EXPECT_EQ(error.message(), "'b': circuit breaker is open; retry after 6000 ms");

  clock.advance(9999ms);
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
  clock.advance(1ms);
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
  EXPECT_EQ(breaker.metrics().not_permitted_calls_total, 1u);
}

TEST(CircuitBreaker, HalfOpenClosesWhenProbesSucceed) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  open_breaker(breaker);
  clock.advance(10s);
  call(breaker, Outcome::kSuccess);
  call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
  call(breaker, Outcome::kSuccess);  // 1/3 failed < 50%
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker.metrics().buffered_calls, 0u) << "closing starts a fresh window";
}

TEST(CircuitBreaker, HalfOpenReopensWhenProbesFail) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  open_breaker(breaker);
  clock.advance(10s);
  call(breaker, Outcome::kFailure);
  call(breaker, Outcome::kFailure);
  call(breaker, Outcome::kSuccess);
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, HalfOpenAdmitsExactlyThePermittedCallsAmongManyCallers) {
  ManualClock clock;
  auto config = small_config();
  config.half_open_permitted_calls = 7;
  CircuitBreaker breaker("b", config, clock);
  open_breaker(breaker);
  clock.advance(10s);

  constexpr int kThreads = 8;
  std::latch start(kThreads);
  std::atomic<int> admitted{0};
  std::atomic<int> full{0};
  std::vector<std::thread> threads;
  std::mutex permits_mutex;
  std::vector<BreakerPermit> permits;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();
      for (int i = 0; i < 100; ++i) {
        auto admission = breaker.acquire();
        if (admission.admitted()) {
          ++admitted;
          std::lock_guard lock(permits_mutex);
          permits.push_back(std::move(admission).permit());
        } else {
          EXPECT_EQ(admission.rejection().reason, errc::half_open_full);
          ++full;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 7);
  EXPECT_EQ(full.load(), kThreads * 100 - 7);
  for (auto& permit : permits) breaker.record(std::move(permit), Outcome::kSuccess, 1ms);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
}

TEST(CircuitBreaker, ProbeThatNeverReportsCannotWedgeHalfOpen) {
  ManualClock clock;
  auto config = small_config();
  config.half_open_permitted_calls = 1;
  CircuitBreaker breaker("b", config, clock);
  open_breaker(breaker);
  clock.advance(10s);
  auto lost_probe = breaker.acquire();
  ASSERT_TRUE(lost_probe.admitted());
  EXPECT_FALSE(breaker.acquire().admitted());

  clock.advance(30s);  // half_open_max_wait
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
  clock.advance(10s);
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);

  // The lost probe finally reports: it belongs to an earlier generation and is ignored.
  breaker.record(std::move(lost_probe).permit(), Outcome::kSuccess, 1ms);
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
  EXPECT_EQ(breaker.metrics().stale_results_total, 1u);
  call(breaker, Outcome::kSuccess);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
}

TEST(CircuitBreaker, ResultsOfCallsAdmittedBeforeATransitionAreIgnored) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  auto early = breaker.acquire();
  ASSERT_TRUE(early.admitted());
  open_breaker(breaker);
  clock.advance(10s);
  for (int i = 0; i < 2; ++i) call(breaker, Outcome::kSuccess);
  // Without generations this late success would be the third half-open result and close it.
  breaker.record(std::move(early).permit(), Outcome::kSuccess, 1ms);
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
  call(breaker, Outcome::kFailure);  // 1/3 failed: closes
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
}

TEST(CircuitBreaker, CancellationsAreNeitherSuccessNorFailureAndFreeTheProbeSlot) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  for (int i = 0; i < 10; ++i) call(breaker, Outcome::kCancelled);
  for (int i = 0; i < 10; ++i) call(breaker, Outcome::kIgnored);
  EXPECT_EQ(breaker.metrics().buffered_calls, 0u);
  EXPECT_EQ(breaker.metrics().ignored_calls_total, 20u);

  open_breaker(breaker);
  clock.advance(10s);
  for (int i = 0; i < 10; ++i) {
    auto probe = breaker.acquire();
    ASSERT_TRUE(probe.admitted()) << "a cancelled probe gives its slot back";
    // Dropping the permit without recording it counts as cancelled.
  }
  EXPECT_EQ(breaker.state(), BreakerState::kHalfOpen);
}

TEST(CircuitBreaker, ClassifierDecidesWhichErrorsCountAsFailures) {
  ManualClock clock;
  auto config = small_config();
  config.classify = [](const Error& error) {
    return error.is(keel::errc::invalid_argument) ? Outcome::kIgnored : Outcome::kFailure;
  };
  CircuitBreaker breaker("b", config, clock);
  for (int i = 0; i < 10; ++i) {
    auto admission = breaker.acquire();
    ASSERT_TRUE(admission.admitted());
    breaker.record_error(std::move(admission).permit(),
                         Error(keel::errc::invalid_argument, "no such order"), 1ms);
  }
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker.metrics().ignored_calls_total, 10u);
  for (int i = 0; i < 5; ++i) {
    auto admission = breaker.acquire();
    ASSERT_TRUE(admission.admitted());
    breaker.record_error(std::move(admission).permit(), Error(keel::errc::io_error, "reset"), 1ms);
  }
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, OpenDurationBacksOffExponentiallyUpToTheCapAndResetsOnClose) {
  ManualClock clock;
  auto config = small_config();
  config.half_open_permitted_calls = 1;
  config.open_backoff_multiplier = 2;
  config.max_open_duration = 35s;
  CircuitBreaker breaker("b", config, clock);
  open_breaker(breaker);
  std::vector<Duration> waits;
  for (int i = 0; i < 4; ++i) {
    TimePoint opened = clock.now();
    TimePoint retry_at = breaker.acquire().rejection().retry_at;
    waits.push_back(retry_at - opened);
    clock.advance_to(retry_at);
    ASSERT_EQ(breaker.state(), BreakerState::kHalfOpen);
    call(breaker, Outcome::kFailure);
    ASSERT_EQ(breaker.state(), BreakerState::kOpen);
  }
  EXPECT_EQ(waits, (std::vector<Duration>{10s, 20s, 35s, 35s}));

  clock.advance(35s);
  call(breaker, Outcome::kSuccess);
  ASSERT_EQ(breaker.state(), BreakerState::kClosed);
  TimePoint opened = clock.now();
  open_breaker(breaker);
  EXPECT_EQ(breaker.acquire().rejection().retry_at - opened, 10s);
}

TEST(CircuitBreaker, JitterSpreadsOpenDurationWithinBounds) {
  ManualClock clock;
  auto config = small_config();
  config.open_jitter = 0.2;
  bool saw_different = false;
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    config.random_seed = seed;
    CircuitBreaker breaker("b", config, clock);
    TimePoint opened = clock.now();
    open_breaker(breaker);
    Duration wait = breaker.acquire().rejection().retry_at - opened;
    EXPECT_GE(wait, 8s) << "seed " << seed;
    EXPECT_LE(wait, 12s) << "seed " << seed;
    saw_different |= wait != 10s;
  }
  EXPECT_TRUE(saw_different);
}

TEST(CircuitBreaker, OperatorStates) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);

  breaker.transition_to_disabled();
  for (int i = 0; i < 20; ++i) call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kDisabled);
  EXPECT_EQ(breaker.metrics().failed_calls_total, 0u) << "DISABLED records nothing";

  breaker.transition_to_metrics_only();
  for (int i = 0; i < 20; ++i) call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kMetricsOnly);
  EXPECT_EQ(breaker.metrics().failure_rate, 100);

  breaker.transition_to_forced_open();
  auto rejected = breaker.acquire();
  ASSERT_FALSE(rejected.admitted());
  EXPECT_EQ(rejected.rejection().reason, errc::circuit_forced_open);
  clock.advance(std::chrono::hours(1));
  EXPECT_EQ(breaker.state(), BreakerState::kForcedOpen) << "no timer leaves FORCED_OPEN";

  breaker.reset();
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker.metrics().buffered_calls, 0u);
}

TEST(CircuitBreaker, TimeWindowCountsOnlyTheLastSeconds) {
  ManualClock clock;
  auto config = small_config();
  config.window_type = CircuitBreakerConfig::WindowType::kTimeBased;
  config.window_size = 10;  // seconds
  CircuitBreaker breaker("b", config, clock);
  for (int i = 0; i < 4; ++i) call(breaker, Outcome::kFailure);
  clock.advance(5s);
  EXPECT_EQ(breaker.metrics().buffered_calls, 4u);
  clock.advance(6s);  // the failures are now 11 s old
  EXPECT_EQ(breaker.metrics().buffered_calls, 0u) << "a quiet period empties the window";
  call(breaker, Outcome::kFailure);
  for (int i = 0; i < 4; ++i) call(breaker, Outcome::kSuccess);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);  // 1/5
  clock.advance(1s);
  call(breaker, Outcome::kFailure);
  call(breaker, Outcome::kFailure);  // 3/7
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  call(breaker, Outcome::kFailure);  // 4/8: both seconds count
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, ListenersSeeTransitionsAndRejections) {
  ManualClock clock;
  CircuitBreaker breaker("b", small_config(), clock);
  std::vector<std::pair<BreakerState, BreakerState>> transitions;
  int rejections = 0;
  breaker.on_state_change(
      [&](const BreakerTransition& t) { transitions.emplace_back(t.from, t.to); });
  breaker.on_rejection([&](const Rejection& r) {
    EXPECT_EQ(r.reason, errc::circuit_open);
    ++rejections;
  });
  open_breaker(breaker);
  (void)breaker.acquire();
  (void)breaker.acquire();
  clock.advance(10s);
  for (int i = 0; i < 3; ++i) call(breaker, Outcome::kSuccess);
  EXPECT_EQ(rejections, 2);
  using S = BreakerState;
  EXPECT_EQ(transitions,
            (std::vector<std::pair<S, S>>{
                {S::kClosed, S::kOpen}, {S::kOpen, S::kHalfOpen}, {S::kHalfOpen, S::kClosed}}));
}

TEST(CircuitBreaker, ManyThreadsRecordingKeepExactCounts) {
  ManualClock clock;
  CircuitBreakerConfig config;
  config.window_size = 1000;
  config.minimum_calls = 1000;
  config.failure_rate_threshold = 50;
  CircuitBreaker breaker("b", config, clock);
  constexpr int kThreads = 4;
  constexpr int kCalls = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCalls; ++i) {
        auto admission = breaker.acquire();
        ASSERT_TRUE(admission.admitted());
        // Every thread fails one call in four: however they interleave, any 1000 consecutive
        // results hold about 25% failures, well under the threshold.
        breaker.record(std::move(admission).permit(),
                       (i + t) % 4 == 0 ? Outcome::kFailure : Outcome::kSuccess, 1ms);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  auto metrics = breaker.metrics();
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_EQ(metrics.buffered_calls, 1000u);
  EXPECT_EQ(metrics.successful_calls_total + metrics.failed_calls_total, 80000u);
  EXPECT_EQ(metrics.failed_calls_total, 20000u);
  EXPECT_LE(metrics.failed_calls, 1000u);
}

// Each of `threads` threads, all alive at once (so each has a slot of its own, or shares a
// stripe once there are more threads than slots), records `calls` successes.
void succeed_in_threads(CircuitBreaker& breaker, int threads, int calls) {
  std::latch all_done(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < calls; ++i) call(breaker, Outcome::kSuccess, 1ms);
      // Nobody exits before everyone has recorded, so no slot is handed over mid-test.
      all_done.arrive_and_wait();
    });
  }
  for (auto& worker : workers) worker.join();
}

CircuitBreakerConfig window_of(std::uint32_t size, std::uint32_t minimum_calls) {
  CircuitBreakerConfig config;
  config.window_size = size;
  config.minimum_calls = minimum_calls;
  config.failure_rate_threshold = 50;
  return config;
}

TEST(CircuitBreaker, SuccessesPendingInSeveralThreadsSlotsCountBeforeAFailureDecides) {
  ManualClock clock;
  CircuitBreaker breaker("b", window_of(100, 10), clock);
  // 4 x 5 successes, each thread's under one batch, so none has reached the window yet.
  succeed_in_threads(breaker, 4, 5);
  // Then two threads one after the other: the second takes over the slot the first gave back,
  // with the first one's pending successes still in it.
  succeed_in_threads(breaker, 1, 5);
  succeed_in_threads(breaker, 1, 5);
  // 30 successes: the 30th failure makes 30/60 = 50%. Had the fold missed any thread's slot,
  // an earlier failure would have tripped it.
  for (int i = 0; i < 29; ++i) call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  EXPECT_EQ(breaker.metrics().buffered_calls, 59u);
  call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
  EXPECT_EQ(breaker.metrics().successful_calls_total, 30u);
  EXPECT_EQ(breaker.metrics().failed_calls_total, 30u);
}

TEST(CircuitBreaker, BatchesFromConcurrentThreadsAddUpAndTheFailureTripsAtTheRightCall) {
  ManualClock clock;
  CircuitBreaker breaker("b", window_of(1000, 100), clock);
  // 100 calls per thread is three full batches flushed concurrently and 4 left pending each.
  succeed_in_threads(breaker, 4, 100);
  for (int i = 0; i < 399; ++i) call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);  // 399/799
  call(breaker, Outcome::kFailure);                   // 400/800
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
}

TEST(CircuitBreaker, ThreadsBeyondTheOwnedSlotsShareStripesWithoutLosingCalls) {
  ManualClock clock;
  CircuitBreaker breaker("b", window_of(5000, 5000), clock);
  succeed_in_threads(breaker, 24, 101);  // more threads than the breaker has slots
  auto metrics = breaker.metrics();
  EXPECT_EQ(metrics.buffered_calls, 24u * 101u);
  EXPECT_EQ(metrics.successful_calls_total, 24u * 101u);
  EXPECT_EQ(metrics.failed_calls, 0u);
}

TEST(CircuitBreaker, ClosingDropsSuccessesThatHadNotReachedTheWindow) {
  ManualClock clock;
  CircuitBreaker breaker("b", window_of(100, 10), clock);
  succeed_in_threads(breaker, 2, 5);
  call(breaker, Outcome::kSuccess);
  breaker.reset();
  for (int i = 0; i < 9; ++i) call(breaker, Outcome::kFailure);
  // Had the 11 successes from before the reset survived in the slots, 10 failures would be
  // 10/21 and would not trip.
  EXPECT_EQ(breaker.state(), BreakerState::kClosed);
  call(breaker, Outcome::kFailure);
  EXPECT_EQ(breaker.state(), BreakerState::kOpen);
  EXPECT_EQ(breaker.metrics().successful_calls_total, 11u) << "totals are for the breaker's life";
}

TEST(CircuitBreaker, ConcurrentSuccessesAndFailuresKeepTheWindowConsistent) {
  // For ThreadSanitizer as much as for the counts: owners store to their slots while other
  // threads fold them, flush batches into the window and trip the breaker.
  ManualClock clock;
  CircuitBreaker breaker("b", window_of(500, 50), clock);
  std::atomic<std::uint64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 5000; ++i) {
        // Thread 3 resets every 1000 calls, so the breaker closes again whenever the
        // interleaving (thread 0 fails every call, the others succeed) has tripped it.
        if (t == 3 && i % 1000 == 999) breaker.reset();
        if (t == 2 && i % 64 == 0) (void)breaker.metrics();
        auto admission = breaker.acquire();
        if (!admission) continue;
        admitted.fetch_add(1, std::memory_order_relaxed);
        Outcome outcome = t == 0 ? Outcome::kFailure : Outcome::kSuccess;
        Duration latency = t == 1 && i % 3 == 0 ? 10min : 1ms;
        breaker.record(std::move(admission).permit(), outcome, latency);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  auto metrics = breaker.metrics();
  EXPECT_LE(metrics.buffered_calls, 500u);
  EXPECT_LE(metrics.failed_calls, metrics.buffered_calls);
  EXPECT_LE(metrics.slow_calls, metrics.buffered_calls);
  EXPECT_EQ(metrics.successful_calls_total + metrics.failed_calls_total, admitted.load());
}

TEST(CircuitBreaker, ExposesPrometheusMetrics) {
  ManualClock clock;
  metrics::Registry registry;
  {
    CircuitBreaker breaker("payments", small_config(), clock);
    breaker.bind_metrics(registry);
    open_breaker(breaker);
    (void)breaker.acquire();
    std::string text = registry.render_prometheus();
    EXPECT_NE(text.find("keel_circuit_breaker_state{breaker=\"payments\",state=\"open\"} 1"),
              std::string::npos)
        << text;
    EXPECT_NE(text.find("keel_circuit_breaker_calls_total{breaker=\"payments\",kind=\"failed\"} 5"),
              std::string::npos)
        << text;
    EXPECT_NE(
        text.find(
            "keel_circuit_breaker_calls_total{breaker=\"payments\",kind=\"not_permitted\"} 1"),
        std::string::npos)
        << text;
  }
  EXPECT_EQ(registry.render_prometheus().find("payments"), std::string::npos);
}

TEST(CircuitBreakerConfig, ReadsYamlAndReportsMistakesWithTheirLine) {
  auto document = config::Document::parse(
      "breaker:\n"
      "  window_type: time_based\n"
      "  window_size: 30\n"
      "  failure_rate_threshold: 25\n"
      "  open_duration_ms: 5000\n"
      "  half_open_max_wait_ms: 2000\n",
      "keel.yaml");
  ASSERT_TRUE(document.ok());
  auto config = CircuitBreakerConfig::read(document->root().child("breaker"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  EXPECT_EQ(config.window_type, CircuitBreakerConfig::WindowType::kTimeBased);
  EXPECT_EQ(config.window_size, 30u);
  EXPECT_EQ(config.failure_rate_threshold, 25);
  EXPECT_EQ(config.open_duration, 5s);
  EXPECT_EQ(config.half_open_max_wait, 2s);
  EXPECT_TRUE(config.validate().ok());

  auto bad = config::Document::parse(
      "breaker:\n"
      "  window_type: time_based\n"
      "  window_size: 7200\n"
      "  failure_rate: 25\n",
      "keel.yaml");
  ASSERT_TRUE(bad.ok());
  (void)CircuitBreakerConfig::read(bad->root().child("breaker"));
  ASSERT_FALSE(bad->status().ok());
  const std::string message = bad->status().error().message();
  EXPECT_NE(message.find("keel.yaml:3:16: breaker.window_size: expected a whole number from 1 "
                         "to 3600, got 7200"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("keel.yaml:4:3: breaker.failure_rate: unknown field"), std::string::npos)
      << message;
}

TEST(CircuitBreakerConfig, ValidateNamesEveryProblem) {
  CircuitBreakerConfig config;
  config.failure_rate_threshold = 0;
  config.half_open_permitted_calls = 0;
  Status status = config.validate();
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.error().message().find("failure_rate_threshold"), std::string::npos);
  EXPECT_NE(status.error().message().find("half_open_permitted_calls"), std::string::npos);
}

}  // namespace
}  // namespace keel::resilience

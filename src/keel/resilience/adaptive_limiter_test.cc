#include "keel/resilience/adaptive_limiter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <latch>
#include <thread>
#include <vector>

namespace keel::resilience {
namespace {

using ::testing::HasSubstr;

AimdLimit::Config aimd(double initial, double min = 1, double max = 1000) {
  AimdLimit::Config config;
  config.initial_limit = initial;
  config.min_limit = min;
  config.max_limit = max;
  return config;
}

GradientLimit::Config gradient(double initial, double min = 1, double max = 1000) {
  GradientLimit::Config config;
  config.initial_limit = initial;
  config.min_limit = min;
  config.max_limit = max;
  return config;
}

// Feeds `samples` fully loaded samples (every slot of the limit in use) of latency `rtt`.
double run_loaded(LimitAlgorithm& algorithm, double limit, Duration rtt, int samples) {
  for (int i = 0; i < samples; ++i) {
    limit = algorithm.update(limit, rtt, static_cast<std::uint32_t>(limit), false);
  }
  return limit;
}

// ---- AimdLimit ----

TEST(AimdLimit, GrowsByOneOnlyWhileAtLeastHalfTheLimitIsInUse) {
  AimdLimit algorithm(aimd(20));
  EXPECT_EQ(algorithm.update(20, 10ms, 10, false), 21);
  EXPECT_EQ(algorithm.update(20, 10ms, 9, false), 20) << "app-limited: no growth";
}

TEST(AimdLimit, BacksOffOnADropAndOnACallSlowerThanTimeout) {
  AimdLimit::Config config = aimd(20);
  config.timeout = 1s;
  AimdLimit algorithm(config);
  EXPECT_DOUBLE_EQ(algorithm.update(20, 10ms, 20, true), 18);
  EXPECT_DOUBLE_EQ(algorithm.update(20, 1001ms, 20, false), 18);
  EXPECT_DOUBLE_EQ(algorithm.update(20, 1000ms, 20, false), 21) << "at the timeout is not over it";
}

TEST(AimdLimit, StaysWithinMinAndMax) {
  AimdLimit algorithm(aimd(5, 4, 6));
  EXPECT_EQ(algorithm.update(6, 1ms, 6, false), 6);
  EXPECT_EQ(algorithm.update(4, 1ms, 4, true), 4);
  EXPECT_EQ(algorithm.update(100, 1ms, 100, false), 6);
}

// ---- GradientLimit ----

TEST(GradientLimit, GrowsToMaxWhileLatencyHoldsSteady) {
  GradientLimit algorithm(gradient(20, 1, 200));
  EXPECT_EQ(run_loaded(algorithm, 20, 10ms, 100), 200);
  EXPECT_EQ(algorithm.long_rtt(), 10ms);
}

TEST(GradientLimit, ShrinksWhenLatencyRisesAndRecoversWhenItFalls) {
  GradientLimit algorithm(gradient(20, 1, 200));
  double limit = run_loaded(algorithm, 20, 10ms, 100);
  ASSERT_EQ(limit, 200);

  double previous = limit;
  for (int i = 0; i < 50; ++i) {
    limit = algorithm.update(limit, 50ms, static_cast<std::uint32_t>(limit), false);
    EXPECT_LT(limit, previous) << "sample " << i << " at 5x the usual latency";
    previous = limit;
  }
  EXPECT_LT(limit, 20);

  double low = limit;
  limit = run_loaded(algorithm, limit, 10ms, 100);
  EXPECT_GT(limit, 100) << "from " << low;
  EXPECT_LT(algorithm.long_rtt(), 20ms) << "long-term latency decays once load goes away";
}

TEST(GradientLimit, AppLimitedSamplesLeaveTheLimitAlone) {
  GradientLimit algorithm(gradient(20));
  double limit = 20;
  for (int i = 0; i < 100; ++i) limit = algorithm.update(limit, 10ms, 9, false);
  EXPECT_EQ(limit, 20);
  for (int i = 0; i < 100; ++i) limit = algorithm.update(limit, 100ms, 9, false);
  EXPECT_EQ(limit, 20) << "latency at low load says nothing about the limit";
  EXPECT_GT(algorithm.long_rtt(), 10ms) << "but it still feeds the long-term latency";
}

TEST(GradientLimit, ADropShrinksTheLimitWhateverTheLoad) {
  GradientLimit algorithm(gradient(20, 10));
  EXPECT_DOUBLE_EQ(algorithm.update(20, 1ms, 1, true), 18);  // 20*0.8 + 20*0.5*0.2
  EXPECT_DOUBLE_EQ(algorithm.update(11, 1ms, 1, true), 10) << "clamped to min_limit";
  EXPECT_EQ(algorithm.long_rtt(), Duration::zero()) << "drops do not feed the latency average";
}

TEST(GradientLimit, FixedQueueSizeSetsTheHeadroomUpToMaxLimit) {
  GradientLimit::Config config = gradient(10, 5, 12);
  config.queue_size = 4;
  GradientLimit algorithm(config);
  // Gradient 1, so the target is 10 + 4 and the limit moves a fifth of the way there.
  EXPECT_DOUBLE_EQ(algorithm.update(10, 10ms, 10, false), 10.8);
  EXPECT_EQ(run_loaded(algorithm, 10.8, 10ms, 50), 12);
}

TEST(GradientLimit, NeverShrinksBelowMinLimit) {
  GradientLimit::Config config = gradient(12, 5, 12);
  config.queue_size = 0;
  GradientLimit algorithm(config);
  double limit = run_loaded(algorithm, 12, 10ms, 10);
  ASSERT_EQ(limit, 12);
  EXPECT_EQ(run_loaded(algorithm, limit, 1s, 30), 5);
}

// ---- configuration and factory ----

TEST(LimitAlgorithm, MakeByName) {
  auto aimd_algorithm = LimitAlgorithm::make("aimd");
  auto gradient_algorithm = LimitAlgorithm::make("gradient");
  ASSERT_NE(aimd_algorithm, nullptr);
  ASSERT_NE(gradient_algorithm, nullptr);
  EXPECT_STREQ(aimd_algorithm->name(), "aimd");
  EXPECT_STREQ(gradient_algorithm->name(), "gradient");
  EXPECT_EQ(aimd_algorithm->initial_limit(), 20);
  EXPECT_EQ(LimitAlgorithm::make("vegas"), nullptr);
}

TEST(LimitAlgorithm, MakeReadsSettingsFromConfig) {
  auto document = config::Document::parse(
      "limiter:\n  initial_limit: 50\n  backoff_ratio: 0.5\n  timeout_ms: 200\n", "limits.yaml");
  ASSERT_TRUE(document.ok()) << document.error().message();
  auto algorithm = LimitAlgorithm::make("aimd", document->root().child("limiter"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  ASSERT_NE(algorithm, nullptr);
  EXPECT_EQ(algorithm->initial_limit(), 50);
  EXPECT_DOUBLE_EQ(algorithm->update(50, 201ms, 50, false), 25);
}

TEST(LimitAlgorithm, ConfigMistakesAreReportedWithLines) {
  auto document = config::Document::parse(
      "limiter:\n"
      "  smoothing: 2\n"
      "  long_windw: 100\n",
      "limits.yaml");
  ASSERT_TRUE(document.ok()) << document.error().message();
  GradientLimit::read_config(document->root().child("limiter"));
  auto status = document->status();
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.error().message(),
              HasSubstr("limits.yaml:2:14: limiter.smoothing: expected a number from"));
  EXPECT_THAT(status.error().message(),
              HasSubstr("limits.yaml:3:3: limiter.long_windw: unknown field (did you mean "
                        "'long_window'?)"));
}

TEST(LimitAlgorithm, InconsistentLimitsAreReportedAndDefaultsReturned) {
  auto document =
      config::Document::parse("limiter:\n  min_limit: 50\n  max_limit: 10\n", "limits.yaml");
  ASSERT_TRUE(document.ok()) << document.error().message();
  auto config = AimdLimit::read_config(document->root().child("limiter"));
  auto status = document->status();
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.error().message(),
              HasSubstr("limits.yaml:2:3: limiter: limits must satisfy 1 <= min_limit <= "
                        "initial_limit <= max_limit"));
  EXPECT_EQ(config.min_limit, 1);
  EXPECT_EQ(config.max_limit, 1000);
}

// ---- ConcurrencyLimiter ----

TEST(ConcurrencyLimiter, RejectsOnceLimitCallsAreInFlight) {
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(3)), clock);
  std::vector<LimiterPermit> permits;
  for (int i = 0; i < 3; ++i) {
    auto admission = limiter.acquire();
    ASSERT_TRUE(admission.admitted());
    EXPECT_EQ(admission.permit().inflight(), static_cast<std::uint32_t>(i + 1));
    permits.push_back(std::move(admission).permit());
  }
  auto rejected = limiter.acquire();
  ASSERT_FALSE(rejected.admitted());
  EXPECT_EQ(rejected.rejection().reason, errc::limit_exceeded);
  EXPECT_EQ(limiter.inflight(), 3u);
}

TEST(ConcurrencyLimiter, AimdLimitGrowsUnderLoadAndBacksOffOnFailures) {
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(10)), clock);
  for (int round = 0; round < 5; ++round) {
    std::vector<LimiterPermit> permits;
    while (auto admission = limiter.acquire()) permits.push_back(std::move(admission).permit());
    for (auto& permit : permits) limiter.record(std::move(permit), Outcome::kSuccess, 10ms);
  }
  std::uint32_t grown = limiter.limit();
  EXPECT_GT(grown, 20u);

  for (int i = 0; i < 3; ++i) {
    auto admission = limiter.acquire();
    limiter.record(std::move(admission).permit(), Outcome::kFailure, 10ms);
  }
  EXPECT_EQ(limiter.limit(), static_cast<std::uint32_t>(grown * 0.9 * 0.9 * 0.9));
  EXPECT_EQ(limiter.inflight(), 0u);
}

TEST(ConcurrencyLimiter, OneCallAtATimeDoesNotGrowTheLimit) {
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(10)), clock);
  for (int i = 0; i < 100; ++i) {
    auto admission = limiter.acquire();
    limiter.record(std::move(admission).permit(), Outcome::kSuccess, 1ms);
  }
  EXPECT_EQ(limiter.limit(), 10u);
}

TEST(ConcurrencyLimiter, IgnoredCancelledAndDroppedPermitsReleaseWithoutASample) {
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(2)), clock);
  for (int i = 0; i < 10; ++i) {
    auto first = limiter.acquire();
    auto second = limiter.acquire();
    ASSERT_TRUE(first && second);
    limiter.record(std::move(first).permit(), Outcome::kIgnored, 10s);
    limiter.record(std::move(second).permit(), Outcome::kCancelled, 10s);
    { auto dropped = limiter.acquire(); }
  }
  EXPECT_EQ(limiter.limit(), 2u) << "no sample reached the algorithm";
  EXPECT_EQ(limiter.estimated_limit(), 2.0);
  EXPECT_EQ(limiter.inflight(), 0u);
}

TEST(ConcurrencyLimiter, RecordWithoutLatencyMeasuresItWithTheClock) {
  ManualClock clock;
  AimdLimit::Config config = aimd(10);
  config.timeout = 1s;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(config), clock);
  auto admission = limiter.acquire();
  clock.advance(2s);  // slower than the timeout: a drop
  limiter.record(std::move(admission).permit(), Outcome::kSuccess);
  EXPECT_EQ(limiter.limit(), 9u);
}

TEST(ConcurrencyLimiter, PermitMoveReleasesExactlyOnce) {
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(5)), clock);
  static_assert(!std::is_copy_constructible_v<LimiterPermit>);
  LimiterPermit a = limiter.acquire().permit();
  LimiterPermit b = limiter.acquire().permit();
  EXPECT_EQ(limiter.inflight(), 2u);
  b = std::move(a);
  EXPECT_EQ(limiter.inflight(), 1u);
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): moved-from state is the contract
  LimiterPermit c(std::move(b));
  EXPECT_EQ(limiter.inflight(), 1u);
  limiter.record(std::move(c), Outcome::kIgnored, 1ms);
  EXPECT_EQ(limiter.inflight(), 0u);
}

TEST(ConcurrencyLimiter, ManyThreadsGetExactlyLimitPermits) {
  constexpr int kThreads = 8;
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(13)), clock);
  std::latch start(kThreads);
  std::latch all_tried(kThreads);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<LimiterPermit> held;
      start.arrive_and_wait();
      for (int i = 0; i < 100; ++i) {
        if (auto admission = limiter.acquire()) held.push_back(std::move(admission).permit());
      }
      admitted += static_cast<int>(held.size());
      all_tried.arrive_and_wait();
      for (auto& permit : held) limiter.record(std::move(permit), Outcome::kIgnored, 1ms);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 13);
  EXPECT_EQ(limiter.inflight(), 0u);
}

TEST(ConcurrencyLimiter, ConcurrentRecordsKeepCountsConsistent) {
  constexpr int kThreads = 4;
  constexpr std::uint32_t kMax = 64;
  ManualClock clock;
  ConcurrencyLimiter limiter("search", std::make_unique<GradientLimit>(gradient(8, 2, kMax)),
                             clock);
  std::atomic<int> in_flight{0};
  std::atomic<int> most_in_flight{0};
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < 5000; ++i) {
        auto admission = limiter.acquire();
        if (!admission) continue;
        int now_in_flight = ++in_flight;
        int most = most_in_flight.load();
        while (now_in_flight > most && !most_in_flight.compare_exchange_weak(most, now_in_flight)) {
        }
        --in_flight;
        Duration latency = std::chrono::milliseconds(5 + (i + t) % 20);
        limiter.record(std::move(admission).permit(),
                       i % 50 == 0 ? Outcome::kFailure : Outcome::kSuccess, latency);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(limiter.inflight(), 0u);
  EXPECT_LE(most_in_flight.load(), static_cast<int>(kMax));
  EXPECT_GE(limiter.limit(), 2u);
  EXPECT_LE(limiter.limit(), kMax);
}

TEST(ConcurrencyLimiter, ExportsLimitInflightAndCalls) {
  ManualClock clock;
  metrics::Registry registry;
  {
    ConcurrencyLimiter limiter("search", std::make_unique<AimdLimit>(aimd(1)), clock);
    limiter.bind_metrics(registry);
    auto held = limiter.acquire();
    auto rejected = limiter.acquire();
    std::string text = registry.render_prometheus();
    EXPECT_THAT(text, HasSubstr("keel_adaptive_limiter_limit{limiter=\"search\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_adaptive_limiter_inflight{limiter=\"search\"} 1\n"));
    limiter.record(std::move(held).permit(), Outcome::kFailure, 1ms);
    text = registry.render_prometheus();
    EXPECT_THAT(text, HasSubstr("keel_adaptive_limiter_calls_total{limiter=\"search\",result="
                                "\"permitted\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_adaptive_limiter_calls_total{limiter=\"search\",result="
                                "\"rejected\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_adaptive_limiter_calls_total{limiter=\"search\",result="
                                "\"dropped\"} 1\n"));
  }
  EXPECT_THAT(registry.render_prometheus(),
              ::testing::Not(HasSubstr("keel_adaptive_limiter_limit{")));
}

}  // namespace
}  // namespace keel::resilience

#include "keel/resilience/retry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace keel::resilience {
namespace {

BackoffConfig backoff_config(BackoffConfig::Kind kind, Duration base, Duration max,
                             double jitter = 0.0, double multiplier = 2.0) {
  BackoffConfig config;
  config.kind = kind;
  config.base = base;
  config.max = max;
  config.jitter = jitter;
  config.multiplier = multiplier;
  return config;
}

// Delays for retries 1..count, each fed the previous one, as RetryPolicy does.
std::vector<Duration> delays(const Backoff& backoff, std::uint32_t count, Random& random) {
  std::vector<Duration> result;
  Duration previous = backoff.config().base;
  for (std::uint32_t retry = 1; retry <= count; ++retry) {
    previous = backoff.delay(retry, previous, random);
    result.push_back(previous);
  }
  return result;
}

TEST(Backoff, ConstantWithoutJitterIsAlwaysBase) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kConstant, 100ms, 10s));
  Random random(1);
  EXPECT_EQ(delays(backoff, 5, random), std::vector<Duration>(5, 100ms));
}

TEST(Backoff, ExponentialWithoutJitterDoublesUpToMax) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kExponential, 100ms, 1s));
  Random random(1);
  std::vector<Duration> expected = {100ms, 200ms, 400ms, 800ms, 1s, 1s};
  EXPECT_EQ(delays(backoff, 6, random), expected);
}

TEST(Backoff, ExponentialHonoursMultiplier) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kExponential, 10ms, 1s, 0.0, 3.0));
  Random random(1);
  std::vector<Duration> expected = {10ms, 30ms, 90ms, 270ms, 810ms, 1s};
  EXPECT_EQ(delays(backoff, 6, random), expected);
}

TEST(Backoff, ExponentialDoesNotOverflowOnHugeRetryNumbers) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kExponential, 100ms, 10s, 0.5, 10.0));
  Random random(7);
  for (std::uint32_t retry : {64u, 1000u, 4'000'000'000u}) {
    Duration delay = backoff.delay(retry, 10s, random);
    EXPECT_GE(delay, 5s) << "retry " << retry;
    EXPECT_LE(delay, 10s) << "retry " << retry;
  }
}

TEST(Backoff, JitteredDelaysStayWithinTheirBandAndSpreadAcrossIt) {
  const double jitter = 0.5;
  for (auto kind : {BackoffConfig::Kind::kConstant, BackoffConfig::Kind::kExponential}) {
    Backoff backoff(backoff_config(kind, 100ms, 1s, jitter));
    for (std::uint32_t retry = 1; retry <= 6; ++retry) {
      const Duration nominal = kind == BackoffConfig::Kind::kConstant
                                   ? Duration(100ms)
                                   : std::min<Duration>(1s, 100ms * (1 << (retry - 1)));
      const auto low = Duration(static_cast<Duration::rep>(nominal.count() * (1 - jitter)));
      const auto high = std::min<Duration>(
          1s, Duration(static_cast<Duration::rep>(nominal.count() * (1 + jitter))));
      Duration smallest = Duration::max();
      Duration largest = Duration::min();
      for (std::uint64_t seed = 0; seed < 2000; ++seed) {
        Random random(seed);
        Duration delay = backoff.delay(retry, nominal, random);
        ASSERT_GE(delay, low) << "retry " << retry << " seed " << seed;
        ASSERT_LE(delay, high) << "retry " << retry << " seed " << seed;
        smallest = std::min(smallest, delay);
        largest = std::max(largest, delay);
      }
      // Jitter must actually spread the delays over most of the band.
      const auto band = high - low;
      EXPECT_LT(smallest, low + band / 10) << "retry " << retry;
      EXPECT_GT(largest, high - band / 10) << "retry " << retry;
    }
  }
}

TEST(Backoff, DecorrelatedJitterStaysBetweenBaseAndThreeTimesPreviousCappedAtMax) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kDecorrelatedJitter, 10ms, 2s));
  bool reached_max = false;
  for (std::uint64_t seed = 0; seed < 500; ++seed) {
    Random random(seed);
    Duration previous = 10ms;
    for (std::uint32_t retry = 1; retry <= 20; ++retry) {
      Duration delay = backoff.delay(retry, previous, random);
      ASSERT_GE(delay, 10ms) << "retry " << retry << " seed " << seed;
      ASSERT_LE(delay, std::min<Duration>(2s, previous * 3))
          << "retry " << retry << " seed " << seed;
      reached_max = reached_max || delay == 2s;
      previous = delay;
    }
  }
  EXPECT_TRUE(reached_max);
}

TEST(Backoff, DecorrelatedJitterTreatsAMissingPreviousDelayAsBase) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kDecorrelatedJitter, 10ms, 2s));
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    Random random(seed);
    Duration delay = backoff.delay(1, Duration::zero(), random);
    ASSERT_GE(delay, 10ms) << "seed " << seed;
    ASSERT_LE(delay, 30ms) << "seed " << seed;
  }
}

TEST(Backoff, SameSeedGivesTheSameDelays) {
  Backoff backoff(backoff_config(BackoffConfig::Kind::kDecorrelatedJitter, 10ms, 2s));
  Random first(42);
  Random second(42);
  EXPECT_EQ(delays(backoff, 10, first), delays(backoff, 10, second));
}

RetryConfig fixed_retry_config(std::uint32_t max_attempts, Duration delay) {
  RetryConfig config;
  config.max_attempts = max_attempts;
  config.backoff = backoff_config(BackoffConfig::Kind::kConstant, delay, delay);
  return config;
}

TEST(RetryPolicy, RetriesFailuresUntilMaxAttempts) {
  ManualClock clock;
  Random random(1);
  RetryPolicy policy(fixed_retry_config(3, 100ms), clock, random);
  Attempt first = policy.start();
  EXPECT_EQ(first.number, 1u);
  EXPECT_EQ(first.deadline, TimePoint::max());

  RetryDecision decision = policy.next(Outcome::kFailure);
  EXPECT_TRUE(decision.retry);
  EXPECT_EQ(decision.delay, 100ms);
  EXPECT_FALSE(decision.reason.has_value());
  decision = policy.next(Outcome::kFailure);
  EXPECT_TRUE(decision.retry);
  EXPECT_EQ(policy.attempts(), 3u);

  decision = policy.next(Outcome::kFailure);
  EXPECT_FALSE(decision.retry);
  EXPECT_FALSE(decision.done);
  EXPECT_EQ(decision.reason, errc::retries_exhausted);
  EXPECT_EQ(policy.attempts(), 3u);
}

TEST(RetryPolicy, OneAttemptMeansNoRetry) {
  ManualClock clock;
  Random random(1);
  RetryPolicy policy(fixed_retry_config(1, 100ms), clock, random);
  (void)policy.start();
  RetryDecision decision = policy.next(Outcome::kFailure);
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.reason, errc::retries_exhausted);
}

TEST(RetryPolicy, SuccessAndIgnoredEndTheCall) {
  for (Outcome outcome : {Outcome::kSuccess, Outcome::kIgnored}) {
    ManualClock clock;
    Random random(1);
    RetryPolicy policy(fixed_retry_config(3, 100ms), clock, random);
    (void)policy.start();
    ASSERT_TRUE(policy.next(Outcome::kFailure).retry);
    RetryDecision decision = policy.next(outcome);
    EXPECT_FALSE(decision.retry) << to_string(outcome);
    EXPECT_TRUE(decision.done) << to_string(outcome);
    EXPECT_FALSE(decision.reason.has_value()) << to_string(outcome);
  }
}

TEST(RetryPolicy, CancelledCallIsNotRetried) {
  ManualClock clock;
  Random random(1);
  RetryPolicy policy(fixed_retry_config(3, 100ms), clock, random);
  (void)policy.start();
  RetryDecision decision = policy.next(Outcome::kCancelled);
  EXPECT_FALSE(decision.retry);
  EXPECT_FALSE(decision.done);
  EXPECT_FALSE(decision.reason.has_value());
}

TEST(RetryPolicy, OverallDeadlineStopsRetriesThatWouldNotFit) {
  ManualClock clock;
  Random random(1);
  RetryConfig config = fixed_retry_config(10, 100ms);
  config.overall_timeout = 250ms;
  RetryPolicy policy(config, clock, random);
  const TimePoint start = clock.now();
  EXPECT_EQ(policy.start().deadline, start + 250ms);

  RetryDecision decision = policy.next(Outcome::kFailure);  // t=0: resumes at 100 ms
  ASSERT_TRUE(decision.retry);
  EXPECT_EQ(decision.attempt_deadline, start + 250ms);
  clock.advance(100ms);
  ASSERT_TRUE(policy.next(Outcome::kFailure).retry);  // t=100: resumes at 200 ms
  clock.advance(100ms);
  decision = policy.next(Outcome::kFailure);  // t=200: 300 ms is past the deadline
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.reason, errc::timeout);
  EXPECT_EQ(policy.attempts(), 3u);
}

TEST(RetryPolicy, AttemptDeadlineIsTheEarlierOfPerAttemptAndOverall) {
  ManualClock clock;
  Random random(1);
  RetryConfig config = fixed_retry_config(5, 100ms);
  config.per_attempt_timeout = 50ms;
  config.overall_timeout = 180ms;
  RetryPolicy policy(config, clock, random);
  const TimePoint start = clock.now();

  EXPECT_EQ(policy.start().deadline, start + 50ms);
  clock.advance(50ms);  // the first attempt timed out
  RetryDecision decision = policy.next(Outcome::kFailure);
  ASSERT_TRUE(decision.retry);
  // The next attempt starts at 150 ms; 150 + 50 would pass the overall deadline.
  EXPECT_EQ(decision.attempt_deadline, start + 180ms);
  EXPECT_EQ(policy.attempt_deadline(), start + 100ms);
  clock.advance(100ms);
  EXPECT_EQ(policy.attempt_deadline(), start + 180ms);
}

TEST(RetryPolicy, PerAttemptDeadlineCountsFromTheEndOfTheDelay) {
  ManualClock clock;
  Random random(1);
  RetryConfig config = fixed_retry_config(5, 100ms);
  config.per_attempt_timeout = 30ms;
  RetryPolicy policy(config, clock, random);
  const TimePoint start = clock.now();
  EXPECT_EQ(policy.start().deadline, start + 30ms);
  clock.advance(30ms);
  RetryDecision decision = policy.next(Outcome::kFailure);
  ASSERT_TRUE(decision.retry);
  EXPECT_EQ(decision.attempt_deadline, start + 160ms);
}

TEST(RetryPolicy, ExponentialDelaysGrowAcrossRetries) {
  ManualClock clock;
  Random random(1);
  RetryConfig config;
  config.max_attempts = 5;
  config.backoff = backoff_config(BackoffConfig::Kind::kExponential, 10ms, 1s);
  RetryPolicy policy(config, clock, random);
  (void)policy.start();
  std::vector<Duration> seen;
  for (RetryDecision d = policy.next(Outcome::kFailure); d.retry;
       d = policy.next(Outcome::kFailure)) {
    seen.push_back(d.delay);
  }
  EXPECT_EQ(seen, (std::vector<Duration>{10ms, 20ms, 40ms, 80ms}));
}

TEST(RetryPolicy, NonRetryableErrorStopsWithoutAPolicyReason) {
  ManualClock clock;
  Random random(1);
  RetryConfig config = fixed_retry_config(5, 100ms);
  config.retry_on = [](const Error& error) { return !error.is(keel::errc::invalid_argument); };
  RetryPolicy policy(config, clock, random);
  (void)policy.start();

  ASSERT_TRUE(policy.next(Error(keel::errc::io_error, "connection reset")).retry);
  RetryDecision decision = policy.next(Error(keel::errc::invalid_argument, "bad request"));
  EXPECT_FALSE(decision.retry);
  EXPECT_FALSE(decision.done);
  EXPECT_FALSE(decision.reason.has_value());
  EXPECT_EQ(policy.attempts(), 2u);
}

TEST(RetryPolicy, EveryErrorIsRetryableWithoutAPredicate) {
  ManualClock clock;
  Random random(1);
  RetryPolicy policy(fixed_retry_config(2, 100ms), clock, random);
  (void)policy.start();
  EXPECT_TRUE(policy.next(Error(keel::errc::invalid_argument, "anything")).retry);
  EXPECT_EQ(policy.next(Error(keel::errc::invalid_argument, "anything")).reason,
            errc::retries_exhausted);
}

TEST(RetryPolicy, StopsWhenTheBudgetIsSpent) {
  ManualClock clock;
  Random random(1);
  RetryBudget budget("upstream", {.budget_ratio = 0.2, .min_retries_per_second = 0, .window = 10s},
                     clock);
  for (int i = 0; i < 4; ++i) budget.deposit();

  // The policy's own deposit is the fifth request: it pays for exactly one retry.
  RetryPolicy first(fixed_retry_config(3, 100ms), clock, random, &budget);
  (void)first.start();
  EXPECT_TRUE(first.next(Outcome::kFailure).retry);
  RetryDecision decision = first.next(Outcome::kFailure);
  EXPECT_FALSE(decision.retry);
  EXPECT_EQ(decision.reason, errc::retry_budget_exhausted);
}

TEST(RetryPolicy, RefusalsForOtherReasonsDoNotSpendTheBudget) {
  ManualClock clock;
  Random random(1);
  RetryBudget budget("upstream", {.budget_ratio = 0.0, .min_retries_per_second = 1, .window = 1s},
                     clock);
  RetryPolicy policy(fixed_retry_config(1, 100ms), clock, random, &budget);
  (void)policy.start();
  EXPECT_EQ(policy.next(Outcome::kFailure).reason, errc::retries_exhausted);
  EXPECT_DOUBLE_EQ(budget.balance(), 1.0);
}

TEST(RetryBudget, HundredRequestsGrantTwentyRetriesPlusTheFloor) {
  ManualClock clock;
  RetryBudget budget("upstream", {}, clock);  // 20%, 3/s over 10 s
  for (int i = 0; i < 100; ++i) budget.deposit();
  EXPECT_DOUBLE_EQ(budget.balance(), 50.0);
  int granted = 0;
  while (granted < 1000 && budget.try_withdraw()) ++granted;
  EXPECT_EQ(granted, 20 + 30);
  EXPECT_DOUBLE_EQ(budget.balance(), 0.0);
}

TEST(RetryBudget, WithoutFloorGrantsExactlyTheRatio) {
  ManualClock clock;
  RetryBudget budget("upstream", {.budget_ratio = 0.1, .min_retries_per_second = 0, .window = 1s},
                     clock);
  for (int i = 0; i < 30; ++i) budget.deposit();
  int granted = 0;
  while (granted < 1000 && budget.try_withdraw()) ++granted;
  EXPECT_EQ(granted, 3);
}

TEST(RetryBudget, OnlyWholeRetriesAreGranted) {
  ManualClock clock;
  RetryBudget budget("upstream", {.budget_ratio = 0.2, .min_retries_per_second = 0, .window = 1s},
                     clock);
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 4; ++i) budget.deposit();
    EXPECT_FALSE(budget.try_withdraw()) << "round " << round;  // 0.8 of a retry
    budget.deposit();
    EXPECT_TRUE(budget.try_withdraw()) << "round " << round;
    EXPECT_FALSE(budget.try_withdraw()) << "round " << round;
  }
}

TEST(RetryBudget, RoundingOfTheRatioDoesNotCostARetry) {
  ManualClock clock;
  RetryBudget budget("upstream", {.budget_ratio = 0.7, .min_retries_per_second = 0, .window = 1s},
                     clock);
  for (int i = 0; i < 90; ++i) budget.deposit();  // 0.7 * 90 is 62.99999999999999 in doubles
  int granted = 0;
  while (granted < 1000 && budget.try_withdraw()) ++granted;
  EXPECT_EQ(granted, 63);
}

TEST(RetryBudget, FloorGrantsRetriesAtZeroTraffic) {
  ManualClock clock;
  RetryBudget budget("upstream", {.budget_ratio = 0.2, .min_retries_per_second = 3, .window = 10s},
                     clock);
  int granted = 0;
  while (granted < 1000 && budget.try_withdraw()) ++granted;
  EXPECT_EQ(granted, 30);
  EXPECT_FALSE(budget.try_withdraw());
}

TEST(RetryBudget, RefillsAsTheWindowSlides) {
  ManualClock clock;
  RetryBudget budget("upstream", {.budget_ratio = 0.2, .min_retries_per_second = 0, .window = 10s},
                     clock);
  for (int i = 0; i < 100; ++i) budget.deposit();
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(budget.try_withdraw()) << i;
  EXPECT_FALSE(budget.try_withdraw());

  clock.advance(5s);
  for (int i = 0; i < 50; ++i) budget.deposit();
  // 150 requests in the window pay for 30 retries, 20 of them spent.
  int granted = 0;
  while (granted < 1000 && budget.try_withdraw()) ++granted;
  EXPECT_EQ(granted, 10);

  // The first 100 requests and 20 retries are still inside the window just before 10 s...
  clock.advance(4999ms);
  EXPECT_FALSE(budget.try_withdraw());
  // ...and gone at 10 s, leaving 50 requests that paid for 10 retries already spent.
  clock.advance(1ms);
  EXPECT_DOUBLE_EQ(budget.balance(), 0.0);
  for (int i = 0; i < 50; ++i) budget.deposit();
  granted = 0;
  while (granted < 1000 && budget.try_withdraw()) ++granted;
  EXPECT_EQ(granted, 10);

  // A full quiet window later everything has aged out.
  clock.advance(10s);
  EXPECT_DOUBLE_EQ(budget.balance(), 0.0);
  for (int i = 0; i < 10; ++i) budget.deposit();
  EXPECT_DOUBLE_EQ(budget.balance(), 2.0);
}

TEST(RetryBudget, FloorRefillsAfterAWindow) {
  ManualClock clock;
  RetryBudget budget("upstream", {.budget_ratio = 0.0, .min_retries_per_second = 1, .window = 2s},
                     clock);
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_FALSE(budget.try_withdraw());
  clock.advance(2s);
  EXPECT_TRUE(budget.try_withdraw());
}

TEST(RetryBudget, ConcurrentWithdrawalsNeverExceedTheBudget) {
  ManualClock clock;
  RetryBudget budget("upstream", {}, clock);
  constexpr int kThreads = 4;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) budget.deposit();
    });
  }
  for (auto& thread : threads) thread.join();
  threads.clear();

  std::atomic<int> granted{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (budget.try_withdraw()) granted.fetch_add(1, std::memory_order_relaxed);
        (void)budget.balance();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(granted.load(), 4000 / 5 + 30);
}

TEST(RetryBudget, ExportsBalanceAndRejections) {
  ManualClock clock;
  metrics::Registry registry;
  RetryBudget budget("orders", {.budget_ratio = 0.0, .min_retries_per_second = 1, .window = 1s},
                     clock);
  budget.bind_metrics(registry);
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_FALSE(budget.try_withdraw());
  EXPECT_FALSE(budget.try_withdraw());
  EXPECT_EQ(
      registry
          .counter("keel_retry_budget_rejected_total",
                   "Retries refused because the retry budget was spent.", {{"budget", "orders"}})
          .value(),
      2u);
  std::string text = registry.render_prometheus();
  EXPECT_NE(text.find("keel_retry_budget_balance{budget=\"orders\"} 0\n"), std::string::npos)
      << text;
}

Result<RetryConfig> load_retry(std::string_view text) {
  auto document = config::Document::parse(text, "retry.yaml");
  if (!document) return document.error();
  RetryConfig config = RetryPolicy::read_config(document->root().child("retry"));
  if (auto status = document->status(); !status) return status.error();
  return config;
}

TEST(RetryPolicy, ReadsConfig) {
  auto config = load_retry(
      "retry:\n"
      "  max_attempts: 4\n"
      "  backoff: decorrelated_jitter\n"
      "  base_backoff_ms: 20\n"
      "  max_backoff_ms: 2000\n"
      "  backoff_multiplier: 1.5\n"
      "  jitter: 0.25\n"
      "  per_attempt_timeout_ms: 300\n"
      "  overall_timeout_ms: 1000\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->max_attempts, 4u);
  EXPECT_EQ(config->backoff.kind, BackoffConfig::Kind::kDecorrelatedJitter);
  EXPECT_EQ(config->backoff.base, 20ms);
  EXPECT_EQ(config->backoff.max, 2s);
  EXPECT_EQ(config->backoff.multiplier, 1.5);
  EXPECT_EQ(config->backoff.jitter, 0.25);
  EXPECT_EQ(config->per_attempt_timeout, 300ms);
  EXPECT_EQ(config->overall_timeout, 1s);

  auto defaults = load_retry("retry: {}\n");
  ASSERT_TRUE(defaults.ok()) << defaults.error().message();
  EXPECT_EQ(defaults->max_attempts, 3u);
  EXPECT_EQ(defaults->backoff.kind, BackoffConfig::Kind::kExponential);
}

TEST(RetryPolicy, ConfigErrorsNameTheField) {
  auto config = load_retry(
      "retry:\n"
      "  max_attempts: 0\n"
      "  backoff: linear\n"
      "  backoff_multiplier: 0.5\n"
      "  jitter: 2\n"
      "  base_backoff_ms: 500\n"
      "  max_backoff_ms: 100\n"
      "  max_attempt: 3\n");
  ASSERT_FALSE(config.ok());
  const std::string& message = config.error().message();
  for (const char* expected :
       {"retry.yaml:2:17: retry.max_attempts: expected a whole number from 1 to 100, got 0",
        "retry.backoff: expected one of constant, exponential, decorrelated_jitter",
        "retry.backoff_multiplier: expected a number from 1", "retry.jitter: expected a number",
        "retry.base_backoff_ms: must not be greater than max_backoff_ms (100)",
        "retry.max_attempt: unknown field (did you mean 'max_attempts'?)"}) {
    EXPECT_NE(message.find(expected), std::string::npos) << expected << "\nin:\n" << message;
  }
}

TEST(RetryBudget, ReadsConfig) {
  auto document = config::Document::parse(
      "budget:\n  budget_ratio: 0.5\n  min_retries_per_second: 7\n  window_ms: 30000\n",
      "budget.yaml");
  ASSERT_TRUE(document.ok());
  RetryBudget::Config config = RetryBudget::read_config(document->root().child("budget"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  EXPECT_EQ(config.budget_ratio, 0.5);
  EXPECT_EQ(config.min_retries_per_second, 7u);
  EXPECT_EQ(config.window, 30s);

  auto bad = config::Document::parse("budget:\n  budget_ratio: 1.5\n  window_ms: 0\n", "b.yaml");
  ASSERT_TRUE(bad.ok());
  (void)RetryBudget::read_config(bad->root().child("budget"));
  EXPECT_EQ(bad->errors().size(), 2u) << bad->status().error().message();
}

}  // namespace
}  // namespace keel::resilience

#include "keel/resilience/pipeline.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <thread>

namespace keel::resilience {
namespace {

const Error kUnavailable(keel::errc::io_error, "upstream unavailable");

CircuitBreakerConfig breaker_config() {
  CircuitBreakerConfig config;
  config.window_size = 10;
  config.minimum_calls = 10;
  return config;
}

RetryConfig no_backoff(std::uint32_t attempts) {
  RetryConfig config;
  config.max_attempts = attempts;
  config.backoff.kind = BackoffConfig::Kind::kConstant;
  config.backoff.base = Duration::zero();
  config.backoff.jitter = 0;
  return config;
}

TEST(Pipeline, RetriesFailuresAndReportsEveryAttemptToTheBreaker) {
  ManualClock clock;
  CircuitBreaker breaker("dep", breaker_config(), clock);
  Pipeline pipeline("dep", {.breaker = &breaker, .retry = no_backoff(3)}, clock);
  int calls = 0;
  Result<int> result = pipeline.call<int>([&](const CallContext& context) -> Result<int> {
    EXPECT_EQ(context.attempt, static_cast<std::uint32_t>(calls + 1));
    if (++calls < 3) return kUnavailable;
    return 42;
  });
  ASSERT_TRUE(result.ok()) << result.error().to_string();
  EXPECT_EQ(*result, 42);
  EXPECT_EQ(calls, 3);
  auto metrics = breaker.metrics();
  EXPECT_EQ(metrics.failed_calls_total, 2u);
  EXPECT_EQ(metrics.successful_calls_total, 1u);
}

TEST(Pipeline, RefusedRetryNamesTheReasonAndTheLastError) {
  ManualClock clock;
  Pipeline pipeline("dep", {.retry = no_backoff(2)}, clock);
  int calls = 0;
  Status status = pipeline.call<void>([&](const CallContext&) -> Status {
    ++calls;
    return kUnavailable;
  });
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(calls, 2);
  EXPECT_TRUE(status.error().is(errc::retries_exhausted));
  EXPECT_EQ(status.error().message(),
            "'dep': all attempts failed after 2 attempt(s); last error: keel: upstream "
            "unavailable");
}

TEST(Pipeline, OpenBreakerEndsTheCallWithoutCallingTheDependency) {
  ManualClock clock;
  CircuitBreaker breaker("dep", breaker_config(), clock);
  breaker.transition_to_open();
  Pipeline pipeline("dep", {.breaker = &breaker, .retry = no_backoff(5)}, clock);
  int calls = 0;
  Result<int> result = pipeline.call<int>([&](const CallContext&) -> Result<int> {
    ++calls;
    return 1;
  });
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(result.error().is(errc::circuit_open));
  EXPECT_NE(result.error().message().find("retry after 60000 ms"), std::string::npos)
      << result.error().message();
  EXPECT_EQ(calls, 0);
}

TEST(Pipeline, FullBulkheadRejectsTheCall) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("dep", {.max_concurrent_calls = 1}, clock);
  auto held = bulkhead.try_acquire();
  ASSERT_TRUE(held.admitted());
  Pipeline pipeline("dep", {.bulkhead = &bulkhead}, clock);
  Result<int> result = pipeline.call<int>([](const CallContext&) -> Result<int> { return 1; });
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(result.error().is(errc::bulkhead_full));
}

TEST(Pipeline, AttemptThatOutlivesItsDeadlineIsATimeoutFailure) {
  ManualClock clock;
  CircuitBreaker breaker("dep", breaker_config(), clock);
  Pipeline pipeline("dep", {.breaker = &breaker, .timeout = 1s}, clock);
  Result<int> result = pipeline.call<int>([&](const CallContext& context) -> Result<int> {
    EXPECT_EQ(context.deadline, clock.now() + 1s);
    clock.advance(1500ms);  // the dependency is slow
    return 7;
  });
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(result.error().is(errc::timeout));
  EXPECT_EQ(result.error().message(), "'dep': attempt 1 took 1500 ms and passed its deadline");
  EXPECT_EQ(breaker.metrics().failed_calls_total, 1u);
}

TEST(Pipeline, IgnoredErrorsAreNeitherRetriedNorHeldAgainstTheDependency) {
  ManualClock clock;
  CircuitBreaker breaker("dep", breaker_config(), clock);
  Pipeline pipeline("dep",
                    {.breaker = &breaker,
                     .retry = no_backoff(3),
                     .classify =
                         [](const Error& error) {
                           return error.is(keel::errc::invalid_argument) ? Outcome::kIgnored
                                                                         : Outcome::kFailure;
                         }},
                    clock);
  int calls = 0;
  Result<int> result = pipeline.call<int>([&](const CallContext&) -> Result<int> {
    ++calls;
    return Error(keel::errc::invalid_argument, "no such product");
  });
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.error().message(), "no such product");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(breaker.metrics().failed_calls_total, 0u);
  EXPECT_EQ(breaker.metrics().ignored_calls_total, 1u);
}

TEST(Pipeline, ExceptionsAreRecordedAsFailuresAndRethrown) {
  ManualClock clock;
  CircuitBreaker breaker("dep", breaker_config(), clock);
  SemaphoreBulkhead bulkhead("dep", {.max_concurrent_calls = 1}, clock);
  Pipeline pipeline("dep", {.bulkhead = &bulkhead, .breaker = &breaker}, clock);
  EXPECT_THROW(pipeline.call<int>(
                   [](const CallContext&) -> Result<int> { throw std::runtime_error("boom"); }),
               std::runtime_error);
  EXPECT_EQ(breaker.metrics().failed_calls_total, 1u);
  EXPECT_EQ(bulkhead.available_permits(), 1u) << "the bulkhead permit was released";
}

TEST(Pipeline, WaitsForTheBackoffOnTheInjectedClock) {
  ManualClock clock;
  RetryConfig retry = no_backoff(2);
  retry.backoff.base = 250ms;
  Pipeline pipeline("dep", {.retry = retry}, clock);
  int calls = 0;
  Result<int> result = Error(kUnavailable);
  std::thread caller([&] {
    result = pipeline.call<int>([&](const CallContext&) -> Result<int> {
      if (++calls == 1) return kUnavailable;
      return 2;
    });
  });
  while (clock.pending_timers() == 0) std::this_thread::yield();
  EXPECT_EQ(calls, 1);
  clock.advance(250ms);
  caller.join();
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace keel::resilience

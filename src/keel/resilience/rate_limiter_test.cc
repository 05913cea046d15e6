#include "keel/resilience/rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "keel/core/random.h"

namespace keel::resilience {
namespace {

TEST(TokenBucket, AdmitsTheBurstAtOnceThenOnePerInterval) {
  ManualClock clock;
  const TimePoint start = clock.now();
  TokenBucket bucket("upstream", {.rate_per_second = 10, .burst = 5}, clock);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.try_acquire()) << i;
  auto refused = bucket.try_acquire();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.rejection().reason, errc::rate_limited);
  EXPECT_EQ(refused.rejection().retry_at, start + 100ms);

  for (int step = 1; step <= 20; ++step) {
    clock.advance(99ms);
    auto early = bucket.try_acquire();
    ASSERT_FALSE(early) << "step " << step;
    EXPECT_EQ(early.rejection().retry_at, start + step * 100ms) << "step " << step;
    clock.advance(1ms);
    EXPECT_TRUE(bucket.try_acquire()) << "step " << step;
    EXPECT_FALSE(bucket.try_acquire()) << "step " << step;
  }
}

TEST(TokenBucket, RetryAtIsWhenEnoughTokensHaveRefilled) {
  ManualClock clock;
  const TimePoint start = clock.now();
  TokenBucket bucket("upstream", {.rate_per_second = 10, .burst = 5}, clock);
  ASSERT_TRUE(bucket.try_acquire(4));
  auto refused = bucket.try_acquire(3);  // one left, two more take 200 ms
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.rejection().retry_at, start + 200ms);
  clock.advance_to(refused.rejection().retry_at - 1ns);
  EXPECT_FALSE(bucket.try_acquire(3));
  clock.advance(1ns);
  EXPECT_TRUE(bucket.try_acquire(3));
  EXPECT_NEAR(bucket.available(), 0.0, 1e-9);
}

TEST(TokenBucket, RetryAtIsExactUnderRandomTraffic) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    ManualClock clock;
    Random random(seed);
    TokenBucket bucket("upstream", {.rate_per_second = 7, .burst = 4}, clock);
    int rejections = 0;
    for (int i = 0; i < 300; ++i) {
      clock.advance(Duration(random.uniform(200'000'000)));
      const auto tokens = static_cast<std::uint32_t>(1 + random.uniform(4));
      auto admission = bucket.try_acquire(tokens);
      if (admission) continue;
      ++rejections;
      const TimePoint retry_at = admission.rejection().retry_at;
      ASSERT_GT(retry_at, clock.now()) << "seed " << seed;
      clock.advance_to(retry_at - 1ns);
      ASSERT_FALSE(bucket.try_acquire(tokens)) << "seed " << seed << " call " << i;
      clock.advance(1ns);
      ASSERT_TRUE(bucket.try_acquire(tokens)) << "seed " << seed << " call " << i;
    }
    EXPECT_GT(rejections, 10) << "seed " << seed;
  }
}

TEST(TokenBucket, MoreTokensThanTheBurstCanNeverBeGranted) {
  ManualClock clock;
  TokenBucket bucket("upstream", {.rate_per_second = 10, .burst = 5}, clock);
  auto refused = bucket.try_acquire(6);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.rejection().reason, errc::rate_limited);
  EXPECT_EQ(refused.rejection().retry_at, TimePoint::max());
  EXPECT_EQ(bucket.available(), 5.0);
  EXPECT_TRUE(bucket.try_acquire(5));
}

TEST(TokenBucket, DoesNotAccumulateBeyondTheBurstWhenIdle) {
  ManualClock clock;
  TokenBucket bucket("upstream", {.rate_per_second = 10, .burst = 5}, clock);
  ASSERT_TRUE(bucket.try_acquire(5));
  clock.advance(1h);
  EXPECT_EQ(bucket.available(), 5.0);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(bucket.try_acquire()) << i;
  EXPECT_FALSE(bucket.try_acquire());
}

TEST(TokenBucket, AvailableCountsFractionalRefill) {
  ManualClock clock;
  TokenBucket bucket("upstream", {.rate_per_second = 10, .burst = 5}, clock);
  EXPECT_EQ(bucket.available(), 5.0);
  ASSERT_TRUE(bucket.try_acquire(5));
  EXPECT_EQ(bucket.available(), 0.0);
  clock.advance(250ms);
  EXPECT_DOUBLE_EQ(bucket.available(), 2.5);
}

TEST(TokenBucket, ZeroTokensAlwaysSucceed) {
  ManualClock clock;
  TokenBucket bucket("upstream", {.rate_per_second = 1, .burst = 1}, clock);
  ASSERT_TRUE(bucket.try_acquire());
  EXPECT_TRUE(bucket.try_acquire(0));
  EXPECT_FALSE(bucket.try_acquire(1));
}

TEST(TokenBucket, RatesThatAreNotWholeNanosecondsRoundTheInterval) {
  ManualClock clock;
  const TimePoint start = clock.now();
  TokenBucket bucket("upstream", {.rate_per_second = 3, .burst = 1}, clock);
  ASSERT_TRUE(bucket.try_acquire());
  auto refused = bucket.try_acquire();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.rejection().retry_at, start + 333'333'333ns);
}

TEST(TokenBucket, ConcurrentCallersWithAFrozenClockGetExactlyTheBurst) {
  ManualClock clock;
  TokenBucket bucket("upstream", {.rate_per_second = 1000, .burst = 1000}, clock);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        if (bucket.try_acquire()) admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 1000);
}

TEST(TokenBucket, CountsCallsInMetrics) {
  ManualClock clock;
  metrics::Registry registry;
  TokenBucket bucket("orders", {.rate_per_second = 10, .burst = 2}, clock);
  bucket.bind_metrics(registry);
  SlidingWindowLimiter window("search", {.limit = 1, .window = 1s}, clock);
  window.bind_metrics(registry);  // the same series names must register side by side
  for (int i = 0; i < 5; ++i) (void)bucket.try_acquire();
  (void)window.try_acquire();
  (void)window.try_acquire();

  std::string text = registry.render_prometheus();
  for (const char* expected :
       {"keel_rate_limiter_calls_total{limiter=\"orders\",result=\"permitted\"} 2\n",
        "keel_rate_limiter_calls_total{limiter=\"orders\",result=\"rejected\"} 3\n",
        "keel_rate_limiter_calls_total{limiter=\"search\",result=\"permitted\"} 1\n",
        "keel_rate_limiter_calls_total{limiter=\"search\",result=\"rejected\"} 1\n",
        "keel_rate_limiter_available{limiter=\"orders\"} 0\n",
        "keel_rate_limiter_available{limiter=\"search\"} 0\n"}) {
    EXPECT_NE(text.find(expected), std::string::npos) << expected << "\nin:\n" << text;
  }
  clock.advance(100ms);
  text = registry.render_prometheus();
  EXPECT_NE(text.find("keel_rate_limiter_available{limiter=\"orders\"} 1\n"), std::string::npos)
      << text;
}

TEST(TokenBucket, ReadsConfig) {
  auto document =
      config::Document::parse("limit:\n  rate_per_second: 2.5\n  burst: 7\n", "limits.yaml");
  ASSERT_TRUE(document.ok());
  TokenBucket::Config config = TokenBucket::read_config(document->root().child("limit"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  EXPECT_EQ(config.rate_per_second, 2.5);
  EXPECT_EQ(config.burst, 7u);

  auto bad = config::Document::parse("limit:\n  rate_per_second: 0\n  burst: 0\n  brust: 1\n",
                                     "limits.yaml");
  ASSERT_TRUE(bad.ok());
  (void)TokenBucket::read_config(bad->root().child("limit"));
  ASSERT_FALSE(bad->status().ok());
  const std::string message = bad->status().error().message();
  for (const char* expected :
       {"limits.yaml:2:20: limit.rate_per_second: expected a number above 0",
        "limit.burst: expected a whole number from 1", "limit.brust: unknown field"}) {
    EXPECT_NE(message.find(expected), std::string::npos) << expected << "\nin:\n" << message;
  }
}

TEST(SlidingWindowLimiter, WeighsThePreviousWindowByTheTimeLeftInIt) {
  ManualClock clock;
  const TimePoint start = clock.now();
  SlidingWindowLimiter limiter("upstream", {.limit = 10, .window = 1s}, clock);
  clock.advance(900ms);
  for (int i = 0; i < 10; ++i) EXPECT_TRUE(limiter.try_acquire()) << i;
  EXPECT_FALSE(limiter.try_acquire());

  clock.advance_to(start + 1500ms);  // the 10 calls now weigh 10 * 0.5 = 5
  EXPECT_DOUBLE_EQ(limiter.available(), 5.0);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.try_acquire()) << i;
  auto refused = limiter.try_acquire();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.rejection().reason, errc::rate_limited);
  // 5 + 10 * (1 - e) + 1 <= 10 once e reaches 0.6 s.
  EXPECT_EQ(refused.rejection().retry_at, start + 1600ms);
  clock.advance(99ms);
  EXPECT_FALSE(limiter.try_acquire());
  clock.advance(1ms);
  EXPECT_TRUE(limiter.try_acquire());
}

TEST(SlidingWindowLimiter, FullWindowRetriesInTheNextOne) {
  ManualClock clock;
  const TimePoint start = clock.now();
  SlidingWindowLimiter limiter("upstream", {.limit = 10, .window = 1s}, clock);
  clock.advance(900ms);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(limiter.try_acquire()) << i;
  auto refused = limiter.try_acquire();
  ASSERT_FALSE(refused);
  // In the next window the 10 calls weigh 10 * (1 - e); one more fits once e reaches 0.1 s.
  EXPECT_EQ(refused.rejection().retry_at, start + 1100ms);
  clock.advance_to(start + 1100ms - 1ns);
  EXPECT_FALSE(limiter.try_acquire());
  clock.advance(1ns);
  EXPECT_TRUE(limiter.try_acquire());
}

TEST(SlidingWindowLimiter, LimitOfOneWaitsTwoWindowsAfterACallAtTheStart) {
  ManualClock clock;
  const TimePoint start = clock.now();
  SlidingWindowLimiter limiter("upstream", {.limit = 1, .window = 1s}, clock);
  ASSERT_TRUE(limiter.try_acquire());
  auto refused = limiter.try_acquire();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.rejection().retry_at, start + 2s);
  clock.advance(2s - 1ns);
  EXPECT_FALSE(limiter.try_acquire());
  clock.advance(1ns);
  EXPECT_TRUE(limiter.try_acquire());
}

TEST(SlidingWindowLimiter, ForgetsEverythingAfterTwoQuietWindows) {
  ManualClock clock;
  SlidingWindowLimiter limiter("upstream", {.limit = 3, .window = 1s}, clock);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter.try_acquire());
  EXPECT_FALSE(limiter.try_acquire());
  clock.advance(2s);
  EXPECT_DOUBLE_EQ(limiter.available(), 3.0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.try_acquire()) << i;
  EXPECT_FALSE(limiter.try_acquire());
}

TEST(SlidingWindowLimiter, NeverAdmitsMoreThanTheLimitPerFixedWindow) {
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    ManualClock clock;
    const TimePoint start = clock.now();
    Random random(seed);
    SlidingWindowLimiter limiter("upstream", {.limit = 5, .window = 100ms}, clock);
    std::vector<int> per_window(200, 0);
    int rejections = 0;
    while (clock.now() - start < 100 * 100ms) {
      clock.advance(Duration(random.uniform(20'000'000)));
      auto admission = limiter.try_acquire();
      if (admission) {
        ++per_window[static_cast<std::size_t>((clock.now() - start) / 100ms)];
        continue;
      }
      ++rejections;
      // retry_at is the first instant that admits, when nothing else is admitted meanwhile.
      const TimePoint retry_at = admission.rejection().retry_at;
      ASSERT_GT(retry_at, clock.now()) << "seed " << seed;
      clock.advance_to(retry_at - 1ns);
      ASSERT_FALSE(limiter.try_acquire()) << "seed " << seed;
      clock.advance(1ns);
      ASSERT_TRUE(limiter.try_acquire()) << "seed " << seed;
      ++per_window[static_cast<std::size_t>((clock.now() - start) / 100ms)];
    }
    for (int count : per_window) ASSERT_LE(count, 5) << "seed " << seed;
    EXPECT_GT(rejections, 10) << "seed " << seed;
  }
}

TEST(SlidingWindowLimiter, ConcurrentCallersWithAFrozenClockGetExactlyTheLimit) {
  ManualClock clock;
  SlidingWindowLimiter limiter("upstream", {.limit = 1000, .window = 1s}, clock);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5000; ++i) {
        if (limiter.try_acquire()) admitted.fetch_add(1, std::memory_order_relaxed);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 1000);
}

TEST(SlidingWindowLimiter, ReadsConfig) {
  auto document = config::Document::parse("limit:\n  limit: 50\n  window_ms: 2000\n", "l.yaml");
  ASSERT_TRUE(document.ok());
  auto config = SlidingWindowLimiter::read_config(document->root().child("limit"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  EXPECT_EQ(config.limit, 50u);
  EXPECT_EQ(config.window, 2s);

  auto bad = config::Document::parse("limit:\n  limit: 0\n  window_ms: 0\n", "l.yaml");
  ASSERT_TRUE(bad.ok());
  (void)SlidingWindowLimiter::read_config(bad->root().child("limit"));
  EXPECT_EQ(bad->errors().size(), 2u) << bad->status().error().message();
}

}  // namespace
}  // namespace keel::resilience

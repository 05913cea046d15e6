#include "keel/balance/health_checker.h"

#include <gtest/gtest.h>

namespace keel::balance {
namespace {

TEST(HealthChecker, FallAndRiseThresholds) {
  ManualClock clock;
  Random random(1);
  EndpointSet set({{"a", 1}, {"b", 1}}, {}, clock);
  HealthCheckConfig config;
  config.unhealthy_threshold = 3;
  config.healthy_threshold = 2;
  HealthChecker checker(set, config, random);
  EXPECT_FALSE(checker.record(0, false).has_value());
  EXPECT_FALSE(checker.record(0, false).has_value());
  auto down = checker.record(0, false);
  ASSERT_TRUE(down.has_value());
  EXPECT_FALSE(down->healthy);
  EXPECT_FALSE(set[0].healthy);
  EXPECT_FALSE(checker.record(0, true).has_value());
  EXPECT_FALSE(checker.record(0, false).has_value()) << "a failure restarts the rise";
  EXPECT_FALSE(checker.record(0, true).has_value());
  auto up = checker.record(0, true);
  ASSERT_TRUE(up.has_value());
  EXPECT_TRUE(up->healthy);
  EXPECT_TRUE(set[0].healthy);
}

TEST(HealthChecker, ChecksFallDueOncePerIntervalWithJitterAndNotWhileInFlight) {
  ManualClock clock;
  Random random(7);
  std::vector<EndpointConfig> endpoints;
  for (int i = 0; i < 20; ++i) endpoints.push_back({"e" + std::to_string(i), 1});
  EndpointSet set(endpoints, {}, clock);
  HealthCheckConfig config;
  config.interval = 10s;
  config.jitter_percent = 20;
  HealthChecker checker(set, config, random);
  // The first checks spread over the first interval.
  clock.advance(5s);
  std::size_t early = checker.due().size();
  EXPECT_GT(early, 3u);
  EXPECT_LT(early, 17u);
  clock.advance(5s);
  EXPECT_EQ(early + checker.due().size(), 20u);
  EXPECT_EQ(checker.next_due(), TimePoint::max()) << "every check is in flight";
  clock.advance(15s);
  EXPECT_TRUE(checker.due().empty()) << "in flight until recorded";
  for (std::size_t i = 0; i < 20; ++i) checker.record(i, true);
  TimePoint next = checker.next_due();
  EXPECT_LE(next, clock.now()) << "overdue checks are due at once";
}

}  // namespace
}  // namespace keel::balance

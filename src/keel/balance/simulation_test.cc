#include "keel/balance/simulation.h"

#include <gtest/gtest.h>

namespace keel::balance {
namespace {

SimulationConfig short_run() {
  SimulationConfig config;
  config.duration = 10s;
  config.requests_per_second = 2000;
  return config;
}

TEST(Simulation, PeakEwmaKeepsTheTailFarBelowRoundRobinWhenAnEndpointStalls) {
  auto round_robin = simulate("round_robin", short_run());
  auto peak_ewma = simulate("peak_ewma", short_run());
  ASSERT_TRUE(round_robin.ok() && peak_ewma.ok());
  EXPECT_NEAR(round_robin->stalled_share_pct, 10, 0.5) << "round robin ignores the stall";
  EXPECT_LT(peak_ewma->stalled_share_pct, 1);
  EXPECT_LT(peak_ewma->p999_ms * 10, round_robin->p999_ms)
      << "peak_ewma " << peak_ewma->p999_ms << " ms, round_robin " << round_robin->p999_ms;
  EXPECT_GT(peak_ewma->success_pct, round_robin->success_pct);
}

// Three endpoints, as in the acceptance test that found peak_ewma starving a recovered endpoint.
SimulationConfig three_endpoints() {
  SimulationConfig config;
  config.endpoints = 3;
  config.requests_per_second = 3000;
  config.stall_start = 1.0 / 3;  // 10 s of a 30 s run
  config.stall_end = 2.0 / 3;
  return config;
}

TEST(Simulation, PeakEwmaGivesARecoveredEndpointItsShareBackWithinTwoSeconds) {
  for (std::uint64_t seed : {1, 2, 3}) {
    SimulationConfig config = three_endpoints();
    config.seed = seed;
    auto round_robin = simulate("round_robin", config);
    auto peak_ewma = simulate("peak_ewma", config);
    ASSERT_TRUE(round_robin.ok() && peak_ewma.ok());
    EXPECT_GE(peak_ewma->recovery_ms, 0) << "seed " << seed << ": never recovered";
    EXPECT_LE(peak_ewma->recovery_ms, 2000) << "seed " << seed;
    EXPECT_LT(peak_ewma->p999_ms * 10, round_robin->p999_ms) << "seed " << seed;
  }
}

TEST(Simulation, PeakEwmaKeepsThreeHealthyEndpointsNearAThird) {
  for (double rate : {3000.0, 300.0}) {
    for (std::uint64_t seed : {1, 2, 3}) {
      SimulationConfig config = three_endpoints();
      config.stall_factor = 1;
      config.requests_per_second = rate;
      config.seed = seed;
      auto peak_ewma = simulate("peak_ewma", config);
      ASSERT_TRUE(peak_ewma.ok());
      EXPECT_GE(peak_ewma->max_share_deviation_points, 0);
      EXPECT_LE(peak_ewma->max_share_deviation_points, 10)
          << rate << " requests/s, seed " << seed << ": over some 5 s window";
    }
  }
}

TEST(Simulation, SameSeedSameResult) {
  auto a = simulate("least_request", short_run());
  auto b = simulate("least_request", short_run());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->requests, b->requests);
  EXPECT_EQ(a->p999_ms, b->p999_ms);
  EXPECT_EQ(a->histogram, b->histogram);
}

TEST(Simulation, UnknownPolicyIsAnError) { EXPECT_FALSE(simulate("fastest", short_run()).ok()); }

}  // namespace
}  // namespace keel::balance

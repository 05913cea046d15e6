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

#include "keel/balance/endpoint_set.h"

#include <gtest/gtest.h>

#include <cmath>

namespace keel::balance {
namespace {

std::vector<EndpointConfig> four() { return {{"a", 1}, {"b", 1}, {"c", 1}, {"d", 1}}; }

TEST(EndpointSet, EligibleAreHealthyAndNotEjected) {
  ManualClock clock;
  EndpointSet set(four(), {}, clock);
  EXPECT_EQ(set.eligible(), (std::vector<std::size_t>{0, 1, 2, 3}));
  set.set_healthy(1, false);
  set.eject(2, clock.now() + 10s);
  // 2 of 4 eligible = 50%: not below the 50% panic threshold.
  EXPECT_EQ(set.eligible(), (std::vector<std::size_t>{0, 3}));
  EXPECT_FALSE(set.in_panic());
  clock.advance(10s);
  EXPECT_EQ(set.eligible(), (std::vector<std::size_t>{0, 2, 3})) << "the ejection ran out";
}

TEST(EndpointSet, PanicThresholdSpreadsOverEveryEndpoint) {
  ManualClock clock;
  EndpointSet set(four(), {}, clock);
  std::uint64_t version = set.version();
  set.set_healthy(0, false);
  set.set_healthy(1, false);
  set.set_healthy(2, false);  // 1 of 4 = 25% < 50%
  EXPECT_EQ(set.eligible(), (std::vector<std::size_t>{0, 1, 2, 3}));
  EXPECT_TRUE(set.in_panic());
  EXPECT_NE(set.version(), version);
  set.set_healthy(2, true);
  EXPECT_EQ(set.eligible(), (std::vector<std::size_t>{2, 3}));
  EXPECT_FALSE(set.in_panic());
}

TEST(EndpointSet, SlowStartRampsWeightFromTheMinimum) {
  ManualClock clock;
  EndpointSet::Options options;
  options.slow_start_window = 10s;
  options.slow_start_min_weight_percent = 10;
  EndpointSet set({{"a", 100}, {"b", 100}}, options, clock);
  EXPECT_EQ(set.effective_weight(0), 100) << "endpoints present at start are not ramped";
  set.set_healthy(1, false);
  clock.advance(1s);
  set.set_healthy(1, true);
  EXPECT_EQ(set.eligible().size(), 2u);
  EXPECT_TRUE(set.slow_starting());
  EXPECT_DOUBLE_EQ(set.effective_weight(1), 10);  // the 10% floor
  clock.advance(5s);
  EXPECT_DOUBLE_EQ(set.effective_weight(1), 50);
  clock.advance(5s);
  EXPECT_DOUBLE_EQ(set.effective_weight(1), 100);
  EXPECT_FALSE(set.slow_starting());
}

TEST(PeakEwma, JumpsToPeaksAndDecaysTowardLowerSamples) {
  ManualClock clock;
  PeakEwma ewma;
  EXPECT_FALSE(ewma.has_samples());
  ewma.observe(10ms, clock.now(), 10s);
  ewma.observe(500ms, clock.now(), 10s);
  EXPECT_DOUBLE_EQ(ewma.value(clock.now(), 10s), 500e6) << "a peak replaces the average at once";
  clock.advance(10s);
  EXPECT_NEAR(ewma.value(clock.now(), 10s), 500e6 / std::exp(1.0), 1e3) << "decays with time";
  ewma.observe(10ms, clock.now(), 10s);
  // Below the average: the stored 500 ms and the sample mix with weight exp(-10 s / 10 s).
  EXPECT_NEAR(ewma.value(clock.now(), 10s), 500e6 * std::exp(-1.0) + 10e6 * (1 - std::exp(-1.0)),
              1e3);
}

TEST(EndpointSet, CountsRequestsInFlight) {
  ManualClock clock;
  EndpointSet set(four(), {}, clock);
  set.on_start(1);
  set.on_start(1);
  EXPECT_EQ(set[1].active_requests, 2u);
  set.on_complete(1, false, 5ms);
  EXPECT_EQ(set[1].active_requests, 1u);
  EXPECT_EQ(set[1].failures_total, 1u);
  EXPECT_EQ(set[1].requests_total, 2u);
}

}  // namespace
}  // namespace keel::balance

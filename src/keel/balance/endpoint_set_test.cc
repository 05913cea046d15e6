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

TEST(PeakEwma, JumpsToPeaksAndMovesTowardLowerSamplesWithTime) {
  ManualClock clock;
  PeakEwma ewma;
  EXPECT_FALSE(ewma.has_samples());
  ewma.observe(10ms, clock.now(), 10s);
  clock.advance(1s);
  ewma.observe(500ms, clock.now(), 10s);
  EXPECT_DOUBLE_EQ(ewma.value(), 500e6) << "a peak replaces the average at once";
  clock.advance(100ms);
  ewma.observe(900ms, clock.now(), 10s);
  EXPECT_DOUBLE_EQ(ewma.value(), 500e6) << "sent before the 500 ms one: old news";
  clock.advance(10s);
  EXPECT_DOUBLE_EQ(ewma.value(), 500e6) << "no decay on its own: EndpointSet decides";
  ewma.observe(10ms, clock.now(), 10s);
  // Below the average: the stored 500 ms and the sample mix with weight exp(-10.1 s / 10 s)
  // (the old news was no news: 10.1 s since the 500 ms sample).
  EXPECT_NEAR(ewma.value(), 500e6 * std::exp(-1.01) + 10e6 * (1 - std::exp(-1.01)), 1e3);
  clock.advance(1ms);
  double before = ewma.value();
  ewma.observe(10ms, clock.now(), 10s);
  EXPECT_NEAR(ewma.value(), before * 0.9 + 10e6 * 0.1, 1e3) << "a sample weighs at least 0.1";
}

// Endpoints 0..2 answer in 4, 6 and 8 ms; endpoint 3 once took a second.
void sample_four(EndpointSet& set) {
  const Duration latencies[] = {4ms, 6ms, 8ms, 1s};
  for (std::size_t i = 0; i < 4; ++i) {
    set.on_start(i);
    set.on_complete(i, true, latencies[i]);
  }
}

TEST(EndpointSet, AStaleEstimateDriftsTowardTheMedianOfTheOthersNotTowardZero) {
  ManualClock clock;
  EndpointSet set(four(), {.latency_decay = 10s, .latency_stale_after = 500ms}, clock);
  sample_four(set);
  EXPECT_DOUBLE_EQ(set.typical_latency_ns(3), 6e6);
  EXPECT_DOUBLE_EQ(set.latency_estimate_ns(3), 1e9) << "fresh: the peak stands";
  EXPECT_FALSE(set.latency_stale(3));
  for (int step = 0; step < 100; ++step) {  // 10 s; the others keep answering
    clock.advance(100ms);
    for (std::size_t i = 0; i < 3; ++i) set.on_complete(i, true, Duration((4 + 2 * i) * 1ms));
  }
  EXPECT_TRUE(set.latency_stale(3));
  EXPECT_NEAR(set.latency_estimate_ns(3), 6e6 + (1e9 - 6e6) * std::exp(-1.0), 1e3)
      << "10 s without a sample, 10 s decay";
  clock.advance(60s);
  EXPECT_NEAR(set.latency_estimate_ns(3), 6e6, 1e6) << "the others are stale too by now";
  set.on_start(3);
  set.on_complete(3, true, 5ms);
  EXPECT_DOUBLE_EQ(set.latency_estimate_ns(3), 5e6) << "the next sample replaces a stale one";
}

TEST(EndpointSet, AnEndpointBackInServiceStartsFromTheMedianOfTheOthers) {
  ManualClock clock;
  EndpointSet set(four(), {}, clock);
  sample_four(set);
  set.set_healthy(3, false);
  set.set_healthy(3, true);
  EXPECT_DOUBLE_EQ(set.latency_estimate_ns(3), 6e6) << "healthy again";
  sample_four(set);
  set.eject(3, clock.now() + 30s);
  set.uneject(3);
  EXPECT_DOUBLE_EQ(set.latency_estimate_ns(3), 6e6) << "unejected";
  sample_four(set);
  set.eject(3, clock.now() + 2s);
  clock.advance(2s);
  for (std::size_t i = 0; i < 3; ++i) set.on_complete(i, true, Duration((4 + 2 * i) * 1ms));
  EXPECT_EQ(set.eligible().size(), 4u);
  EXPECT_DOUBLE_EQ(set.latency_estimate_ns(3), 6e6) << "the ejection ran out";
  set.set_healthy(0, false);
  EXPECT_DOUBLE_EQ(set.typical_latency_ns(3), 7e6) << "an unhealthy endpoint is not typical";
}

TEST(EndpointSet, WithNoSampleAnywhereTheEstimateIsZero) {
  ManualClock clock;
  EndpointSet set(four(), {}, clock);
  EXPECT_EQ(set.latency_estimate_ns(0), 0);
  EXPECT_TRUE(set.latency_stale(0));
  set.set_healthy(0, false);
  set.set_healthy(0, true);
  EXPECT_FALSE(set[0].latency.has_samples()) << "nothing typical to start from";
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

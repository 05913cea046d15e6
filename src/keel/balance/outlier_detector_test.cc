#include "keel/balance/outlier_detector.h"

#include <gtest/gtest.h>

namespace keel::balance {
namespace {

std::vector<EndpointConfig> endpoints(std::size_t n) {
  std::vector<EndpointConfig> result;
  for (std::size_t i = 0; i < n; ++i) result.push_back({"e" + std::to_string(i), 1});
  return result;
}

OutlierConfig config() {
  OutlierConfig c;
  c.consecutive_5xx = 3;
  c.consecutive_gateway_errors = 2;
  c.base_ejection_time = 30s;
  c.max_ejection_time = 100s;
  c.max_ejection_percent = 20;
  return c;
}

TEST(OutlierDetector, ConsecutiveErrorsEjectAndTheEndpointReturnsAfterItsTime) {
  ManualClock clock;
  EndpointSet set(endpoints(10), {}, clock);
  OutlierDetector detector(set, config());
  EXPECT_FALSE(detector.record(0, ResponseClass::kServerError));
  EXPECT_FALSE(detector.record(0, ResponseClass::kServerError));
  EXPECT_FALSE(detector.record(0, ResponseClass::kSuccess));  // breaks the run
  EXPECT_FALSE(detector.record(0, ResponseClass::kServerError));
  EXPECT_FALSE(detector.record(0, ResponseClass::kServerError));
  EXPECT_TRUE(detector.record(0, ResponseClass::kServerError));
  EXPECT_EQ(set.eligible().size(), 9u);
  clock.advance(30s);
  EXPECT_EQ(set.eligible().size(), 10u) << "back after base_ejection_time";
}

TEST(OutlierDetector, GatewayErrorsHaveTheirOwnThreshold) {
  ManualClock clock;
  EndpointSet set(endpoints(10), {}, clock);
  OutlierDetector detector(set, config());
  EXPECT_FALSE(detector.record(1, ResponseClass::kGatewayError));
  EXPECT_TRUE(detector.record(1, ResponseClass::kGatewayError));
  EXPECT_FALSE(detector.record(2, ResponseClass::kLocalOrigin)) << "a 4xx is the caller's";
}

TEST(OutlierDetector, EjectionTimeGrowsWithEachEjectionUpToTheCap) {
  ManualClock clock;
  EndpointSet set(endpoints(10), {}, clock);
  OutlierDetector detector(set, config());
  std::vector<Duration> ejections;
  for (int round = 0; round < 4; ++round) {
    TimePoint at = clock.now();
    ASSERT_TRUE(detector.record(0, ResponseClass::kGatewayError) ||
                detector.record(0, ResponseClass::kGatewayError));
    ejections.push_back(set[0].ejected_until - at);
    clock.advance_to(set[0].ejected_until);
  }
  EXPECT_EQ(ejections, (std::vector<Duration>{30s, 60s, 90s, 100s}));
  EXPECT_EQ(detector.times_ejected(0), 4u);
  detector.tick();  // ends the last ejection
  for (int i = 0; i < 4; ++i) {
    clock.advance(10s);
    detector.tick();
  }
  EXPECT_EQ(detector.times_ejected(0), 0u) << "quiet intervals earn the multiplier back";
}

TEST(OutlierDetector, NeverEjectsMoreThanTheMaximumShare) {
  ManualClock clock;
  EndpointSet set(endpoints(10), {}, clock);
  OutlierDetector detector(set, config());  // 20% of 10 = 2
  int ejected = 0;
  for (std::size_t i = 0; i < 5; ++i) {
    detector.record(i, ResponseClass::kGatewayError);
    ejected += detector.record(i, ResponseClass::kGatewayError) ? 1 : 0;
  }
  EXPECT_EQ(ejected, 2);
  EXPECT_EQ(detector.ejected_now(), 2u);
}

TEST(OutlierDetector, SuccessRateOutlierIsEjectedAtTheInterval) {
  ManualClock clock;
  EndpointSet set(endpoints(6), {}, clock);
  auto c = config();
  c.consecutive_5xx = 0;
  c.consecutive_gateway_errors = 0;
  c.max_ejection_percent = 50;
  OutlierDetector detector(set, c);
  for (std::size_t i = 0; i < 6; ++i) {
    for (int r = 0; r < 200; ++r) {
      // Endpoint 5 fails one request in two; the others one in a hundred.
      bool fails = i == 5 ? r % 2 == 0 : r % 100 == 0;
      detector.record(i, fails ? ResponseClass::kServerError : ResponseClass::kSuccess);
    }
  }
  EXPECT_EQ(detector.tick(), (std::vector<std::size_t>{5}));
  // Too little traffic next interval: no verdict.
  detector.record(4, ResponseClass::kServerError);
  EXPECT_TRUE(detector.tick().empty());
}

}  // namespace
}  // namespace keel::balance

#include "keel/balance/outlier_detector.h"

#include <algorithm>
#include <cmath>

namespace keel::balance {

OutlierConfig OutlierConfig::read(const config::Node& node) {
  OutlierConfig c;
  node.read("consecutive_5xx", c.consecutive_5xx, 0, 1000);
  node.read("consecutive_gateway_errors", c.consecutive_gateway_errors, 0, 1000);
  node.read_ms("interval_ms", c.interval, 1ms, 1h);
  node.read_ms("base_ejection_time_ms", c.base_ejection_time, 1ms, 24h);
  node.read_ms("max_ejection_time_ms", c.max_ejection_time, 1ms, 24h);
  node.read("max_ejection_percent", c.max_ejection_percent, 0.0, 100.0);
  node.read("success_rate_minimum_hosts", c.success_rate_minimum_hosts, 0, 100000);
  node.read("success_rate_request_volume", c.success_rate_request_volume, 1, 1u << 30);
  node.read("success_rate_stdev_factor", c.success_rate_stdev_factor, 0.0, 100.0);
  node.expect_only({"consecutive_5xx", "consecutive_gateway_errors", "interval_ms",
                    "base_ejection_time_ms", "max_ejection_time_ms", "max_ejection_percent",
                    "success_rate_minimum_hosts", "success_rate_request_volume",
                    "success_rate_stdev_factor"});
  return c;
}

OutlierDetector::OutlierDetector(EndpointSet& endpoints, OutlierConfig config)
    : endpoints_(endpoints), config_(config), state_(endpoints.size()) {}

std::size_t OutlierDetector::ejected_now() const {
  const TimePoint now = endpoints_.clock().now();
  std::size_t count = 0;
  for (std::size_t i = 0; i < endpoints_.size(); ++i) count += endpoints_.ejected(i, now) ? 1 : 0;
  return count;
}

bool OutlierDetector::try_eject(std::size_t i) {
  const TimePoint now = endpoints_.clock().now();
  if (endpoints_.ejected(i, now)) return false;
  std::size_t already = ejected_now();
  double limit = config_.max_ejection_percent / 100.0 * static_cast<double>(endpoints_.size());
  if (already > 0 && static_cast<double>(already + 1) > limit) return false;
  EndpointTally& tally = state_[i];
  ++tally.multiplier;
  Duration ejection = config_.base_ejection_time * tally.multiplier;
  ejection = std::min(ejection, std::max(config_.max_ejection_time, config_.base_ejection_time));
  endpoints_.eject(i, now + ejection);
  tally.consecutive_5xx = tally.consecutive_gateway = 0;
  return true;
}

bool OutlierDetector::record(std::size_t i, ResponseClass response) {
  EndpointTally& tally = state_[i];
  if (response == ResponseClass::kLocalOrigin) return false;
  ++tally.interval_requests;
  if (response == ResponseClass::kSuccess) {
    ++tally.interval_successes;
    tally.consecutive_5xx = tally.consecutive_gateway = 0;
    return false;
  }
  ++tally.consecutive_5xx;
  if (response == ResponseClass::kGatewayError) {
    ++tally.consecutive_gateway;
  } else {
    tally.consecutive_gateway = 0;
  }
  bool trip = (config_.consecutive_5xx > 0 && tally.consecutive_5xx >= config_.consecutive_5xx) ||
              (config_.consecutive_gateway_errors > 0 &&
               tally.consecutive_gateway >= config_.consecutive_gateway_errors);
  return trip && try_eject(i);
}

std::vector<std::size_t> OutlierDetector::tick() {
  const TimePoint now = endpoints_.clock().now();
  std::vector<std::size_t> ejected;

  // Success-rate outliers among endpoints with enough volume this interval.
  std::vector<std::pair<std::size_t, double>> rates;
  for (std::size_t i = 0; i < state_.size(); ++i) {
    const EndpointTally& tally = state_[i];
    if (!endpoints_.ejected(i, now) &&
        tally.interval_requests >= config_.success_rate_request_volume) {
      rates.emplace_back(i, static_cast<double>(tally.interval_successes) /
                                static_cast<double>(tally.interval_requests));
    }
  }
  if (config_.success_rate_minimum_hosts > 0 &&
      rates.size() >= config_.success_rate_minimum_hosts) {
    double mean = 0;
    for (const auto& [i, rate] : rates) mean += rate;
    mean /= static_cast<double>(rates.size());
    double variance = 0;
    for (const auto& [i, rate] : rates) variance += (rate - mean) * (rate - mean);
    double stdev = std::sqrt(variance / static_cast<double>(rates.size()));
    double threshold = mean - config_.success_rate_stdev_factor * stdev;
    for (const auto& [i, rate] : rates) {
      if (rate < threshold && try_eject(i)) ejected.push_back(i);
    }
  }

  for (std::size_t i = 0; i < state_.size(); ++i) {
    EndpointTally& tally = state_[i];
    tally.interval_requests = tally.interval_successes = 0;
    const EndpointState& endpoint = endpoints_[i];
    bool was_ejected = endpoint.ejected_until != TimePoint::min();
    if (was_ejected && endpoint.ejected_until <= now) {
      endpoints_.uneject(i);
    } else if (!was_ejected && tally.multiplier > 0 &&
               std::find(ejected.begin(), ejected.end(), i) == ejected.end()) {
      // A quiet interval earns back one step of the growing ejection time.
      --tally.multiplier;
    }
  }
  return ejected;
}

}  // namespace keel::balance

// Outlier ejection (passive health checking), in the manner of Envoy's outlier detection:
// an endpoint that returns too many errors in a row, or whose success rate falls far below its
// peers', is taken out of the eligible set for a while — longer each time it is ejected again —
// and never more than a set share of the endpoints at once.
//
// No I/O and no timer of its own: the owner reports each response with `record()` and calls
// `tick()` every `interval` (the proxy does this on its clock).
#pragma once

#include <cstdint>
#include <vector>

#include "keel/balance/endpoint_set.h"
#include "keel/core/config.h"

namespace keel::balance {

enum class ResponseClass {
  kSuccess,
  kServerError,   // a 5xx from the endpoint other than the gateway errors below
  kGatewayError,  // 502, 503, 504, a failed connect, a reset: the endpoint is unreachable
  kLocalOrigin,   // neither: a 4xx, a cancelled request; not held against the endpoint
};

struct OutlierConfig {
  // Consecutive 5xx (gateway errors count too) and consecutive gateway errors before an
  // ejection; 0 turns a check off.
  std::uint32_t consecutive_5xx = 5;
  std::uint32_t consecutive_gateway_errors = 5;
  Duration interval = 10s;
  // Ejection lasts base_ejection_time x the number of times this endpoint has been ejected
  // (that count falls by one for each interval it stays in), capped at max_ejection_time.
  Duration base_ejection_time = 30s;
  Duration max_ejection_time = 300s;
  // At most this share of the endpoints is ejected at once (at least one may always be).
  double max_ejection_percent = 10;
  // Success-rate outliers, evaluated each interval among endpoints with at least
  // success_rate_request_volume requests in it, when at least success_rate_minimum_hosts have:
  // ejected when below mean - stdev_factor x standard deviation. 0 hosts turns it off.
  std::uint32_t success_rate_minimum_hosts = 5;
  std::uint32_t success_rate_request_volume = 100;
  double success_rate_stdev_factor = 1.9;

  static OutlierConfig read(const config::Node& node);
};

class OutlierDetector {
 public:
  OutlierDetector(EndpointSet& endpoints, OutlierConfig config);

  // Returns true when this response got the endpoint ejected.
  bool record(std::size_t i, ResponseClass response);
  // Every interval: success-rate ejections, ejection counts decay, and expired ejections end.
  // Returns the endpoints ejected by this tick.
  std::vector<std::size_t> tick();

  std::uint32_t times_ejected(std::size_t i) const { return state_[i].multiplier; }
  std::size_t ejected_now() const;

 private:
  struct EndpointTally {
    std::uint32_t consecutive_5xx = 0;
    std::uint32_t consecutive_gateway = 0;
    std::uint32_t multiplier = 0;
    std::uint64_t interval_requests = 0;
    std::uint64_t interval_successes = 0;
  };
  bool try_eject(std::size_t i);

  EndpointSet& endpoints_;
  OutlierConfig config_;
  std::vector<EndpointTally> state_;
};

}  // namespace keel::balance

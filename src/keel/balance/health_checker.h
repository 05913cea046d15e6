// The state machine of active health checking, without the I/O (the proxy sends the probes):
// which endpoints are due a check, and what a run of passed or failed checks means. An endpoint
// turns unhealthy after `unhealthy_threshold` failures in a row and healthy again after
// `healthy_threshold` passes in a row (HAProxy's fall/rise). Checks are spread with jitter so a
// fleet of proxies does not probe in lockstep.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "keel/balance/endpoint_set.h"
#include "keel/core/config.h"
#include "keel/core/random.h"

namespace keel::balance {

struct HealthCheckConfig {
  std::string path = "/healthz";  // what the prober asks for
  std::string method = "GET";     // GET, HEAD or OPTIONS: a check must not change anything
  std::string host;               // the Host field; empty: the endpoint's address
  // Statuses that pass, as inclusive ranges ("200-299,404" in the config; Envoy's
  // expected_statuses). Default: 2xx.
  std::vector<std::pair<unsigned, unsigned>> expected_statuses = {{200, 299}};
  Duration interval = 5s;
  // Each check is scheduled interval + uniform(0, interval x jitter_percent / 100) after the
  // last one started.
  double jitter_percent = 10;
  Duration timeout = 1s;  // for the prober; a check with no answer by then failed
  std::uint32_t healthy_threshold = 2;
  std::uint32_t unhealthy_threshold = 3;

  static HealthCheckConfig read(const config::Node& node);
  bool passes(unsigned status) const;
};

class HealthChecker {
 public:
  // Endpoints start healthy (so a static config serves at once) and their first checks are
  // spread over the first interval.
  HealthChecker(EndpointSet& endpoints, HealthCheckConfig config, Random& random);

  // The endpoints whose check is due at `now`; each is marked in flight and not returned again
  // until its result is recorded.
  std::vector<std::size_t> due();
  // When the next check falls due (TimePoint::max() while every check is in flight).
  TimePoint next_due() const;

  struct Change {
    std::size_t endpoint;
    bool healthy;
  };
  // The outcome of the check of endpoint i; returns the change of health it caused, if any.
  std::optional<Change> record(std::size_t i, bool passed);

 private:
  struct Probe {
    TimePoint next;
    bool in_flight = false;
    std::uint32_t passes = 0;
    std::uint32_t failures = 0;
  };
  Duration jittered_interval();

  EndpointSet& endpoints_;
  HealthCheckConfig config_;
  Random& random_;
  std::vector<Probe> probes_;
};

}  // namespace keel::balance

// A discrete-event simulation of a client load-balancing an open-loop request stream over a
// set of endpoints, one of which stalls for part of the run — the experiment Linkerd published
// when it moved to peak-EWMA balancing ("Beyond Round Robin", 2016). It drives the real
// policies and EndpointSet on a ManualClock, so what it measures is what the proxy runs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::balance {

struct SimulationConfig {
  std::uint32_t endpoints = 10;
  // Requests an endpoint serves at once; more wait in its FIFO queue.
  std::uint32_t endpoint_concurrency = 16;
  double requests_per_second = 5000;   // Poisson arrivals, independent of responses
  Duration duration = 30s;             // of arrivals; the run continues until all are answered
  Duration median_service_time = 5ms;  // lognormal service times
  double service_time_sigma = 0.5;
  // Endpoint 0 serves `stall_factor` times slower from stall_start to stall_end (fractions
  // of the duration).
  double stall_factor = 100;
  double stall_start = 0.25;
  double stall_end = 0.75;
  Duration deadline = 1s;  // a request answered later counts as failed
  std::uint64_t seed = 1;
  // How the share of requests per endpoint is judged: in windows sliding by 100 ms. After the
  // stall, endpoint 0 counts as recovered once its share in every later `recovery_window` stays
  // within `recovery_tolerance_points` of a fair share (100 / endpoints percent).
  Duration recovery_window = 500ms;
  double recovery_tolerance_points = 5;
  // Balance while nothing stalls: the largest distance of any endpoint's share from the fair
  // share over any `balance_window` that does not overlap the stall.
  Duration balance_window = 5s;
};

struct SimulationResult {
  std::string policy;
  std::uint64_t requests = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
  double max_ms = 0;
  double success_pct = 0;        // answered within the deadline
  double stalled_share_pct = 0;  // of requests sent to the stalled endpoint
  // From the end of the stall until endpoint 0's share is back near a fair share for good (the
  // end of the first window that qualifies); negative when it never is.
  double recovery_ms = -1;
  // Largest |share - fair share| of any endpoint over any balance window clear of the stall, in
  // percentage points; negative when the run has no such window.
  double max_share_deviation_points = -1;
  std::vector<std::uint64_t> histogram;  // counts per histogram_bounds_ms() bucket, then overflow

  static const std::vector<double>& histogram_bounds_ms();
};

// Runs the simulation with the named policy (as make_load_balancer knows it).
Result<SimulationResult> simulate(std::string_view policy, const SimulationConfig& config);

}  // namespace keel::balance

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
};

struct SimulationResult {
  std::string policy;
  std::uint64_t requests = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double p999_ms = 0;
  double max_ms = 0;
  double success_pct = 0;                // answered within the deadline
  double stalled_share_pct = 0;          // of requests sent to the stalled endpoint
  std::vector<std::uint64_t> histogram;  // counts per histogram_bounds_ms() bucket, then overflow

  static const std::vector<double>& histogram_bounds_ms();
};

// Runs the simulation with the named policy (as make_load_balancer knows it).
Result<SimulationResult> simulate(std::string_view policy, const SimulationConfig& config);

}  // namespace keel::balance

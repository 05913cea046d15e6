// Linkerd's load-balancing experiment, reproduced on Keel's own policies: ten endpoints, one of
// which becomes 100x slower for the middle half of the run, under an open-loop request stream.
// Then two runs on three endpoints, where P2C has the fewest candidates to choose from: one
// endpoint stalls for 10 s and recovers (how soon does it get its share back?), and nothing
// stalls (how far does any endpoint's share stray from a third?).
// Prints tables and, as its last line, one JSON object keyed by policy.
//
//   build/bench/lb_simulation [--seconds N] [--seed S]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "keel/balance/simulation.h"

namespace {

constexpr const char* kPolicies[] = {"round_robin", "least_request", "peak_ewma"};

// Three endpoints, 3000 requests/s: one stalled endpoint leaves two at about half their
// capacity, so the stall hurts only through the requests sent to it.
keel::balance::SimulationConfig three_endpoints(const keel::balance::SimulationConfig& base) {
  keel::balance::SimulationConfig config = base;
  config.endpoints = 3;
  config.requests_per_second = 3000;
  config.stall_start = 1.0 / 3;
  config.stall_end = 2.0 / 3;
  return config;
}

}  // namespace

int main(int argc, char** argv) {
  keel::balance::SimulationConfig config;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--seconds") == 0) {
      config.duration = std::chrono::seconds(std::atoi(argv[i + 1]));
    } else if (std::strcmp(argv[i], "--seed") == 0) {
      config.seed = std::strtoull(argv[i + 1], nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [--seconds N] [--seed S]\n", argv[0]);
      return 2;
    }
  }
  const keel::balance::SimulationConfig recovery = three_endpoints(config);
  keel::balance::SimulationConfig healthy = three_endpoints(config);
  healthy.stall_factor = 1;
  keel::balance::SimulationConfig quiet = healthy;
  quiet.requests_per_second = 300;

  std::printf(
      "%u endpoints x %u concurrent, %.0f req/s Poisson for %.0f s, lognormal service "
      "(median %.0f ms); endpoint 0 is %.0fx slower from %.0f%% to %.0f%% of the run; "
      "deadline %.0f ms; seed %llu\n\n",
      config.endpoints, config.endpoint_concurrency, config.requests_per_second,
      keel::to_ms(config.duration) / 1000, keel::to_ms(config.median_service_time),
      config.stall_factor, config.stall_start * 100, config.stall_end * 100,
      keel::to_ms(config.deadline), static_cast<unsigned long long>(config.seed));
  std::printf("%-14s %9s %9s %10s %10s %11s %12s\n", "policy", "p50_ms", "p99_ms", "p99.9_ms",
              "max_ms", "success_%", "to_stalled_%");
  std::string stall_table;
  std::string json = "{";
  for (const char* policy : kPolicies) {
    auto result = keel::balance::simulate(policy, config);
    auto recovered = keel::balance::simulate(policy, recovery);
    auto balanced = keel::balance::simulate(policy, healthy);
    auto balanced_quiet = keel::balance::simulate(policy, quiet);
    for (const auto* run : {&result, &recovered, &balanced, &balanced_quiet}) {
      if (!*run) {
        std::fprintf(stderr, "%s\n", run->error().to_string().c_str());
        return 1;
      }
    }
    std::printf("%-14s %9.2f %9.2f %10.2f %10.2f %11.3f %12.3f\n", policy, result->p50_ms,
                result->p99_ms, result->p999_ms, result->max_ms, result->success_pct,
                result->stalled_share_pct);
    char row[256];
    std::snprintf(row, sizeof row, "%-14s %10.2f %13.0f %12.3f %15.1f %15.1f\n", policy,
                  recovered->p999_ms, recovered->recovery_ms, recovered->stalled_share_pct,
                  balanced->max_share_deviation_points, balanced_quiet->max_share_deviation_points);
    stall_table += row;
    char entry[512];
    std::snprintf(entry, sizeof entry,
                  "%s\"%s\":{\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"success_pct\":%.3f,"
                  "\"to_stalled_pct\":%.3f,\"three_stall_p999_ms\":%.3f,"
                  "\"three_stall_recovery_ms\":%.0f,\"three_healthy_max_share_deviation_points\":"
                  "%.2f,\"three_quiet_max_share_deviation_points\":%.2f}",
                  json.size() > 1 ? "," : "", policy, result->p50_ms, result->p99_ms,
                  result->p999_ms, result->success_pct, result->stalled_share_pct,
                  recovered->p999_ms, recovered->recovery_ms, balanced->max_share_deviation_points,
                  balanced_quiet->max_share_deviation_points);
    json += entry;
  }
  std::printf(
      "\n3 endpoints, %.0f req/s; endpoint 0 is %.0fx slower from %.0f s to %.0f s, then "
      "healthy again.\nrecovered_ms: from the end of the stall until endpoint 0's share of every "
      "%.0f ms window stays\nwithin %.0f points of a third (-1: never). Then the same "
      "endpoints with no stall, at %.0f and %.0f req/s:\nthe largest distance of any "
      "endpoint's share from a third over any %.0f s window, in points.\n\n",
      recovery.requests_per_second, recovery.stall_factor,
      keel::to_ms(recovery.duration) * recovery.stall_start / 1000,
      keel::to_ms(recovery.duration) * recovery.stall_end / 1000,
      keel::to_ms(recovery.recovery_window), recovery.recovery_tolerance_points,
      healthy.requests_per_second, quiet.requests_per_second,
      keel::to_ms(healthy.balance_window) / 1000);
  std::printf("%-14s %10s %13s %12s %15s %15s\n", "policy", "p99.9_ms", "recovered_ms",
              "to_stalled_%", "healthy_dev_pt", "quiet_dev_pt");
  std::printf("%s", stall_table.c_str());
  std::printf("%s}\n", json.c_str());
  return 0;
}

// Linkerd's load-balancing experiment, reproduced on Keel's own policies: ten endpoints, one of
// which becomes 100x slower for the middle half of the run, under an open-loop request stream.
// Prints a table and, as its last line, one JSON object keyed by policy.
//
//   build/bench/lb_simulation [--seconds N] [--seed S]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "keel/balance/simulation.h"

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
  std::string json = "{";
  for (const char* policy : {"round_robin", "least_request", "peak_ewma"}) {
    auto result = keel::balance::simulate(policy, config);
    if (!result) {
      std::fprintf(stderr, "%s\n", result.error().to_string().c_str());
      return 1;
    }
    std::printf("%-14s %9.2f %9.2f %10.2f %10.2f %11.3f %12.3f\n", policy, result->p50_ms,
                result->p99_ms, result->p999_ms, result->max_ms, result->success_pct,
                result->stalled_share_pct);
    char entry[256];
    std::snprintf(entry, sizeof entry,
                  "%s\"%s\":{\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"success_pct\":%.3f,"
                  "\"to_stalled_pct\":%.3f}",
                  json.size() > 1 ? "," : "", policy, result->p50_ms, result->p99_ms,
                  result->p999_ms, result->success_pct, result->stalled_share_pct);
    json += entry;
  }
  std::printf("%s}\n", json.c_str());
  return 0;
}

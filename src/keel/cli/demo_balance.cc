#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "keel/balance/simulation.h"
#include "keel/cli/demo.h"

namespace keel::cli {

int run_balance_demo(const DemoOptions& options) {
  balance::SimulationConfig config;
  config.duration = 20s;
  config.seed = options.seed;
  std::printf(
      "\nLoad balancing: %u endpoints, %.0f requests/s for %.0f simulated seconds; "
      "endpoint 0 turns %.0fx slower\nfor the middle half of the run. Same requests, "
      "same endpoints, three policies:\n\n",
      config.endpoints, config.requests_per_second, to_ms(config.duration) / 1000,
      config.stall_factor);
  std::printf("  %-14s %8s %9s %10s %11s %14s\n", "policy", "p50 ms", "p99 ms", "p99.9 ms",
              "in 1 s %", "to slow one %");
  std::vector<balance::SimulationResult> results;
  for (const char* policy : {"round_robin", "least_request", "peak_ewma"}) {
    auto result = balance::simulate(policy, config);
    if (!result) {
      std::fprintf(stderr, "keel demo: %s\n", result.error().to_string().c_str());
      return 1;
    }
    std::printf("  %-14s %8.1f %9.1f %10.1f %11.2f %14.2f\n", policy, result->p50_ms,
                result->p99_ms, result->p999_ms, result->success_pct, result->stalled_share_pct);
    results.push_back(std::move(*result));
  }

  std::printf("\n  Latency histogram (requests per bucket; bar length is log10 of the count):\n");
  const auto& bounds = balance::SimulationResult::histogram_bounds_ms();
  for (std::size_t bucket = 0; bucket <= bounds.size(); ++bucket) {
    std::string label = bucket < bounds.size()
                            ? "<= " + std::to_string(static_cast<int>(bounds[bucket])) + " ms"
                            : " > " + std::to_string(static_cast<int>(bounds.back())) + " ms";
    std::printf("  %-10s", label.c_str());
    for (const auto& result : results) {
      std::uint64_t count = result.histogram[bucket];
      int width = count == 0 ? 0 : 1 + static_cast<int>(std::log10(static_cast<double>(count)) * 3);
      std::printf(" %-16s %6llu", std::string(static_cast<std::size_t>(width), '#').c_str(),
                  static_cast<unsigned long long>(count));
    }
    std::printf("\n");
  }
  std::printf("  %-10s", "");
  for (const auto& result : results) std::printf(" %-23s", result.policy.c_str());
  std::printf(
      "\n\nRound robin keeps sending a tenth of the traffic to the stalled endpoint, where "
      "it queues for seconds;\nleast_request stops once requests pile up there; peak_ewma "
      "stops as soon as one slow answer comes back.\n");
  return 0;
}

}  // namespace keel::cli

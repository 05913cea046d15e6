// pick() cost of each policy over ten endpoints, with a real clock.
#include <benchmark/benchmark.h>

#include "keel/balance/load_balancer.h"
#include "keel/core/hash.h"

namespace keel::balance {
namespace {

void BM_Pick(benchmark::State& state, const char* policy, bool weighted) {
  SteadyClock clock;
  Random random(1);
  std::vector<EndpointConfig> endpoints;
  for (std::uint32_t i = 0; i < 10; ++i) {
    endpoints.push_back({"10.0.0." + std::to_string(i) + ":8080", weighted ? i + 1 : 1});
  }
  EndpointSet set(std::move(endpoints), {}, clock);
  PolicyConfig config;
  config.policy = policy;
  auto balancer = std::move(make_load_balancer(config, set, random)).value();
  std::uint64_t key = 0;
  for (auto _ : state) {
    auto chosen = balancer->pick({.hash = hash64(++key)});
    benchmark::DoNotOptimize(chosen);
  }
}
BENCHMARK_CAPTURE(BM_Pick, round_robin, "round_robin", false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Pick, round_robin_weighted, "round_robin", true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Pick, random_weighted, "random", true)->UseRealTime();
BENCHMARK_CAPTURE(BM_Pick, least_request, "least_request", false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Pick, peak_ewma, "peak_ewma", false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Pick, ring_hash, "ring_hash", false)->UseRealTime();
BENCHMARK_CAPTURE(BM_Pick, maglev, "maglev", false)->UseRealTime();

}  // namespace
}  // namespace keel::balance

BENCHMARK_MAIN();

// Cost of one placement decision with each scheme. Keys cycle through a table of random hashes
// larger than the branch predictor's memory, so lookups are not replays of one path.
//
// Targets: jump_consistent_hash <= 30 ns; HashRing lookup over 100 nodes x 100 points <= 100 ns.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "keel/core/hash.h"
#include "keel/core/random.h"
#include "keel/shard/hash_ring.h"
#include "keel/shard/maglev.h"
#include "keel/shard/rendezvous.h"

namespace keel::shard {
namespace {

constexpr std::size_t kKeyCount = 1 << 14;  // a power of two, so cycling is a mask

const std::vector<std::uint64_t>& keys() {
  static const std::vector<std::uint64_t> values = [] {
    Random random(42);
    std::vector<std::uint64_t> result(kKeyCount);
    for (auto& key : result) key = random.next();
    return result;
  }();
  return values;
}

std::vector<WeightedNode> make_nodes(int count) {
  std::vector<WeightedNode> nodes;
  for (int i = 0; i < count; ++i) nodes.push_back({"node-" + std::to_string(i), 1.0});
  return nodes;
}

void BM_JumpConsistentHash(benchmark::State& state) {
  const auto buckets = static_cast<std::int32_t>(state.range(0));
  const auto& hashes = keys();
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(jump_consistent_hash(hashes[i++ & (kKeyCount - 1)], buckets));
  }
}
BENCHMARK(BM_JumpConsistentHash)->Arg(10)->Arg(1000)->UseRealTime();

void BM_HashRingLookup(benchmark::State& state) {
  // 100 nodes with min_points 10,000: each gets 128 points (the power of two that reaches it).
  HashRing ring = HashRing::build(make_nodes(100), 10'000);
  const auto& hashes = keys();
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(ring.lookup(hashes[i++ & (kKeyCount - 1)]));
  state.counters["points"] = static_cast<double>(ring.point_count());
}
BENCHMARK(BM_HashRingLookup)->UseRealTime();

void BM_MaglevLookupOfStringKey(benchmark::State& state) {
  auto table = MaglevTable::build(make_nodes(10), 65537);
  if (!table.ok()) {
    state.SkipWithError(table.error().message().c_str());
    return;
  }
  std::vector<std::string> names;
  for (std::size_t k = 0; k < kKeyCount; ++k) names.push_back("order-" + std::to_string(k));
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(table->lookup(hash64(names[i++ & (kKeyCount - 1)])));
  }
}
BENCHMARK(BM_MaglevLookupOfStringKey)->UseRealTime();

void BM_RendezvousPick(benchmark::State& state) {
  std::vector<WeightedNode> nodes = make_nodes(static_cast<int>(state.range(0)));
  const auto& hashes = keys();
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(rendezvous_pick(hashes[i++ & (kKeyCount - 1)], nodes));
  }
}
BENCHMARK(BM_RendezvousPick)->Arg(10)->UseRealTime();

void BM_Hash64Of16Bytes(benchmark::State& state) {
  std::vector<std::string> names;
  Random random(7);
  for (std::size_t k = 0; k < kKeyCount; ++k) {
    std::string name(16, '\0');
    for (char& c : name) c = static_cast<char>('a' + random.uniform(26));
    names.push_back(std::move(name));
  }
  std::size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(hash64(names[i++ & (kKeyCount - 1)]));
}
BENCHMARK(BM_Hash64Of16Bytes)->UseRealTime();

}  // namespace
}  // namespace keel::shard

BENCHMARK_MAIN();

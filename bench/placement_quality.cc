// How evenly each placement scheme spreads keys, and how many keys move when a node joins:
// 10 nodes, 1,000,000 keys (hash64 of "key-<i>"), then 11 nodes. Also how many slots the slot
// map moves for 10 -> 11 -> 10 against the least possible. Prints a table and, as its last
// line, one JSON object of the figures.
//
//   build/bench/placement_quality
//
// The rings have exactly 100 and 1000 points per node: a ring gives each node weight x the
// smallest power of two that reaches min_points, so weights of 100 (or 1000) with min_points 1
// give that many points.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "keel/core/hash.h"
#include "keel/shard/hash_ring.h"
#include "keel/shard/maglev.h"
#include "keel/shard/rendezvous.h"
#include "keel/shard/slot_map.h"

namespace {

using keel::shard::HashRing;
using keel::shard::MaglevTable;
using keel::shard::SlotMap;
using keel::shard::WeightedNode;

constexpr int kNodes = 10;
constexpr std::size_t kKeys = 1'000'000;

std::vector<WeightedNode> make_nodes(int count) {
  std::vector<WeightedNode> nodes;
  for (int i = 0; i < count; ++i) nodes.push_back({"node-" + std::to_string(i), 1.0});
  return nodes;
}

std::vector<std::string> ids(const std::vector<WeightedNode>& nodes) {
  std::vector<std::string> result;
  for (const auto& node : nodes) result.push_back(node.id);
  return result;
}

double rounded(double value) { return std::round(value * 1e4) / 1e4; }

// A scheme maps a key's index to the index of its node among `node_count` nodes.
using Placement = std::function<std::size_t(std::size_t key)>;
using Scheme = std::function<Placement(int node_count)>;

struct Figures {
  double max_over_mean;
  double min_over_mean;
  double moved_fraction;
};

Figures measure(const Scheme& scheme) {
  Placement before = scheme(kNodes);
  Placement after = scheme(kNodes + 1);
  std::vector<std::size_t> counts(kNodes, 0);
  std::size_t moved = 0;
  for (std::size_t key = 0; key < kKeys; ++key) {
    std::size_t node = before(key);
    ++counts[node];
    // Nodes keep their index (node-i) when node-10 joins, so a changed index is a moved key.
    if (after(key) != node) ++moved;
  }
  double mean = static_cast<double>(kKeys) / kNodes;
  auto [fewest, most] = std::minmax_element(counts.begin(), counts.end());
  return {static_cast<double>(*most) / mean, static_cast<double>(*fewest) / mean,
          static_cast<double>(moved) / static_cast<double>(kKeys)};
}

std::uint32_t moved_slots(const SlotMap& before, const SlotMap& after) {
  // Held in a local: Result::value() of a temporary would dangle in the loop.
  auto moves = SlotMap::diff(before, after);
  std::uint32_t moved = 0;
  for (const auto& move : moves.value()) {
    moved += move.last_slot - move.first_slot + 1;
  }
  return moved;
}

std::uint32_t ideal_slots(const SlotMap& before, const SlotMap& after) {
  std::map<std::string, std::uint32_t> new_counts = after.slots_per_node();
  std::uint32_t ideal = 0;
  for (const auto& [node, count] : before.slots_per_node()) {
    std::uint32_t kept = new_counts.contains(node) ? new_counts[node] : 0;
    ideal += count > kept ? count - kept : 0;
  }
  return ideal;
}

}  // namespace

int main() {
  std::vector<std::string> names(kKeys);
  std::vector<std::uint64_t> hashes(kKeys);
  for (std::size_t key = 0; key < kKeys; ++key) {
    names[key] = "key-" + std::to_string(key);
    hashes[key] = keel::hash64(names[key]);
  }

  auto ring = [&](std::size_t points_per_node) -> Scheme {
    return [&, points_per_node](int node_count) -> Placement {
      std::vector<WeightedNode> nodes = make_nodes(node_count);
      for (auto& node : nodes) node.weight = static_cast<double>(points_per_node);
      auto built = std::make_shared<HashRing>(HashRing::build(nodes, 1));
      return [&, built](std::size_t key) { return built->lookup(hashes[key]); };
    };
  };
  Scheme maglev = [&](int node_count) -> Placement {
    auto built = std::make_shared<MaglevTable>(
        MaglevTable::build(make_nodes(node_count), MaglevTable::kDefaultSize).value());
    return [&, built](std::size_t key) { return built->lookup(hashes[key]); };
  };
  Scheme rendezvous = [&](int node_count) -> Placement {
    auto nodes = std::make_shared<std::vector<WeightedNode>>(make_nodes(node_count));
    return
        [&, nodes](std::size_t key) { return keel::shard::rendezvous_pick(hashes[key], *nodes); };
  };
  Scheme jump = [&](int node_count) -> Placement {
    return [&, node_count](std::size_t key) {
      return static_cast<std::size_t>(keel::jump_consistent_hash(hashes[key], node_count));
    };
  };

  const SlotMap slots_10 = SlotMap::create(ids(make_nodes(kNodes)), {}).value();
  const SlotMap slots_11 = slots_10.rebalance(ids(make_nodes(kNodes + 1))).value();
  const SlotMap slots_back = slots_11.rebalance(ids(make_nodes(kNodes))).value();
  Scheme slot_map = [&](int node_count) -> Placement {
    const SlotMap& map = node_count == kNodes ? slots_10 : slots_11;
    return [&](std::size_t key) {
      const std::string& owner = map.owner(map.slot_for(names[key]));
      return static_cast<std::size_t>(std::stoi(owner.substr(5)));  // "node-<i>"
    };
  };

  const std::vector<std::pair<std::string, Scheme>> schemes = {
      {"ring100", ring(100)},     {"ring1000", ring(1000)}, {"maglev65537", maglev},
      {"rendezvous", rendezvous}, {"jump", jump},           {"slotmap", slot_map},
  };

  std::printf(
      "%d nodes, %zu keys (hash64 of \"key-<i>\"); moved = keys whose node changed "
      "going to %d nodes (ideal %.4f)\n\n",
      kNodes, kKeys, kNodes + 1, 1.0 / (kNodes + 1));
  std::printf("%-12s %10s %10s %14s\n", "scheme", "max/mean", "min/mean", "moved 10->11");
  nlohmann::ordered_json figures;
  for (const auto& [name, scheme] : schemes) {
    Figures result = measure(scheme);
    std::printf("%-12s %10.4f %10.4f %14.4f\n", name.c_str(), result.max_over_mean,
                result.min_over_mean, result.moved_fraction);
    figures[name + "_max_over_mean"] = rounded(result.max_over_mean);
    figures[name + "_moved_fraction_10_to_11"] = rounded(result.moved_fraction);
  }
  figures["ideal_moved_fraction_10_to_11"] = rounded(1.0 / (kNodes + 1));

  std::uint32_t moved_up = moved_slots(slots_10, slots_11);
  std::uint32_t ideal_up = ideal_slots(slots_10, slots_11);
  std::uint32_t moved_down = moved_slots(slots_11, slots_back);
  std::uint32_t ideal_down = ideal_slots(slots_11, slots_back);
  std::printf(
      "\nslot map (%u slots): 10 -> 11 nodes moves %u slots (least possible %u); "
      "11 -> 10 moves %u (least possible %u)\n",
      slots_10.slot_count(), moved_up, ideal_up, moved_down, ideal_down);
  figures["slotmap_moved_10_to_11"] = moved_up;
  figures["slotmap_ideal_10_to_11"] = ideal_up;
  figures["slotmap_moved_11_to_10"] = moved_down;
  figures["slotmap_ideal_11_to_10"] = ideal_down;
  std::printf("%s\n", figures.dump().c_str());
  return 0;
}

// HashRing, MaglevTable and rendezvous hashing checked for what a user of each relies on: the
// same nodes give the same answers everywhere, shares follow weights, and a membership change
// moves about the changed node's share of keys and (almost) nothing else.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
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

constexpr std::uint64_t kSeed = 1234567;
constexpr int kKeys = 1'000'000;

std::vector<std::uint64_t> random_keys(std::uint64_t seed, int count) {
  Random random(seed);
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(count));
  for (auto& key : keys) key = random.next();
  return keys;
}

// node-0 .. node-(count-1), all of weight 1 unless `weights` says otherwise.
std::vector<WeightedNode> make_nodes(int count, std::vector<double> weights = {}) {
  std::vector<WeightedNode> nodes;
  for (int i = 0; i < count; ++i) {
    nodes.push_back({"node-" + std::to_string(i),
                     weights.empty() ? 1.0 : weights[static_cast<std::size_t>(i)]});
  }
  return nodes;
}

std::vector<WeightedNode> without(std::vector<WeightedNode> nodes, std::size_t index) {
  nodes.erase(nodes.begin() + static_cast<std::ptrdiff_t>(index));
  return nodes;
}

double total_weight(const std::vector<WeightedNode>& nodes) {
  double total = 0;
  for (const auto& node : nodes) total += node.weight;
  return total;
}

// How keys (or table slots) are placed before and after a membership change, by node id.
struct Disruption {
  int moved = 0;
  int moved_elsewhere = 0;  // moved keys whose move the change does not explain
};

// Keys whose owner changed; a move is "elsewhere" unless it leaves `from_id` or reaches `to_id`
// (either may be empty).
template <typename Before, typename After>
Disruption disruption(const std::vector<std::uint64_t>& keys, Before before, After after,
                      const std::string& from_id, const std::string& to_id) {
  Disruption result;
  for (std::uint64_t key : keys) {
    const std::string& old_owner = before(key);
    const std::string& new_owner = after(key);
    if (old_owner == new_owner) continue;
    ++result.moved;
    if (old_owner != from_id && new_owner != to_id) ++result.moved_elsewhere;
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// HashRing

TEST(HashRing, NoNodesGiveAnEmptyRing) {
  HashRing ring = HashRing::build({});
  EXPECT_TRUE(ring.empty());
  EXPECT_EQ(ring.point_count(), 0u);
}

TEST(HashRing, EqualWeightsGiveEveryNodeThePowerOfTwoThatReachesMinPoints) {
  // 10 nodes need 128 points each to reach 1000 (64 would give 640).
  HashRing ring = HashRing::build(make_nodes(10), 1000);
  EXPECT_EQ(ring.point_count(), 1280u);
  std::vector<int> points(10, 0);
  for (std::size_t point = 0; point < ring.point_count(); ++point) ++points[ring.node_of(point)];
  EXPECT_THAT(points, ::testing::Each(128));
}

TEST(HashRing, HashesPastTheLastPointWrapToTheFirst) {
  HashRing ring = HashRing::build(make_nodes(3), 300);
  EXPECT_EQ(ring.point_for(~std::uint64_t{0}), 0u);
  EXPECT_EQ(ring.lookup(~std::uint64_t{0}), ring.node_of(0));
  EXPECT_EQ(ring.next_point(ring.point_count() - 1), 0u);
}

TEST(HashRing, SameNodesInAnyOrderGiveTheSameOwners) {
  std::vector<WeightedNode> nodes = make_nodes(10);
  std::vector<WeightedNode> reversed(nodes.rbegin(), nodes.rend());
  HashRing ring = HashRing::build(nodes);
  HashRing again = HashRing::build(nodes);
  HashRing from_reversed = HashRing::build(reversed);
  for (std::uint64_t key : random_keys(kSeed, 100'000)) {
    ASSERT_EQ(ring.lookup(key), again.lookup(key)) << "seed " << kSeed << ", key " << key;
    ASSERT_EQ(nodes[ring.lookup(key)].id, reversed[from_reversed.lookup(key)].id)
        << "seed " << kSeed << ", key " << key;
  }
}

TEST(HashRing, SharesFollowWeights) {
  // min_points 100,000 gives 16,384 points per unit of weight, so even the lightest node's share
  // is within about 1% of its weight's.
  std::vector<WeightedNode> nodes = make_nodes(4, {1, 2, 3, 4});
  HashRing ring = HashRing::build(nodes, 100'000);
  std::vector<int> counts(nodes.size(), 0);
  for (std::uint64_t key : random_keys(kSeed, kKeys)) ++counts[ring.lookup(key)];
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    double expected = nodes[i].weight / total_weight(nodes);
    EXPECT_NEAR(counts[i] / double{kKeys}, expected, 0.05 * expected)
        << "seed " << kSeed << ", " << nodes[i].id << " of weight " << nodes[i].weight;
  }
}

TEST(HashRing, AddingANodeMovesAboutItsShareAndOnlyToIt) {
  std::vector<WeightedNode> ten = make_nodes(10);
  std::vector<WeightedNode> eleven = make_nodes(11);
  // 1024 points per node both times: 10 x 1024 and 11 x 1024 both reach min_points.
  HashRing before = HashRing::build(ten, 10'000);
  HashRing after = HashRing::build(eleven, 10'000);
  std::vector<std::uint64_t> keys = random_keys(kSeed, kKeys);
  Disruption result = disruption(
      keys, [&](std::uint64_t key) -> const std::string& { return ten[before.lookup(key)].id; },
      [&](std::uint64_t key) -> const std::string& { return eleven[after.lookup(key)].id; }, "",
      "node-10");
  EXPECT_EQ(result.moved_elsewhere, 0) << "seed " << kSeed << ": keys moved between old nodes";
  // With 1024 points a node's share deviates by about 3% (1/sqrt(1024)) from the ideal 1/11.
  EXPECT_NEAR(result.moved / double{kKeys}, 1.0 / 11, 0.15 / 11) << "seed " << kSeed;
}

TEST(HashRing, RemovingANodeMovesOnlyItsKeys) {
  std::vector<WeightedNode> ten = make_nodes(10);
  std::vector<WeightedNode> nine = without(ten, 3);
  // 1024 points per node both times: 9 x 1024 still reaches min_points.
  HashRing before = HashRing::build(ten, 9'000);
  HashRing after = HashRing::build(nine, 9'000);
  std::vector<std::uint64_t> keys = random_keys(kSeed, kKeys);
  Disruption result = disruption(
      keys, [&](std::uint64_t key) -> const std::string& { return ten[before.lookup(key)].id; },
      [&](std::uint64_t key) -> const std::string& { return nine[after.lookup(key)].id; }, "node-3",
      "");
  EXPECT_EQ(result.moved_elsewhere, 0) << "seed " << kSeed;
  EXPECT_NEAR(result.moved / double{kKeys}, 1.0 / 10, 0.15 / 10) << "seed " << kSeed;
}

// ---------------------------------------------------------------------------------------------
// MaglevTable

TEST(MaglevTable, RejectsATableSizeThatIsNotAPrime) {
  auto table = MaglevTable::build(make_nodes(3), 65536);
  ASSERT_FALSE(table.ok());
  EXPECT_EQ(table.error().message(), "maglev: table size 65536 is not a prime");
}

TEST(MaglevTable, RejectsNoNodesTooSmallATableAndNonPositiveWeights) {
  EXPECT_FALSE(MaglevTable::build({}).ok());
  auto too_small = MaglevTable::build(make_nodes(5), 3);
  ASSERT_FALSE(too_small.ok());
  EXPECT_THAT(too_small.error().message(), ::testing::HasSubstr("at least the 5 nodes"));
  auto zero_weight = MaglevTable::build(make_nodes(3, {1, 0, 1}));
  ASSERT_FALSE(zero_weight.ok());
  EXPECT_THAT(zero_weight.error().message(), ::testing::HasSubstr("'node-1'"));
}

TEST(MaglevTable, SameNodesGiveTheSameTable) {
  std::vector<WeightedNode> nodes = make_nodes(10);
  auto table = MaglevTable::build(nodes);
  auto again = MaglevTable::build(nodes);
  ASSERT_TRUE(table.ok() && again.ok());
  for (std::uint64_t slot = 0; slot < table->size(); ++slot) {
    ASSERT_EQ(table->lookup(slot), again->lookup(slot)) << "slot " << slot;
  }
}

TEST(MaglevTable, BalancesSlotsAndKeys) {
  std::vector<WeightedNode> nodes = make_nodes(10);
  auto table = MaglevTable::build(nodes, 65537);
  ASSERT_TRUE(table.ok());
  std::vector<int> slots(nodes.size(), 0);
  for (std::uint64_t slot = 0; slot < table->size(); ++slot) ++slots[table->lookup(slot)];
  // Nodes fill slots in turn, so counts differ by at most one.
  auto [fewest, most] = std::minmax_element(slots.begin(), slots.end());
  EXPECT_LE(*most - *fewest, 1);

  std::vector<int> keys(nodes.size(), 0);
  for (std::uint64_t key : random_keys(kSeed, kKeys)) ++keys[table->lookup(key)];
  double mean = double{kKeys} / static_cast<double>(nodes.size());
  EXPECT_LE(*std::max_element(keys.begin(), keys.end()) / mean, 1.01) << "seed " << kSeed;
}

TEST(MaglevTable, SlotSharesFollowWeights) {
  std::vector<WeightedNode> nodes = make_nodes(4, {1, 2, 3, 4});
  auto table = MaglevTable::build(nodes);
  ASSERT_TRUE(table.ok());
  std::vector<int> slots(nodes.size(), 0);
  for (std::uint64_t slot = 0; slot < table->size(); ++slot) ++slots[table->lookup(slot)];
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    double expected = nodes[i].weight / total_weight(nodes);
    EXPECT_NEAR(slots[i] / static_cast<double>(table->size()), expected, 0.01 * expected)
        << nodes[i].id << " of weight " << nodes[i].weight;
  }
}

// The Maglev paper trades perfect consistency for balance: a change moves the changed node's
// slots plus a small number of others. Measured here: 0.2% of the table for 10 -> 9 and 10 -> 11.
TEST(MaglevTable, RemovingANodeDisturbsFewOtherSlots) {
  std::vector<WeightedNode> ten = make_nodes(10);
  std::vector<WeightedNode> nine = without(ten, 0);
  auto before = MaglevTable::build(ten);
  auto after = MaglevTable::build(nine);
  ASSERT_TRUE(before.ok() && after.ok());
  std::vector<std::uint64_t> slots(before->size());
  for (std::uint64_t slot = 0; slot < slots.size(); ++slot) slots[slot] = slot;
  Disruption result = disruption(
      slots, [&](std::uint64_t slot) -> const std::string& { return ten[before->lookup(slot)].id; },
      [&](std::uint64_t slot) -> const std::string& { return nine[after->lookup(slot)].id; },
      "node-0", "");
  double table_size = static_cast<double>(before->size());
  EXPECT_LE(result.moved_elsewhere / table_size, 0.01);
  EXPECT_NEAR(result.moved / table_size, 0.1, 0.01);
}

TEST(MaglevTable, AddingANodeDisturbsFewOtherSlots) {
  std::vector<WeightedNode> ten = make_nodes(10);
  std::vector<WeightedNode> eleven = make_nodes(11);
  auto before = MaglevTable::build(ten);
  auto after = MaglevTable::build(eleven);
  ASSERT_TRUE(before.ok() && after.ok());
  std::vector<std::uint64_t> slots(before->size());
  for (std::uint64_t slot = 0; slot < slots.size(); ++slot) slots[slot] = slot;
  Disruption result = disruption(
      slots, [&](std::uint64_t slot) -> const std::string& { return ten[before->lookup(slot)].id; },
      [&](std::uint64_t slot) -> const std::string& { return eleven[after->lookup(slot)].id; }, "",
      "node-10");
  double table_size = static_cast<double>(before->size());
  EXPECT_LE(result.moved_elsewhere / table_size, 0.01);
  EXPECT_NEAR(result.moved / table_size, 1.0 / 11, 0.01);
}

// ---------------------------------------------------------------------------------------------
// Rendezvous

TEST(Rendezvous, SameNodesInAnyOrderGiveTheSameOwner) {
  std::vector<WeightedNode> nodes = make_nodes(10, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  std::vector<WeightedNode> reversed(nodes.rbegin(), nodes.rend());
  for (std::uint64_t key : random_keys(kSeed, 100'000)) {
    std::size_t pick = rendezvous_pick(key, nodes);
    ASSERT_EQ(pick, rendezvous_pick(key, nodes)) << "seed " << kSeed << ", key " << key;
    ASSERT_EQ(nodes[pick].id, reversed[rendezvous_pick(key, reversed)].id)
        << "seed " << kSeed << ", key " << key;
  }
}

TEST(Rendezvous, SharesFollowWeights) {
  // 1M keys: the smallest share (10%) has a sampling deviation of 0.3%; allow 2%.
  std::vector<WeightedNode> nodes = make_nodes(4, {1, 2, 3, 4});
  std::vector<int> counts(nodes.size(), 0);
  for (std::uint64_t key : random_keys(kSeed, kKeys)) ++counts[rendezvous_pick(key, nodes)];
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    double expected = nodes[i].weight / total_weight(nodes);
    EXPECT_NEAR(counts[i] / double{kKeys}, expected, 0.02 * expected)
        << "seed " << kSeed << ", " << nodes[i].id << " of weight " << nodes[i].weight;
  }
}

TEST(Rendezvous, SkewedWeightsGiveExactShares) {
  // Scaling a plain hash by the weight would give the heavy node 1 - 1/(2*3) = 83% here; the
  // -w/ln(u) score gives it its 75% share.
  std::vector<WeightedNode> nodes = make_nodes(2, {1, 3});
  int heavy = 0;
  for (std::uint64_t key : random_keys(kSeed, kKeys)) heavy += rendezvous_pick(key, nodes) == 1;
  EXPECT_NEAR(heavy / double{kKeys}, 0.75, 0.005) << "seed " << kSeed;
}

TEST(Rendezvous, RemovingANodeMovesOnlyItsKeys) {
  std::vector<WeightedNode> ten = make_nodes(10);
  std::vector<WeightedNode> nine = without(ten, 3);
  Disruption result = disruption(
      random_keys(kSeed, kKeys),
      [&](std::uint64_t key) -> const std::string& { return ten[rendezvous_pick(key, ten)].id; },
      [&](std::uint64_t key) -> const std::string& { return nine[rendezvous_pick(key, nine)].id; },
      "node-3", "");
  EXPECT_EQ(result.moved_elsewhere, 0) << "seed " << kSeed;
  EXPECT_NEAR(result.moved / double{kKeys}, 0.1, 0.005) << "seed " << kSeed;
}

TEST(Rendezvous, AddingANodeMovesOnlyKeysToIt) {
  std::vector<WeightedNode> ten = make_nodes(10);
  std::vector<WeightedNode> eleven = make_nodes(11);
  Disruption result = disruption(
      random_keys(kSeed, kKeys),
      [&](std::uint64_t key) -> const std::string& { return ten[rendezvous_pick(key, ten)].id; },
      [&](std::uint64_t key) -> const std::string& {
        return eleven[rendezvous_pick(key, eleven)].id;
      },
      "", "node-10");
  EXPECT_EQ(result.moved_elsewhere, 0) << "seed " << kSeed;
  EXPECT_NEAR(result.moved / double{kKeys}, 1.0 / 11, 0.005) << "seed " << kSeed;
}

TEST(Rendezvous, RaisingOneWeightMovesKeysOnlyToThatNode) {
  std::vector<WeightedNode> before = make_nodes(5);
  std::vector<WeightedNode> after = before;
  after[2].weight = 2;
  Disruption result = disruption(
      random_keys(kSeed, 200'000),
      [&](std::uint64_t key) -> const std::string& {
        return before[rendezvous_pick(key, before)].id;
      },
      [&](std::uint64_t key) -> const std::string& {
        return after[rendezvous_pick(key, after)].id;
      },
      "", "node-2");
  EXPECT_EQ(result.moved_elsewhere, 0) << "seed " << kSeed;
  // node-2's share goes from 1/5 to 2/6.
  EXPECT_NEAR(result.moved / 200'000.0, 2.0 / 6 - 1.0 / 5, 0.01) << "seed " << kSeed;
}

TEST(Rendezvous, RankStartsWithThePickAndListsDistinctNodes) {
  std::vector<WeightedNode> nodes = make_nodes(6, {1, 1, 2, 2, 3, 3});
  for (std::uint64_t key : random_keys(kSeed, 10'000)) {
    std::vector<std::size_t> rank = rendezvous_rank(key, nodes, 3);
    ASSERT_EQ(rank.size(), 3u);
    EXPECT_EQ(rank[0], rendezvous_pick(key, nodes)) << "seed " << kSeed << ", key " << key;
    std::vector<std::size_t> sorted = rank;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end())
        << "seed " << kSeed << ", key " << key;
  }
}

TEST(Rendezvous, RankIsCappedAtTheNodeCount) {
  std::vector<WeightedNode> nodes = make_nodes(3);
  EXPECT_EQ(rendezvous_rank(42, nodes, 10).size(), 3u);
  EXPECT_TRUE(rendezvous_rank(42, nodes, 0).empty());
}

TEST(Rendezvous, RemovingTheFirstReplicaPromotesTheOthersInOrder) {
  std::vector<WeightedNode> nodes = make_nodes(8);
  for (std::uint64_t key : random_keys(kSeed, 10'000)) {
    std::vector<std::size_t> rank = rendezvous_rank(key, nodes, 3);
    std::vector<WeightedNode> rest = without(nodes, rank[0]);
    std::vector<std::size_t> next = rendezvous_rank(key, rest, 2);
    EXPECT_EQ(rest[next[0]].id, nodes[rank[1]].id) << "seed " << kSeed << ", key " << key;
    EXPECT_EQ(rest[next[1]].id, nodes[rank[2]].id) << "seed " << kSeed << ", key " << key;
  }
}

TEST(RendezvousDeathTest, NoNodesIsABug) {
  EXPECT_DEATH(rendezvous_pick(42, {}), "at least one node");
}

}  // namespace
}  // namespace keel::shard

#include "keel/shard/slot_map.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "keel/core/hash.h"
#include "keel/core/random.h"

namespace keel::shard {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

SlotMap must(Result<SlotMap> result) {
  EXPECT_TRUE(result.ok()) << result.error().to_string();
  return std::move(result).value();
}

std::vector<SlotMove> must_diff(const SlotMap& before, const SlotMap& after) {
  auto moves = SlotMap::diff(before, after);
  EXPECT_TRUE(moves.ok()) << moves.error().to_string();
  return std::move(moves).value();
}

std::uint32_t moved_slots(const std::vector<SlotMove>& moves) {
  std::uint32_t total = 0;
  for (const auto& move : moves) total += move.last_slot - move.first_slot + 1;
  return total;
}

// The fewest slots any rebalance from `before` can move to reach `after`'s counts: every slot of
// a node that left, plus whatever each remaining node has beyond its new count.
std::uint32_t ideal_moves(const SlotMap& before, const SlotMap& after) {
  std::map<std::string, std::uint32_t> old_counts = before.slots_per_node();
  std::map<std::string, std::uint32_t> new_counts = after.slots_per_node();
  std::uint32_t ideal = 0;
  for (const auto& [node, count] : old_counts) {
    auto it = new_counts.find(node);
    std::uint32_t kept = it == new_counts.end() ? 0 : it->second;
    ideal += count > kept ? count - kept : 0;
  }
  return ideal;
}

// Every node's count is its exact capacity share of the slots, rounded up or down, and the
// counts add up to slot_count: what largest-remainder rounding promises.
void expect_counts_follow_capacities(const SlotMap& map, const std::vector<double>& capacities,
                                     const std::string& context) {
  std::map<std::string, std::uint32_t> counts = map.slots_per_node();
  ASSERT_EQ(counts.size(), map.nodes().size()) << context;
  double total = 0;
  for (std::size_t i = 0; i < map.nodes().size(); ++i) {
    total += capacities.empty() ? 1.0 : capacities[i];
  }
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < map.nodes().size(); ++i) {
    double quota = map.slot_count() * (capacities.empty() ? 1.0 : capacities[i]) / total;
    std::uint32_t count = counts[map.nodes()[i]];
    EXPECT_LT(std::abs(count - quota), 1.0 + 1e-9)
        << context << ": " << map.nodes()[i] << " owns " << count << " slots, share " << quota;
    sum += count;
  }
  EXPECT_EQ(sum, map.slot_count()) << context;
}

// ---------------------------------------------------------------------------------------------
// create

TEST(SlotMapCreate, GivesEachNodeOneContiguousRangeInTheOrderGiven) {
  SlotMap map = must(SlotMap::create({"a", "b", "c"}, {}, 12));
  EXPECT_EQ(map.epoch(), 1u);
  EXPECT_EQ(map.slot_count(), 12u);
  EXPECT_EQ(map.nodes(), (std::vector<std::string>{"a", "b", "c"}));
  std::string owners;
  for (std::uint32_t slot = 0; slot < 12; ++slot) owners += map.owner(slot);
  EXPECT_EQ(owners, "aaaabbbbcccc");
}

TEST(SlotMapCreate, DefaultsTo4096Slots) {
  SlotMap map = must(SlotMap::create({"a", "b"}, {}));
  EXPECT_EQ(map.slot_count(), 4096u);
  EXPECT_EQ(map.slots_per_node(), (std::map<std::string, std::uint32_t>{{"a", 2048}, {"b", 2048}}));
}

TEST(SlotMapCreate, SizesRangesByCapacity) {
  SlotMap map = must(SlotMap::create({"a", "b", "c"}, {1, 2, 1}));
  EXPECT_EQ(map.slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"a", 1024}, {"b", 2048}, {"c", 1024}}));
  EXPECT_EQ(map.owner(1023), "a");
  EXPECT_EQ(map.owner(1024), "b");
  EXPECT_EQ(map.owner(3071), "b");
  EXPECT_EQ(map.owner(3072), "c");
}

TEST(SlotMapCreate, LeftoverSlotsGoToLargestRemaindersThenSmallestIds) {
  // Shares 3.33 and 6.67: the larger remainder takes the leftover slot.
  EXPECT_EQ(must(SlotMap::create({"a", "b"}, {1, 2}, 10)).slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"a", 3}, {"b", 7}}));
  // Equal remainders: the smallest id wins, wherever it is listed.
  SlotMap map = must(SlotMap::create({"c", "b", "a"}, {}, 10));
  EXPECT_EQ(map.slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"a", 4}, {"b", 3}, {"c", 3}}));
  EXPECT_EQ(map.owner(0), "c");
  EXPECT_EQ(map.owner(6), "a");
}

TEST(SlotMapCreate, ANodeWhoseShareRoundsToZeroOwnsNothing) {
  SlotMap map = must(SlotMap::create({"big", "tiny"}, {1000, 1}, 100));
  EXPECT_EQ(map.slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"big", 100}, {"tiny", 0}}));
}

TEST(SlotMapCreate, SlotForIsTheStreamHashModuloSlotCount) {
  SlotMap map = must(SlotMap::create({"a", "b"}, {}));
  // hash64("order-42") is pinned in core/hash_test.cc; slots must not change between releases.
  EXPECT_EQ(map.slot_for("order-42"), 0x79cca5910b9ace3cULL % 4096);
  EXPECT_EQ(map.slot_for("order-42"), 3644u);
  EXPECT_EQ(map.owner(map.slot_for("order-42")), "b");
  EXPECT_EQ(map.slot_for(""), hash64(std::string_view("")) % 4096);
}

struct BadArguments {
  std::vector<std::string> nodes;
  std::vector<double> capacities;
  std::uint32_t slot_count;
  std::string message;
};

TEST(SlotMapCreate, RejectsArgumentsThatCannotDescribeACluster) {
  const double nan = std::nan("");
  const std::vector<BadArguments> cases = {
      {{}, {}, 16, "slot map: no nodes given; a slot map needs at least one"},
      {{"a", ""}, {}, 16, "slot map: node 1 has an empty id"},
      {{"a", "b", "a"}, {}, 16, "slot map: node \"a\" is listed twice (positions 0 and 2)"},
      {{"a", "b", "c"},
       {1, 2},
       16,
       "slot map: 2 capacities given for 3 nodes; give one per node, or none for equal"},
      {{"a", "b"},
       {1, 0},
       16,
       "slot map: capacity of node \"b\" is 0; capacities must be positive and finite"},
      {{"a", "b"},
       {-2, 1},
       16,
       "slot map: capacity of node \"a\" is -2; capacities must be positive and finite"},
      {{"a", "b"},
       {1, nan},
       16,
       "slot map: capacity of node \"b\" is nan; capacities must be positive and finite"},
      {{"a", "b"},
       {1, INFINITY},
       16,
       "slot map: capacity of node \"b\" is inf; capacities must be positive and finite"},
      {{"a", "b"},
       {1.5e308, 1.5e308},
       16,
       "slot map: capacities add up to more than a double can hold"},
      {{"a", "b", "c"},
       {},
       2,
       "slot map: 3 nodes but only 2 slots; there cannot be more nodes than slots"},
      {{"a"}, {}, 0, "slot map: slot_count 0 is outside 1-1048576"},
      {{"a"}, {}, SlotMap::kMaxSlots + 1, "slot map: slot_count 1048577 is outside 1-1048576"},
      {{"a", "b\xff"}, {}, 16, "slot map: node 1 has an id that is not valid UTF-8"},
      {{"\xc0\x80"}, {}, 16, "slot map: node 0 has an id that is not valid UTF-8"},  // overlong
      {{"\xed\xa0\x80"},
       {},
       16,
       "slot map: node 0 has an id that is not valid UTF-8"},                         // surrogate
      {{"a\xe2\x82"}, {}, 16, "slot map: node 0 has an id that is not valid UTF-8"},  // cut short
  };
  for (const auto& bad : cases) {
    auto map = SlotMap::create(bad.nodes, bad.capacities, bad.slot_count);
    ASSERT_FALSE(map.ok()) << "expected: " << bad.message;
    EXPECT_TRUE(map.error().is(errc::invalid_argument)) << bad.message;
    EXPECT_EQ(map.error().message(), bad.message);
  }
}

TEST(SlotMapDeathTest, OwnerOfASlotPastTheEndIsABug) {
  SlotMap map = must(SlotMap::create({"a"}, {}, 8));
  EXPECT_DEATH((void)map.owner(8), "slot out of range");
}

// ---------------------------------------------------------------------------------------------
// rebalance and diff

TEST(SlotMapRebalance, JoiningNodeTakesOnlyTheSurplusOfTheOthers) {
  SlotMap before = must(SlotMap::create({"a", "b", "c"}, {}));
  SlotMap after = must(before.rebalance({"a", "b", "c", "d"}));
  EXPECT_EQ(after.epoch(), 2u);
  EXPECT_EQ(after.slots_per_node(), (std::map<std::string, std::uint32_t>{
                                        {"a", 1024}, {"b", 1024}, {"c", 1024}, {"d", 1024}}));
  std::vector<SlotMove> moves = must_diff(before, after);
  EXPECT_EQ(moved_slots(moves), 1024u);
  EXPECT_EQ(moved_slots(moves), ideal_moves(before, after));
  for (const auto& move : moves) EXPECT_EQ(move.to, "d");
}

TEST(SlotMapRebalance, LeavingNodesSlotsAreTheOnlyOnesThatMove) {
  SlotMap before = must(SlotMap::create({"a", "b", "c", "d"}, {}));
  SlotMap after = must(before.rebalance({"a", "c", "d"}));
  std::vector<SlotMove> moves = must_diff(before, after);
  // 4096 / 3 = 1365.33: "a" takes the leftover slot.
  EXPECT_EQ(after.slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"a", 1366}, {"c", 1365}, {"d", 1365}}));
  EXPECT_EQ(moved_slots(moves), 1024u);
  EXPECT_EQ(moved_slots(moves), ideal_moves(before, after));
  for (const auto& move : moves) EXPECT_EQ(move.from, "b");
}

TEST(SlotMapRebalance, CapacityChangeMovesOnlyTheSurplus) {
  SlotMap before = must(SlotMap::create({"a", "b", "c", "d"}, {}));
  SlotMap after = must(before.rebalance({"a", "b", "c", "d"}, {2, 1, 1, 4}));
  EXPECT_EQ(after.slots_per_node(), (std::map<std::string, std::uint32_t>{
                                        {"a", 1024}, {"b", 512}, {"c", 512}, {"d", 2048}}));
  std::vector<SlotMove> moves = must_diff(before, after);
  EXPECT_EQ(moved_slots(moves), 1024u);  // b and c each give up 512, all to d
  EXPECT_EQ(moved_slots(moves), ideal_moves(before, after));
  for (const auto& move : moves) EXPECT_EQ(move.to, "d");
}

TEST(SlotMapRebalance, SameMembershipMovesNothingButAdvancesTheEpoch) {
  SlotMap before = must(SlotMap::create({"a", "b", "c"}, {}));
  SlotMap after = must(before.rebalance({"a", "b", "c"}));
  EXPECT_EQ(after.epoch(), 2u);
  EXPECT_TRUE(must_diff(before, after).empty());
}

TEST(SlotMapRebalance, SurplusLeavesFromTheTopAndDeficitsFillFromTheBottom) {
  // a owns 0-3 and b 4-7; with c the targets are 3, 3, 2: a gives up slot 3, b slot 7.
  SlotMap before = must(SlotMap::create({"a", "b"}, {}, 8));
  SlotMap after = must(before.rebalance({"a", "b", "c"}));
  EXPECT_EQ(must_diff(before, after), (std::vector<SlotMove>{{3, 3, "a", "c"}, {7, 7, "b", "c"}}));
}

TEST(SlotMapRebalance, LargestDeficitTakesTheLowestFreedSlotsFirst) {
  // a 0-2, b 3-5, c 6-8, d 9-11. Capacities 1,1,1,1,1,3 over 12 slots give shares of 1.5 and
  // 4.5; the three leftover slots go to the smallest ids: a, b, c 2 each, d and f 1, z 4.
  SlotMap before = must(SlotMap::create({"a", "b", "c", "d"}, {}, 12));
  SlotMap after = must(before.rebalance({"a", "b", "c", "d", "f", "z"}, {1, 1, 1, 1, 1, 3}));
  EXPECT_EQ(after.slots_per_node(),
            (std::map<std::string, std::uint32_t>{
                {"a", 2}, {"b", 2}, {"c", 2}, {"d", 1}, {"f", 1}, {"z", 4}}));
  // Freed: 2, 5, 8 and d's top two, 10 and 11. z's deficit of 4 beats f's 1 despite its id.
  EXPECT_EQ(must_diff(before, after), (std::vector<SlotMove>{{2, 2, "a", "z"},
                                                             {5, 5, "b", "z"},
                                                             {8, 8, "c", "z"},
                                                             {10, 10, "d", "z"},
                                                             {11, 11, "d", "f"}}));
  EXPECT_EQ(moved_slots(must_diff(before, after)), ideal_moves(before, after));
}

TEST(SlotMapRebalance, ResultDependsOnlyOnTheMembershipNotItsOrder) {
  SlotMap before = must(SlotMap::create({"n1", "n2", "n3", "n4", "n5"}, {}));
  SlotMap one = must(before.rebalance({"n2", "n4", "n6", "n7", "n5"}, {1, 2, 3, 1, 1}));
  SlotMap again = must(before.rebalance({"n2", "n4", "n6", "n7", "n5"}, {1, 2, 3, 1, 1}));
  SlotMap shuffled = must(before.rebalance({"n7", "n6", "n5", "n4", "n2"}, {1, 3, 1, 2, 1}));
  EXPECT_EQ(one, again);
  for (std::uint32_t slot = 0; slot < one.slot_count(); ++slot) {
    ASSERT_EQ(one.owner(slot), shuffled.owner(slot)) << "slot " << slot;
  }
  EXPECT_EQ(shuffled.nodes(), (std::vector<std::string>{"n7", "n6", "n5", "n4", "n2"}));
}

TEST(SlotMapRebalance, RejectsBadMembershipsAsCreateDoes) {
  SlotMap map = must(SlotMap::create({"a", "b"}, {}, 4));
  auto empty = map.rebalance({});
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().message(), "slot map: no nodes given; a slot map needs at least one");
  auto too_many = map.rebalance({"a", "b", "c", "d", "e"});
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().message(),
            "slot map: 5 nodes but only 4 slots; there cannot be more nodes than slots");
  auto twice = map.rebalance({"a", "a"});
  ASSERT_FALSE(twice.ok());
  EXPECT_TRUE(twice.error().is(errc::invalid_argument));
}

TEST(SlotMapDiff, ListsMaximalRunsWithTheSameOldAndNewOwner) {
  SlotMap before = must(SlotMap::create({"a", "b", "c", "d"}, {}, 16));  // 4 slots each
  SlotMap after = must(before.rebalance({"a", "d", "e"}));
  // b (4-7) and c (8-11) leave; targets a 6, d 5, e 5 (a wins the tie on id).
  // e's deficit of 5 takes 4-8, then a's 2 takes 9-10, then d's 1 takes 11.
  EXPECT_EQ(must_diff(before, after),
            (std::vector<SlotMove>{
                {4, 7, "b", "e"}, {8, 8, "c", "e"}, {9, 10, "c", "a"}, {11, 11, "c", "d"}}));
}

TEST(SlotMapDiff, RejectsMapsOfDifferentSizes) {
  auto moves =
      SlotMap::diff(must(SlotMap::create({"a"}, {}, 8)), must(SlotMap::create({"a"}, {}, 16)));
  ASSERT_FALSE(moves.ok());
  EXPECT_TRUE(moves.error().is(errc::invalid_argument));
  EXPECT_EQ(moves.error().message(), "slot map: cannot diff maps of 8 and 16 slots");
}

// Joins (with random capacities), leaves and capacity changes in random order: every rebalance
// must move exactly the ideal number of slots, give counts that follow the capacities, keep the
// map valid, and survive a JSON round trip.
TEST(SlotMapRebalance, RandomMembershipChangesAlwaysMoveTheIdealNumberOfSlots) {
  for (std::uint64_t seed : {1u, 2u, 3u, 20240601u}) {
    Random random(seed);
    std::vector<std::string> nodes = {"node-0", "node-1", "node-2"};
    std::vector<double> capacities = {1, 1, 1};
    int next_id = 3;
    SlotMap map = must(SlotMap::create(nodes, capacities));
    for (int step = 0; step < 200; ++step) {
      std::string context = "seed " + std::to_string(seed) + ", step " + std::to_string(step);
      std::uint64_t action = random.uniform(3);
      if (action == 0 || nodes.size() == 1) {
        nodes.push_back("node-" + std::to_string(next_id++));
        capacities.push_back(1.0 + static_cast<double>(random.uniform(4)));
      } else if (action == 1) {
        auto index = static_cast<std::ptrdiff_t>(random.uniform(nodes.size()));
        nodes.erase(nodes.begin() + index);
        capacities.erase(capacities.begin() + index);
      } else {
        capacities[random.uniform(capacities.size())] = 0.5 + random.uniform01() * 4;
      }
      std::vector<double> given = random.bernoulli(0.2) ? std::vector<double>{} : capacities;
      auto next = map.rebalance(nodes, given);
      ASSERT_TRUE(next.ok()) << context << ": " << next.error().to_string();
      ASSERT_EQ(next->epoch(), map.epoch() + 1) << context;
      expect_counts_follow_capacities(*next, given, context);
      std::vector<SlotMove> moves = must_diff(map, *next);
      ASSERT_EQ(moved_slots(moves), ideal_moves(map, *next))
          << context << ": rebalance moved more slots than needed";
      for (const auto& move : moves) {
        for (std::uint32_t slot = move.first_slot; slot <= move.last_slot; ++slot) {
          ASSERT_EQ(map.owner(slot), move.from) << context << ", slot " << slot;
          ASSERT_EQ(next->owner(slot), move.to) << context << ", slot " << slot;
        }
      }
      auto reread = SlotMap::from_json(next->to_json());
      ASSERT_TRUE(reread.ok()) << context << ": " << reread.error().to_string();
      ASSERT_EQ(*reread, *next) << context;
      map = std::move(next).value();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// JSON

TEST(SlotMapJson, WritesRangesCompressed) {
  SlotMap map = must(SlotMap::create({"a", "b"}, {}, 4));
  EXPECT_EQ(map.to_json(),
            R"({"version":1,"epoch":1,"slot_count":4,"nodes":["a","b"],)"
            R"("ranges":[{"first":0,"last":1,"node":"a"},{"first":2,"last":3,"node":"b"}]})");
}

TEST(SlotMapJson, RoundTripsAfterRebalances) {
  SlotMap map = must(SlotMap::create({"a", "b", "c"}, {}));
  map = must(map.rebalance({"a", "c", "d", "e"}, {1, 2, 1, 1}));
  map = must(map.rebalance({"a", "c", "d", "e", "f"}));
  auto reread = SlotMap::from_json(map.to_json());
  ASSERT_TRUE(reread.ok()) << reread.error().to_string();
  EXPECT_EQ(*reread, map);
  EXPECT_EQ(reread->epoch(), 3u);
  EXPECT_EQ(reread->to_json(), map.to_json());
}

TEST(SlotMapJson, RoundTripsIdsThatNeedEscaping) {
  SlotMap map =
      must(SlotMap::create({"quote\"d", "back\\slash", "ünïcode", "tab\t", "emoji-😀"}, {}, 8));
  auto reread = SlotMap::from_json(map.to_json());
  ASSERT_TRUE(reread.ok()) << reread.error().to_string();
  EXPECT_EQ(*reread, map);
}

TEST(SlotMapJson, AcceptsANodeThatOwnsNoSlotsAndRangesInAnyOrder) {
  auto map = SlotMap::from_json(R"({"version": 1, "epoch": 7, "slot_count": 10,
      "nodes": ["a", "b", "new"],
      "ranges": [{"first": 6, "last": 9, "node": "a"}, {"first": 0, "last": 5, "node": "b"}]})");
  ASSERT_TRUE(map.ok()) << map.error().to_string();
  EXPECT_EQ(map->epoch(), 7u);
  EXPECT_EQ(map->slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"a", 4}, {"b", 6}, {"new", 0}}));
  EXPECT_EQ(map->owner(5), "b");
  EXPECT_EQ(map->owner(6), "a");
}

TEST(SlotMapJson, AcceptsReplicasOfKnownNodesAndRoutesToTheRangesNode) {
  auto map = SlotMap::from_json(R"({"version":1,"epoch":3,"slot_count":4,"nodes":["a","b","c"],
      "ranges":[{"first":0,"last":1,"node":"a","replicas":["b","c"]},
                {"first":2,"last":3,"node":"b","replicas":[]}]})");
  ASSERT_TRUE(map.ok()) << map.error().to_string();
  EXPECT_EQ(map->owner(1), "a");
  for (
      const auto& [replicas, message] : std::vector<std::pair<std::string, std::string>>{
          {R"("b")",
           R"(slot map: range 0 field "replicas" must be an array of node ids, found a JSON string)"},
          {R"([1])", "slot map: range 0 replicas[0] must be a string, found 1"},
          {R"(["x"])",
           R"(slot map: range 0 replicas[0] names unknown node "x" (not listed in "nodes"))"},
          {R"(["a"])", R"(slot map: range 0 replicas[0] is the range's own node "a")"}}) {
    auto bad = SlotMap::from_json(R"({"version":1,"epoch":3,"slot_count":4,"nodes":["a","b"],
        "ranges":[{"first":0,"last":3,"node":"a","replicas":)" +
                                  replicas + "}]}");
    ASSERT_FALSE(bad.ok()) << replicas;
    EXPECT_EQ(bad.error().message(), message);
  }
}

TEST(SlotMapAssign, GivesTheRangeToTheNodeAndAddsANewOneToTheList) {
  SlotMap map = must(SlotMap::create({"a", "b"}, {}, 8));
  SlotMap next = must(map.assign(2, 5, "c"));
  EXPECT_EQ(next.epoch(), map.epoch() + 1);
  EXPECT_EQ(next.nodes(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(must_diff(map, next), (std::vector<SlotMove>{{2, 3, "a", "c"}, {4, 5, "b", "c"}}));
  SlotMap back = must(next.assign(4, 5, "b"));
  EXPECT_EQ(back.owner(4), "b");
  EXPECT_EQ(back.nodes().size(), 3u) << "a node that owns nothing stays listed";
  EXPECT_FALSE(map.assign(5, 8, "a").ok());
  EXPECT_FALSE(map.assign(3, 2, "a").ok());
  EXPECT_FALSE(map.assign(0, 0, "").ok());
}

// A valid document with one part replaced, so each case shows only what it breaks.
std::string document(
    const std::string& version = "1", const std::string& epoch = "7",
    const std::string& slot_count = "100", const std::string& nodes = R"(["a","b"])",
    const std::string& ranges =
        R"([{"first":0,"last":49,"node":"a"},{"first":50,"last":99,"node":"b"}])") {
  return R"({"version":)" + version + R"(,"epoch":)" + epoch + R"(,"slot_count":)" + slot_count +
         R"(,"nodes":)" + nodes + R"(,"ranges":)" + ranges + "}";
}

std::string ranges(const std::string& extra) {
  return R"([{"first":0,"last":49,"node":"a"},{"first":50,"last":99,"node":"b"})" + extra + "]";
}

struct BadDocument {
  std::string text;
  std::string message;
};

TEST(SlotMapJson, RejectsDocumentsThatBreakTheFormatSayingWhatAndWhere) {
  const std::vector<BadDocument> cases = {
      {"[1,2]", "slot map: the document must be a JSON object, found a JSON array"},
      {R"({"epoch":1})", R"(slot map: the document is missing field "version")"},
      {document("\"1\""),
       R"(slot map: the document field "version" must be an integer in 0-18446744073709551615, found a JSON string)"},
      {document("2"), "slot map: unsupported version 2; this build reads 1"},
      {R"({"version":1,"epoch":1,"slot_count":1,"nodes":["a"],"ranges":[],"owner":"x"})",
       R"(slot map: the document has unknown field "owner" (expected version, epoch, slot_count, nodes, ranges))"},
      {R"({"version":1,"slot_count":1,"nodes":["a"],"ranges":[]})",
       R"(slot map: the document is missing field "epoch")"},
      {document("1", "0"),
       R"(slot map: the document field "epoch" must be an integer in 1-18446744073709551615, found 0)"},
      {document("1", "-3"),
       R"(slot map: the document field "epoch" must be an integer in 1-18446744073709551615, found -3)"},
      {document("1", "1.5"),
       R"(slot map: the document field "epoch" must be an integer in 1-18446744073709551615, found 1.5)"},
      {document("1", "7", "0"),
       R"(slot map: the document field "slot_count" must be an integer in 1-1048576, found 0)"},
      {document("1", "7", "4294967296"),
       R"(slot map: the document field "slot_count" must be an integer in 1-1048576, found 4294967296)"},
      {document("1", "7", "null"),
       R"(slot map: the document field "slot_count" must be an integer in 1-1048576, found null)"},
      {R"({"version":1,"epoch":1,"slot_count":1,"ranges":[]})",
       R"(slot map: the document is missing field "nodes")"},
      {document("1", "7", "100", "[]"),
       R"(slot map: field "nodes" must be a non-empty array of node ids, found a JSON array)"},
      {document("1", "7", "100", R"({"a":1})"),
       R"(slot map: field "nodes" must be a non-empty array of node ids, found a JSON object)"},
      {document("1", "7", "100", R"(["a",2])"), "slot map: nodes[1] must be a string, found 2"},
      {document("1", "7", "100", R"(["a",""])"), "slot map: nodes[1] is an empty string"},
      {document("1", "7", "100", R"(["a","b","a"])"), R"(slot map: nodes[2] "a" repeats nodes[0])"},
      {document("1", "7", "2", R"(["a","b","c"])"), "slot map: 3 nodes but slot_count is only 2"},
      {R"({"version":1,"epoch":1,"slot_count":1,"nodes":["a"]})",
       R"(slot map: the document is missing field "ranges")"},
      {document("1", "7", "100", R"(["a","b"])", R"({"first":0})"),
       R"(slot map: field "ranges" must be an array, found a JSON object)"},
      {document("1", "7", "100", R"(["a","b"])", ranges(R"(,[0,1,"a"])")),
       "slot map: range 2 must be an object with first, last and node, found a JSON array"},
      {document("1", "7", "100", R"(["a","b"])",
                ranges(R"(,{"first":0,"last":1,"node":"a","weight":2})")),
       R"(slot map: range 2 has unknown field "weight" (expected first, last, node, replicas))"},
      {document("1", "7", "100", R"(["a","b"])", ranges(R"(,{"last":1,"node":"a"})")),
       R"(slot map: range 2 is missing field "first")"},
      {document("1", "7", "100", R"(["a","b"])", ranges(R"(,{"first":-1,"last":1,"node":"a"})")),
       R"(slot map: range 2 field "first" must be an integer in 0-18446744073709551615, found -1)"},
      {document("1", "7", "100", R"(["a","b"])", ranges(R"(,{"first":0,"last":1})")),
       R"(slot map: range 2 is missing field "node")"},
      {document("1", "7", "100", R"(["a","b"])", ranges(R"(,{"first":0,"last":1,"node":7})")),
       R"(slot map: range 2 field "node" must be a string, found 7)"},
      {document("1", "7", "100", R"(["a","b"])",
                R"([{"first":0,"last":49,"node":"a"},{"first":99,"last":50,"node":"b"}])"),
       "slot map: range 1 has last 50 before first 99"},
      {document("1", "7", "100", R"(["a","b"])",
                R"([{"first":0,"last":49,"node":"a"},{"first":50,"last":149,"node":"b"}])"),
       "slot map: range 1 (slots 50-149) goes past the last slot: slot_count is 100, so slots are "
       "0-99"},
      {document("1", "7", "100", R"(["a","b"])",
                R"([{"first":0,"last":49,"node":"a"},{"first":50,"last":99,"node":"x"}])"),
       R"(slot map: range 1 names unknown node "x" (not listed in "nodes"))"},
      {document("1", "7", "100", R"(["a","b"])",
                R"([{"first":0,"last":59,"node":"a"},{"first":50,"last":99,"node":"b"}])"),
       "slot map: range 1 (slots 50-99) overlaps range 0 (slots 0-59) at slot 50"},
      {document("1", "7", "100", R"(["a","b"])", ranges(R"(,{"first":7,"last":7,"node":"b"})")),
       "slot map: range 2 (slot 7) overlaps range 0 (slots 0-49) at slot 7"},
      {document("1", "7", "100", R"(["a","b"])",
                R"([{"first":0,"last":19,"node":"a"},{"first":50,"last":99,"node":"b"}])"),
       "slot map: slots 20-49 are not owned by any node: slot_count is 100 but ranges cover 70 "
       "slots"},
      {document("1", "7", "100", R"(["a","b"])",
                R"([{"first":0,"last":49,"node":"a"},{"first":51,"last":99,"node":"b"}])"),
       "slot map: slot 50 is not owned by any node: slot_count is 100 but ranges cover 99 slots"},
      {document("1", "7", "1000"),
       "slot map: slots 100-999 are not owned by any node: slot_count is 1000 but ranges cover "
       "100 slots"},
  };
  for (const auto& bad : cases) {
    auto map = SlotMap::from_json(bad.text);
    ASSERT_FALSE(map.ok()) << "accepted: " << bad.text;
    EXPECT_TRUE(map.error().is(errc::invalid_slot_map)) << bad.text;
    EXPECT_EQ(map.error().message(), bad.message) << "for: " << bad.text;
  }
}

TEST(SlotMapJson, RejectsMalformedJsonWithTheParsersBytePosition) {
  // Positions count from 1, as the parser's line and column do: the end of these 20 bytes is
  // byte 21, and a stray byte after a document of n bytes is byte n + 1.
  auto truncated = SlotMap::from_json(R"({"version":1,"epoch")");
  ASSERT_FALSE(truncated.ok());
  EXPECT_TRUE(truncated.error().is(errc::invalid_slot_map));
  EXPECT_THAT(truncated.error().message(), StartsWith("slot map: invalid JSON at byte 21: "));
  EXPECT_THAT(truncated.error().message(), HasSubstr("unexpected end of input"));
  EXPECT_THAT(truncated.error().message(), ::testing::Not(HasSubstr("[json.exception")));

  auto trailing = SlotMap::from_json(document() + "x");
  ASSERT_FALSE(trailing.ok());
  EXPECT_THAT(trailing.error().message(), StartsWith("slot map: invalid JSON at byte " +
                                                     std::to_string(document().size() + 1)));

  for (std::string_view text : {"", "   ", "{", "nul", "{\"version\":1,}", "\"\xff\""}) {
    auto map = SlotMap::from_json(text);
    ASSERT_FALSE(map.ok()) << "accepted: " << text;
    EXPECT_THAT(map.error().message(), StartsWith("slot map: invalid JSON at byte ")) << text;
  }
}

TEST(SlotMapJson, RejectsWithoutThrowingOnEveryTruncationOfAValidDocument) {
  std::string text = must(SlotMap::create({"a", "b", "c"}, {}, 64)).to_json();
  for (std::size_t length = 0; length < text.size(); ++length) {
    auto map = SlotMap::from_json(std::string_view(text).substr(0, length));
    EXPECT_FALSE(map.ok()) << "accepted a prefix of " << length << " bytes";
  }
  EXPECT_TRUE(SlotMap::from_json(text).ok());
}

}  // namespace
}  // namespace keel::shard

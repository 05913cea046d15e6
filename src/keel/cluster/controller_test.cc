// The controller and the move state machine on the in-process coordinator and the manual
// clock: the first map, moves step by step, every crash point taken over by a new controller,
// two controllers racing, a stale move, an abort when the goal changes.
#include "keel/cluster/controller.h"

#include <gtest/gtest.h>

#include "keel/coord/in_process_coordinator.h"
#include "keel/coord/membership.h"

namespace keel::cluster {
namespace {

using Step = Controller::Step;

struct Copy {
  Move move;
  bool until_fenced;
  bool operator==(const Copy&) const = default;
};

class FakeDriver final : public MoveDriver {
 public:
  Status copy(const Move& move, const NodeInfo& source, const NodeInfo& target,
              bool until_fenced) override {
    EXPECT_EQ(source.id, move.from);
    EXPECT_EQ(target.id, move.to);
    copies.push_back({move, until_fenced});
    if (fail) return Error(errc::invalid_argument, "target unreachable");
    return {};
  }
  std::vector<Copy> copies;
  bool fail = false;
};

class ControllerTest : public ::testing::Test {
 protected:
  ControllerTest()
      : members_(store, clock, keys.members(), 5s), elector_(store, clock, keys.controller()) {}

  void join(const std::string& id) {
    NodeInfo info{id, "http://" + id + ":2113", "", ""};
    auto joined = members_.join({id, info.api, info.to_json()});
    ASSERT_TRUE(joined.ok()) << joined.error().to_string();
    registrations_[id] = std::move(*joined);
  }
  void leave(const std::string& id) { registrations_.erase(id); }

  std::shared_ptr<coord::Leadership> lead(const std::string& id) {
    auto leadership = elector_.campaign(id);
    EXPECT_TRUE(leadership.ok());
    return *leadership;
  }

  ClusterState state() {
    auto read = read_state(store, keys);
    EXPECT_TRUE(read.ok()) << read.error().to_string();
    return *read;
  }

  Step must_step(Controller& controller) {
    auto step = controller.step();
    EXPECT_TRUE(step.ok()) << step.error().to_string();
    return step.ok() ? *step : Step::kIdle;
  }

  void set_goal(const shard::SlotMap& goal) {
    ASSERT_TRUE(store.put(keys.goal(), goal.to_json()).ok());
  }

  ManualClock clock;
  coord::InProcessCoordinator store{clock};
  Keys keys{"test/cluster"};
  FakeDriver driver;
  ControllerOptions options{.slot_count = 256, .initial_nodes = 3, .max_slots_per_move = 16};

 private:
  coord::Membership members_;
  coord::Elector elector_;
  std::map<std::string, std::unique_ptr<coord::Registration>> registrations_;
};

TEST_F(ControllerTest, WritesTheFirstMapOnceEnoughNodesHaveJoined) {
  auto leadership = lead("a");
  Controller controller(store, *leadership, driver, keys, options);
  join("a");
  join("b");
  EXPECT_EQ(must_step(controller), Step::kIdle);
  EXPECT_EQ(controller.waiting_for(), "2 of 3 nodes have joined");
  EXPECT_FALSE(state().map);
  join("c");
  EXPECT_EQ(must_step(controller), Step::kCreatedMap);
  ClusterState now = state();
  ASSERT_TRUE(now.map);
  EXPECT_EQ(now.map->epoch(), 1u);
  EXPECT_EQ(now.map->slot_count(), 256u);
  EXPECT_EQ(now.map->slots_per_node(),
            (std::map<std::string, std::uint32_t>{{"a", 86}, {"b", 85}, {"c", 85}}));
  EXPECT_EQ(must_step(controller), Step::kIdle) << "no goal: nothing to move";
}

TEST_F(ControllerTest, ConvergesTheMapToTheGoalAFewSlotsAtATime) {
  for (auto id : {"a", "b", "c"}) join(id);
  auto leadership = lead("a");
  Controller controller(store, *leadership, driver, keys, options);
  ASSERT_EQ(must_step(controller), Step::kCreatedMap);
  join("d");
  shard::SlotMap goal = *state().map->rebalance({"a", "b", "c", "d"});
  set_goal(goal);
  const std::size_t slots_to_move = [&] {
    std::size_t n = 0;
    auto moves = shard::SlotMap::diff(*state().map, goal);
    for (const auto& move : *moves) {
      n += move.last_slot - move.first_slot + 1;
    }
    return n;
  }();
  EXPECT_EQ(slots_to_move, 64u);

  std::uint64_t epoch = 1;
  std::uint32_t moved = 0;
  for (int move = 0; moved < slots_to_move; ++move) {
    ASSERT_LT(move, 64) << "the controller does not converge";
    ASSERT_EQ(must_step(controller), Step::kStarted);
    ClusterState started = state();
    ASSERT_TRUE(started.move);
    EXPECT_EQ(started.move->epoch, epoch);
    EXPECT_EQ(started.move->to, "d");
    EXPECT_LE(started.move->last - started.move->first + 1, 16u);
    EXPECT_EQ(started.move->phase, Move::Phase::kCopying);
    ASSERT_EQ(must_step(controller), Step::kFenced);
    EXPECT_EQ(state().move->phase, Move::Phase::kFenced);
    ASSERT_EQ(must_step(controller), Step::kFlipped);
    ClusterState flipped = state();
    EXPECT_FALSE(flipped.move);
    EXPECT_EQ(flipped.map->epoch(), ++epoch);
    for (std::uint32_t slot = started.move->first; slot <= started.move->last; ++slot) {
      EXPECT_EQ(flipped.map->owner(slot), "d");
    }
    moved += started.move->last - started.move->first + 1;
    ASSERT_EQ(driver.copies.size(), 2u * (move + 1));
    EXPECT_FALSE(driver.copies[2 * move].until_fenced);
    EXPECT_TRUE(driver.copies[2 * move + 1].until_fenced);
  }
  EXPECT_EQ(moved, slots_to_move);
  EXPECT_EQ(must_step(controller), Step::kIdle);
  EXPECT_TRUE(shard::SlotMap::diff(*state().map, goal)->empty());
  EXPECT_EQ(state().map->slots_per_node().at("d"), 64u);
}

// The controller dies after each step of a move in turn; a new one (another node, a new
// token) reads the state and finishes the move from where it was.
TEST_F(ControllerTest, ANewControllerFinishesAMoveFromEveryCrashPoint) {
  for (auto id : {"a", "b", "c"}) join(id);
  {
    auto first = lead("a");
    Controller controller(store, *first, driver, keys, options);
    ASSERT_EQ(must_step(controller), Step::kCreatedMap);
  }
  for (int crash_after = 0; crash_after < 3; ++crash_after) {
    SCOPED_TRACE("crash after step " + std::to_string(crash_after));
    ClusterState before = state();
    set_goal(*before.map->assign(0, 7, before.map->owner(0) == "a" ? "b" : "a"));
    {
      auto old_leader = lead("a");
      Controller old(store, *old_leader, driver, keys, options);
      if (crash_after >= 1) {
        ASSERT_EQ(must_step(old), Step::kStarted);
      }
      if (crash_after >= 2) {
        ASSERT_EQ(must_step(old), Step::kFenced);
      }
    }  // resigns: the controller is gone mid-move
    auto new_leader = lead("b");
    Controller next(store, *new_leader, driver, keys, options);
    if (crash_after < 1) {
      ASSERT_EQ(must_step(next), Step::kStarted);
    }
    if (crash_after < 2) {
      ASSERT_EQ(must_step(next), Step::kFenced);
    }
    ASSERT_EQ(must_step(next), Step::kFlipped);
    EXPECT_EQ(state().map->epoch(), before.map->epoch() + 1);
    EXPECT_EQ(must_step(next), Step::kIdle);
  }
}

TEST_F(ControllerTest, ADeposedControllersWritesFail) {
  for (auto id : {"a", "b", "c"}) join(id);
  coord::Elector elector(store, clock, keys.controller(), {.ttl = 3s});
  auto old_leader = elector.campaign("a");
  ASSERT_TRUE(old_leader.ok());
  Controller old(store, **old_leader, driver, keys, options);
  // Its lease is gone (it was paused past the TTL, say): the other candidate leads.
  ASSERT_TRUE(store.revoke((*old_leader)->lease()).ok());
  auto new_leader = lead("b");
  Controller next(store, *new_leader, driver, keys, options);
  auto stale = old.step();
  ASSERT_FALSE(stale.ok());
  EXPECT_TRUE(stale.error().is(coord::errc::not_leader)) << stale.error().to_string();
  EXPECT_FALSE(state().map) << "nothing written by the deposed controller";
  EXPECT_EQ(must_step(next), Step::kCreatedMap);
}

TEST_F(ControllerTest, TwoControllersRacingOnOneStateWriteOnce) {
  for (auto id : {"a", "b", "c"}) join(id);
  auto leader = lead("a");
  // Two controllers on the same leadership stand for a step that read the state, then lost the
  // race to another step's write: the compare on what it read refuses the second write.
  Controller one(store, *leader, driver, keys, options);
  Controller two(store, *leader, driver, keys, options);
  ASSERT_EQ(must_step(one), Step::kCreatedMap);
  set_goal(*state().map->assign(0, 3, "c"));
  ClusterState read = state();
  ASSERT_EQ(must_step(one), Step::kStarted);
  Move stale = *state().move;
  ASSERT_EQ(must_step(two), Step::kFenced) << "two reads the new state and goes on";
  EXPECT_EQ(state().move->phase, Move::Phase::kFenced);
  (void)read;
  (void)stale;
}

TEST_F(ControllerTest, AMoveTheGoalNoLongerWantsIsAbortedBeforeItsFlip) {
  for (auto id : {"a", "b", "c"}) join(id);
  auto leader = lead("a");
  Controller controller(store, *leader, driver, keys, options);
  ASSERT_EQ(must_step(controller), Step::kCreatedMap);
  shard::SlotMap map = *state().map;
  set_goal(*map.assign(0, 3, "c"));
  ASSERT_EQ(must_step(controller), Step::kStarted);
  ASSERT_EQ(must_step(controller), Step::kFenced);
  set_goal(map);  // the operator moves them back: the goal is the map as it was
  EXPECT_EQ(must_step(controller), Step::kAborted);
  ClusterState now = state();
  EXPECT_FALSE(now.move) << "the source is unfenced and serves the slots on";
  EXPECT_EQ(now.map->epoch(), map.epoch());
  EXPECT_EQ(must_step(controller), Step::kIdle);
}

TEST_F(ControllerTest, AMoveOfAnOlderMapIsDropped) {
  for (auto id : {"a", "b", "c"}) join(id);
  auto leader = lead("a");
  Controller controller(store, *leader, driver, keys, options);
  ASSERT_EQ(must_step(controller), Step::kCreatedMap);
  Move stale{.epoch = 0, .first = 0, .last = 3, .from = "a", .to = "c"};
  ASSERT_TRUE(store.put(keys.move(), stale.to_json()).ok());
  EXPECT_EQ(must_step(controller), Step::kAborted);
  EXPECT_FALSE(state().move);
}

TEST_F(ControllerTest, AFailedDrainUnfencesTheSourceAndAMissingNodeMakesItWait) {
  for (auto id : {"a", "b", "c"}) join(id);
  auto leader = lead("a");
  Controller controller(store, *leader, driver, keys, options);
  ASSERT_EQ(must_step(controller), Step::kCreatedMap);
  set_goal(*state().map->assign(0, 3, "c"));
  ASSERT_EQ(must_step(controller), Step::kStarted);
  ASSERT_EQ(must_step(controller), Step::kFenced);
  driver.fail = true;
  auto failed = controller.step();
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.error().message(), "target unreachable");
  EXPECT_EQ(state().move->phase, Move::Phase::kCopying) << "the source takes writes again";
  driver.fail = false;
  leave("c");
  EXPECT_EQ(must_step(controller), Step::kWaiting);
  EXPECT_EQ(controller.waiting_for(), "moving slots 0-3 waits for node c to be a member");
  join("c");
  EXPECT_EQ(must_step(controller), Step::kFenced);
  EXPECT_EQ(must_step(controller), Step::kFlipped);
}

TEST(ClusterState, MovesAndNodesRoundTripAndBadValuesSayWhatIsWrong) {
  Move move{
      .epoch = 4, .first = 10, .last = 20, .from = "a", .to = "b", .phase = Move::Phase::kFenced};
  EXPECT_EQ(*Move::from_json(move.to_json()), move);
  NodeInfo node{"a", "http://127.0.0.1:2113", "127.0.0.1:9092", ""};
  EXPECT_EQ(*NodeInfo::from_json(node.to_json()), node);
  EXPECT_EQ(
      Move::from_json(R"({"epoch":1,"first":5,"last":4,"from":"a","to":"b","phase":"copying"})")
          .error()
          .message(),
      "move: slots 5-4 are not a range of slots");
  EXPECT_EQ(Move::from_json(R"({"epoch":1,"first":1,"last":4,"from":"a","to":"b","phase":"x"})")
                .error()
                .message(),
            "move: phase \"x\" is neither \"copying\" nor \"fenced\"");
  EXPECT_EQ(NodeInfo::from_json("[]").error().message(), "node: not a JSON object: []");
}

}  // namespace
}  // namespace keel::cluster

#include "keel/kafka/coordinator.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>

namespace keel::kafka {
namespace {

using namespace std::chrono_literals;

class CoordinatorTest : public testing::Test {
 protected:
  ManualClock clock;
  GroupCoordinator groups{clock, CoordinatorOptions{.initial_rebalance_delay = 100ms}};

  // Joins (v4+: a first join gets an id, the second uses it); the result once there is one.
  struct Pending {
    std::optional<JoinResult> result;
  };
  std::shared_ptr<Pending> join(std::string member_id, std::int16_t version = 5,
                                std::string protocol = "range") {
    JoinGroupRequest request;
    request.group_id = "g";
    request.session_timeout_ms = 10000;
    request.rebalance_timeout_ms = 30000;
    request.member_id = member_id;
    request.protocol_type = "consumer";
    metadata_ = "meta-" + member_id;
    protocol_ = protocol;
    request.protocols = {{protocol_, metadata_}};
    auto pending = std::make_shared<Pending>();
    groups.join(request, version, "client", [pending](JoinResult r) { pending->result = r; });
    return pending;
  }
  std::string new_member() {
    auto first = join("");
    EXPECT_TRUE(first->result);
    EXPECT_EQ(first->result->error, Code::kMemberIdRequired);
    return first->result->member_id;
  }
  std::optional<std::pair<Code, std::string>> sync(
      const std::string& member, std::int32_t gen,
      std::vector<std::pair<std::string, std::string>> assignments = {}) {
    SyncGroupRequest request;
    request.group_id = "g";
    request.generation_id = gen;
    request.member_id = member;
    for (const auto& [m, a] : assignments) request.assignments.push_back({m, a});
    auto out = std::make_shared<std::optional<std::pair<Code, std::string>>>();
    groups.sync(request, [out](Code c, std::string a) { *out = std::pair{c, a}; });
    return *out;
  }
  Code heartbeat(const std::string& member, std::int32_t gen) {
    return groups.heartbeat({.group_id = "g", .generation_id = gen, .member_id = member});
  }

 private:
  std::string metadata_;
  std::string protocol_;
};

TEST_F(CoordinatorTest, OneMemberJoinsAfterTheInitialDelayAndGetsItsAssignment) {
  const std::string a = new_member();
  auto joined = join(a);
  EXPECT_FALSE(joined->result);  // a new group waits for more members
  clock.advance(100ms);
  groups.tick();
  ASSERT_TRUE(joined->result);
  EXPECT_EQ(joined->result->error, Code::kNone);
  EXPECT_EQ(joined->result->leader, a);
  EXPECT_EQ(joined->result->generation, 1);
  ASSERT_EQ(joined->result->members.size(), 1u);
  EXPECT_EQ(joined->result->members[0].second, "meta-" + a);
  auto synced = sync(a, 1, {{a, "all of it"}});
  ASSERT_TRUE(synced);
  EXPECT_EQ(synced->first, Code::kNone);
  EXPECT_EQ(synced->second, "all of it");
  EXPECT_EQ(heartbeat(a, 1), Code::kNone);
  EXPECT_EQ(groups.can_commit("g", 1, a), Code::kNone);
  EXPECT_EQ(groups.can_commit("g", 0, a), Code::kIllegalGeneration);
  EXPECT_EQ(groups.can_commit("g", -1, ""), Code::kUnknownMemberId);  // the group has members
}

TEST_F(CoordinatorTest, ASecondMemberRebalancesTheGroupAndFollowersWaitForTheLeader) {
  const std::string a = new_member();
  auto a1 = join(a);
  clock.advance(100ms);
  groups.tick();
  ASSERT_TRUE(a1->result);
  ASSERT_TRUE(sync(a, 1, {{a, "p0,p1"}}));

  const std::string b = new_member();
  auto b1 = join(b);
  EXPECT_FALSE(b1->result);
  EXPECT_EQ(heartbeat(a, 1), Code::kRebalanceInProgress);  // a must join again
  auto a2 = join(a);
  ASSERT_TRUE(a2->result);
  ASSERT_TRUE(b1->result);
  EXPECT_EQ(a2->result->generation, 2);
  EXPECT_EQ(a2->result->leader, a);  // the leader stays while it is a member
  EXPECT_EQ(a2->result->members.size(), 2u);
  EXPECT_TRUE(b1->result->members.empty());  // only the leader gets the subscriptions

  SyncGroupRequest follower{.group_id = "g", .generation_id = 2, .member_id = b};
  std::optional<std::pair<Code, std::string>> b_sync;
  groups.sync(follower, [&](Code c, std::string s) { b_sync = std::pair{c, s}; });
  EXPECT_FALSE(b_sync);  // waits for the leader
  ASSERT_TRUE(sync(a, 2, {{a, "p0"}, {b, "p1"}}));
  ASSERT_TRUE(b_sync);
  EXPECT_EQ(b_sync->first, Code::kNone);
  EXPECT_EQ(b_sync->second, "p1");
  EXPECT_EQ(sync(b, 1)->first, Code::kIllegalGeneration);
}

TEST_F(CoordinatorTest, ASilentMemberIsRemovedAfterItsSessionTimeout) {
  const std::string a = new_member();
  const std::string b = new_member();
  auto a1 = join(a);
  auto b1 = join(b);
  clock.advance(100ms);
  groups.tick();
  ASSERT_TRUE(a1->result && b1->result);
  ASSERT_TRUE(sync(a, 1, {{a, "x"}, {b, "y"}}));
  ASSERT_TRUE(sync(b, 1));
  for (int i = 0; i < 12; ++i) {  // a heartbeats, b is gone
    clock.advance(1s);
    EXPECT_NE(heartbeat(a, 1), Code::kUnknownMemberId);
    groups.tick();
  }
  EXPECT_EQ(heartbeat(b, 1), Code::kUnknownMemberId);
  EXPECT_EQ(heartbeat(a, 1), Code::kRebalanceInProgress);
  auto a2 = join(a);
  ASSERT_TRUE(a2->result);
  EXPECT_EQ(a2->result->members.size(), 1u);
}

TEST_F(CoordinatorTest, AMemberThatDoesNotJoinAgainInTheRebalanceTimeoutIsDropped) {
  const std::string a = new_member();
  const std::string b = new_member();
  auto a1 = join(a);
  auto b1 = join(b);
  clock.advance(100ms);
  groups.tick();
  ASSERT_TRUE(sync(a, 1, {}));
  const std::string c = new_member();
  auto c1 = join(c);  // a rebalance: a and b must join again
  auto a2 = join(a);
  EXPECT_FALSE(a2->result);
  clock.advance(31s);
  groups.tick();
  ASSERT_TRUE(a2->result && c1->result);
  EXPECT_EQ(a2->result->members.size(), 2u);  // b missed it
  EXPECT_EQ(heartbeat(b, 1), Code::kUnknownMemberId);
}

TEST_F(CoordinatorTest, LeavingRebalancesTheRestAndTheLastOneEmptiesTheGroup) {
  const std::string a = new_member();
  const std::string b = new_member();
  auto a1 = join(a);
  auto b1 = join(b);
  clock.advance(100ms);
  groups.tick();
  ASSERT_TRUE(sync(a, 1, {}));
  EXPECT_EQ(groups.leave("g", {b}), std::vector<Code>{Code::kNone});
  EXPECT_EQ(groups.leave("g", {b}), std::vector<Code>{Code::kUnknownMemberId});
  auto a2 = join(a);
  ASSERT_TRUE(a2->result);
  EXPECT_EQ(a2->result->generation, 2);
  EXPECT_EQ(groups.leave("g", {a}), std::vector<Code>{Code::kNone});
  EXPECT_EQ(groups.can_commit("g", -1, ""), Code::kNone);  // empty: a standalone commit is fine
  EXPECT_EQ(groups.remove_if_empty("g"), Code::kNone);
}

TEST_F(CoordinatorTest, ErrorsForWhatCannotJoin) {
  EXPECT_EQ(join("unknown-id")->result->error, Code::kUnknownMemberId);
  JoinGroupRequest request;
  request.group_id = "g";
  request.session_timeout_ms = 10;  // under the minimum
  request.protocol_type = "consumer";
  request.protocols = {{"range", ""}};
  std::optional<JoinResult> result;
  groups.join(request, 5, "c", [&](JoinResult r) { result = r; });
  EXPECT_EQ(result->error, Code::kInvalidSessionTimeout);

  const std::string a = new_member();
  join(a, 5, "range");
  const std::string b = new_member();
  EXPECT_EQ(join(b, 5, "roundrobin")->result->error, Code::kInconsistentGroupProtocol);
}

TEST_F(CoordinatorTest, BeforeVersion4AJoinWithoutAnIdJoinsAtOnce) {
  auto joined = join("", 3);
  clock.advance(100ms);
  groups.tick();
  ASSERT_TRUE(joined->result);
  EXPECT_EQ(joined->result->error, Code::kNone);
  EXPECT_FALSE(joined->result->member_id.empty());
}

TEST_F(CoordinatorTest, CloseAnswersEveryoneWaiting) {
  const std::string a = new_member();
  auto waiting = join(a);
  groups.close();
  ASSERT_TRUE(waiting->result);
  EXPECT_EQ(waiting->result->error, Code::kCoordinatorNotAvailable);
}

}  // namespace
}  // namespace keel::kafka

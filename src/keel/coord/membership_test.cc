#include "keel/coord/membership.h"

#include <gtest/gtest.h>

#include "keel/coord/in_process_coordinator.h"

namespace keel::coord {
namespace {

TEST(Membership, NodesJoinListAndLeave) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Membership members(store, clock, "keel/members", 3s);
  std::vector<std::size_t> sizes;
  auto watch = members.watch([&](const std::vector<Member>& now) { sizes.push_back(now.size()); });
  ASSERT_TRUE(watch.ok());
  auto a = members.join({"node-a", "10.0.0.1:7400", R"({"zone":"eu-1"})"});
  auto b = members.join({"node-b", "10.0.0.2:7400", ""});
  ASSERT_TRUE(a.ok() && b.ok());
  auto listed = members.list();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 2u);
  EXPECT_EQ((*listed)[0], (Member{"node-a", "10.0.0.1:7400", R"({"zone":"eu-1"})"}));
  ASSERT_TRUE((*b)->leave().ok());
  EXPECT_EQ(members.list()->size(), 1u);
  EXPECT_EQ(sizes, (std::vector<std::size_t>{0, 1, 2, 1}));
}

TEST(Membership, SameIdTwiceIsRefusedWhileTheFirstLives) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Membership members(store, clock, "keel/members", 3s);
  auto first = members.join({"node-a", "10.0.0.1:7400", ""});
  ASSERT_TRUE(first.ok());
  auto again = members.join({"node-a", "10.0.0.9:7400", ""});
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("already registered"), std::string::npos);
  first->reset();  // leaves
  EXPECT_TRUE(members.join({"node-a", "10.0.0.9:7400", ""}).ok());
}

TEST(Membership, RegistrationsStayWhileRenewedAndDropOutWhenTheLeaseGoes) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Membership members(store, clock, "keel/members", 3s);
  auto a = members.join({"node-a", "10.0.0.1:7400", ""});
  ASSERT_TRUE(a.ok());
  clock.advance(30s);
  EXPECT_EQ(members.list()->size(), 1u) << "kept alive every second";
  auto entry = store.get("keel/members/node-a");
  ASSERT_TRUE(entry.ok() && entry->has_value());
  ASSERT_TRUE(store.revoke((*entry)->lease).ok());  // the backend drops the lease
  clock.advance(1s);                                // the next renewal finds it gone
  EXPECT_TRUE((*a)->lost());
  EXPECT_TRUE(members.list()->empty());
}

TEST(Membership, BadIdsAreRefused) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Membership members(store, clock, "keel/members");
  EXPECT_TRUE(members.join({"", "x", ""}).error().is(errc::invalid_argument));
  EXPECT_TRUE(members.join({"a/b", "x", ""}).error().is(errc::invalid_argument));
}

}  // namespace
}  // namespace keel::coord

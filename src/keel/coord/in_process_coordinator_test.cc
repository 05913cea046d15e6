#include "keel/coord/in_process_coordinator.h"

#include <gtest/gtest.h>

namespace keel::coord {
namespace {

TEST(InProcessCoordinator, PutGetAndRevisions) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  auto first = store.put("a", "1");
  auto second = store.put("a", "2");
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_GT(*second, *first);
  auto kv = store.get("a");
  ASSERT_TRUE(kv.ok() && kv->has_value());
  EXPECT_EQ((*kv)->value, "2");
  EXPECT_EQ((*kv)->create_revision, *first);
  EXPECT_EQ((*kv)->mod_revision, *second);
  EXPECT_EQ((*kv)->version, 2);
  EXPECT_EQ(*store.erase("a"), 1);
  EXPECT_FALSE(store.get("a")->has_value());
}

TEST(InProcessCoordinator, TransactionsCompareCreateRevisionAndValue) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Transaction create_if_absent;
  create_if_absent.compare.push_back(
      {"k", Compare::Target::kCreateRevision, Compare::Op::kEqual, 0, ""});
  create_if_absent.success.push_back({Operation::Kind::kPut, "k", "mine", 0, false});
  create_if_absent.failure.push_back({Operation::Kind::kGet, "k", "", 0, false});
  auto first = store.transact(create_if_absent);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(first->succeeded);
  auto second = store.transact(create_if_absent);
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->succeeded);
  ASSERT_EQ(second->kvs.front().size(), 1u);
  EXPECT_EQ(second->kvs.front().front().value, "mine");

  Transaction by_value;
  by_value.compare.push_back({"k", Compare::Target::kValue, Compare::Op::kEqual, 0, "mine"});
  by_value.success.push_back({Operation::Kind::kPut, "k", "updated", 0, false});
  EXPECT_TRUE(store.transact(by_value)->succeeded);
  EXPECT_FALSE(store.transact(by_value)->succeeded);
}

TEST(InProcessCoordinator, ExpiredLeasesTakeTheirKeysWithThem) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  auto lease = store.grant(2s);
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(store.put("member/a", "10.0.0.1", *lease).ok());
  clock.advance(1500ms);
  ASSERT_TRUE(store.keep_alive(*lease).ok());
  clock.advance(1500ms);
  EXPECT_TRUE(store.get("member/a")->has_value()) << "renewed at 1.5 s: alive until 3.5 s";
  EXPECT_EQ(*store.time_to_live(*lease), 500ms);
  clock.advance(500ms);
  EXPECT_FALSE(store.get("member/a")->has_value());
  auto gone = store.keep_alive(*lease);
  ASSERT_FALSE(gone.ok());
  EXPECT_TRUE(gone.error().is(errc::lease_not_found));
  auto put = store.put("member/b", "x", *lease);
  EXPECT_TRUE(put.error().is(errc::lease_not_found));
}

TEST(InProcessCoordinator, WatchesSeeChangesInOrderAndReplayFromARevision) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  auto start = store.put("cfg/a", "1");
  ASSERT_TRUE(store.put("cfg/b", "2").ok());
  ASSERT_TRUE(store.put("other", "x").ok());
  std::vector<std::string> seen;
  auto watch = store.watch("cfg/", true, *start, [&](const WatchEvent& event) {
    seen.push_back((event.type == WatchEvent::Type::kPut ? "put " : "delete ") + event.kv.key);
  });
  ASSERT_TRUE(watch.ok());
  ASSERT_TRUE(store.put("cfg/a", "3").ok());
  ASSERT_TRUE(store.erase("cfg/", true).ok());
  EXPECT_EQ(seen,
            (std::vector<std::string>{"put cfg/b", "put cfg/a", "delete cfg/a", "delete cfg/b"}));
  (*watch)->cancel();
  ASSERT_TRUE(store.put("cfg/c", "4").ok());
  EXPECT_EQ(seen.size(), 4u) << "no events after cancel";
}

TEST(InProcessCoordinator, WatchFromACompactedRevisionResyncsThenGoesOn) {
  ManualClock clock;
  InProcessCoordinator store(clock, /*history=*/2);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(store.put("k/a", std::to_string(i)).ok());
  ASSERT_TRUE(store.put("k/b", "b").ok());
  ASSERT_TRUE(store.erase("k/b").ok());
  ASSERT_TRUE(store.put("other", "x").ok());
  std::vector<WatchEvent> seen;
  auto watch = store.watch("k/", true, 1, [&](const WatchEvent& e) { seen.push_back(e); });
  ASSERT_TRUE(watch.ok());
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].type, WatchEvent::Type::kResync);
  ASSERT_EQ(seen[0].snapshot.size(), 1u) << "the state now: k/b is gone, other is not watched";
  EXPECT_EQ(seen[0].snapshot[0].key, "k/a");
  EXPECT_EQ(seen[0].snapshot[0].value, "4");
  EXPECT_EQ(seen[0].kv.mod_revision, store.range("", true)->second);
  ASSERT_TRUE(store.put("k/c", "c").ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].type, WatchEvent::Type::kPut);
  EXPECT_EQ(seen[1].kv.key, "k/c");
}

}  // namespace
}  // namespace keel::coord

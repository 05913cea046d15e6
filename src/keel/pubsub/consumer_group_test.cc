#include "keel/pubsub/consumer_group.h"

#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>

#include "keel/pubsub/test_support.h"

namespace keel::pubsub {
namespace {

using testing::StoreFixture;

class ConsumerGroupTest : public StoreFixture {
 protected:
  std::shared_ptr<ConsumerGroup> open(GroupOptions options) {
    auto group = ConsumerGroup::open(*store_, std::move(options), clock_);
    EXPECT_TRUE(group.ok()) << group.error().to_string();
    return group.ok() ? *group : nullptr;
  }
  std::unique_ptr<Member> join(ConsumerGroup& group, const std::string& name) {
    auto member = group.join(name);
    EXPECT_TRUE(member.ok()) << member.error().to_string();
    return member.ok() ? std::move(*member) : nullptr;
  }
  static void pump(ConsumerGroup& group) { ASSERT_TRUE(group.pump().ok()); }
  static void ack_all(Member& member, const std::vector<Delivery>& deliveries) {
    for (const auto& d : deliveries) ASSERT_TRUE(member.ack(d.id).ok());
  }
};

TEST_F(ConsumerGroupTest, RoundRobinSharesEventsAndAcksMoveTheCheckpoint) {
  for (int i = 0; i < 9; ++i) append("order-" + std::to_string(i));
  auto group = open({.name = "billing", .filter = {.categories = {"order"}}});
  auto a = join(*group, "a"), b = join(*group, "b"), c = join(*group, "c");
  pump(*group);
  auto da = a->poll(100), db = b->poll(100), dc = c->poll(100);
  EXPECT_EQ(da.size(), 3u);
  EXPECT_EQ(db.size(), 3u);
  EXPECT_EQ(dc.size(), 3u);
  EXPECT_EQ(group->stats().in_flight, 9u);
  ack_all(*a, da);
  ack_all(*c, dc);
  // b holds the events at positions 1, 4 and 7: the checkpoint stops at the first of them.
  EXPECT_EQ(group->stats().checkpoint, 1u);
  ack_all(*b, db);
  auto stats = group->stats();
  // The group's own checkpoint record is in the log too: the checkpoint is the head.
  EXPECT_EQ(stats.checkpoint, store_->next_position());
  EXPECT_EQ(stats.acked, 9u);
  EXPECT_EQ(stats.in_flight, 0u);
  EXPECT_EQ(stats.lag, 0u);
}

TEST_F(ConsumerGroupTest, ASlowMemberIsNeverGivenMoreThanMaxInFlight) {
  for (int i = 0; i < 10; ++i) append("order-1");
  auto group = open({.name = "g", .max_in_flight = 3});
  auto slow = join(*group, "slow");
  pump(*group);
  auto first = slow->poll(100);
  ASSERT_EQ(first.size(), 3u);
  pump(*group);
  EXPECT_TRUE(slow->poll(100).empty());
  ASSERT_TRUE(slow->ack(first[0].id).ok());
  pump(*group);
  auto next = slow->poll(100);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].event.position, 3u);
}

TEST_F(ConsumerGroupTest, AnAckTimeoutRedeliversElsewhereAndTheLateAckIsRefused) {
  append("order-1");
  auto group = open({.name = "g", .ack_timeout = 5s, .retry_backoff = 1s});
  auto hung = join(*group, "hung");
  pump(*group);
  auto held = hung->poll(10);
  ASSERT_EQ(held.size(), 1u);
  auto healthy = join(*group, "healthy");
  clock_.advance(5s);
  pump(*group);  // expired: back after a backoff of 1 s
  EXPECT_EQ(group->stats().timed_out, 1u);
  EXPECT_TRUE(healthy->poll(10).empty());
  clock_.advance(1s);
  pump(*group);
  std::vector<Delivery> again = hung->poll(10);
  auto more = healthy->poll(10);
  again.insert(again.end(), more.begin(), more.end());
  ASSERT_EQ(again.size(), 1u);
  EXPECT_EQ(again[0].attempt, 2u);
  EXPECT_EQ(again[0].event.position, 0u);
  EXPECT_FALSE(hung->ack(held[0].id).ok());  // that delivery is gone
}

TEST_F(ConsumerGroupTest, TheAckTimeoutRunsFromWhenAMemberTakesADelivery) {
  for (int i = 0; i < 4; ++i) append("order-1");
  auto group = open({.name = "g", .max_in_flight = 4, .ack_timeout = 5s, .retry_backoff = 1s});
  auto member = join(*group, "m");
  pump(*group);
  auto first = member->poll(2);  // two taken; two wait in its inbox
  ASSERT_EQ(first.size(), 2u);
  clock_.advance(4s);
  auto second = member->poll(2);  // taken 4 s later: their 5 s start now
  ASSERT_EQ(second.size(), 2u);
  EXPECT_EQ(second[0].attempt, 1u);
  clock_.advance(1s);
  pump(*group);  // the first two expired, the second two did not
  EXPECT_EQ(group->stats().timed_out, 2u);
  EXPECT_FALSE(member->ack(first[0].id).ok());
  ack_all(*member, second);
  clock_.advance(1s);
  pump(*group);
  auto again = member->poll(10);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].attempt, 2u);
  EXPECT_EQ(again[0].event.position, first[0].event.position);
}

TEST_F(ConsumerGroupTest, ADeliveryThatTimesOutUntakenIsNotHandedOutToo) {
  for (int i = 0; i < 3; ++i) append("order-1");
  auto group = open({.name = "g", .ack_timeout = 5s, .retry_backoff = 1s});
  auto member = join(*group, "m");  // it never polls in time
  pump(*group);
  clock_.advance(5s);
  pump(*group);  // timed out in its inbox
  EXPECT_EQ(group->stats().timed_out, 3u);
  clock_.advance(1s);
  pump(*group);  // back, to the only member
  auto deliveries = member->poll(10);
  ASSERT_EQ(deliveries.size(), 3u);  // each once: the stale ones are gone from the inbox
  for (const auto& delivery : deliveries) EXPECT_EQ(delivery.attempt, 2u);
  ack_all(*member, deliveries);
  EXPECT_EQ(group->stats().in_flight, 0u);
}

TEST_F(ConsumerGroupTest, NackRetryWaitsForAGrowingBackoff) {
  append("order-1");
  auto group = open({.name = "g", .max_deliveries = 10, .retry_backoff = 100ms});
  auto member = join(*group, "m");
  Duration expected_backoff = 100ms;
  for (std::uint32_t attempt = 1; attempt <= 3; ++attempt) {
    pump(*group);
    auto got = member->poll(10);
    ASSERT_EQ(got.size(), 1u) << "attempt " << attempt;
    EXPECT_EQ(got[0].attempt, attempt);
    ASSERT_TRUE(member->nack(got[0].id, NackAction::kRetry, "database down").ok());
    clock_.advance(expected_backoff - 1ms);
    pump(*group);
    EXPECT_TRUE(member->poll(10).empty()) << "redelivered before its backoff, attempt " << attempt;
    clock_.advance(1ms);
    expected_backoff *= 2;
  }
}

TEST_F(ConsumerGroupTest, APoisonEventIsParkedAfterMaxDeliveriesAndCanBeReplayed) {
  append("order-1", "Good");
  append("order-2", "Poison");
  append("order-3", "Good");
  auto group = open({.name = "g", .max_deliveries = 3, .retry_backoff = 1ms});
  auto member = join(*group, "m");
  for (int round = 0; round < 10; ++round) {
    pump(*group);
    for (const auto& d : member->poll(10)) {
      if (d.event.type == "Poison") {
        ASSERT_TRUE(member->nack(d.id, NackAction::kRetry, "cannot parse").ok());
      } else {
        ASSERT_TRUE(member->ack(d.id).ok());
      }
    }
    clock_.advance(1s);
  }
  auto stats = group->stats();
  EXPECT_EQ(stats.parked, 1u);
  EXPECT_GE(stats.checkpoint, 3u);  // parked counts as done
  auto parked = store_->read_stream(group->parked_stream(), 0, 10);
  ASSERT_TRUE(parked.ok());
  ASSERT_EQ(parked->size(), 1u);
  auto record = nlohmann::json::parse(parked->front().data);
  EXPECT_EQ(record["stream"], "order-2");
  EXPECT_EQ(record["deliveries"], 3);
  EXPECT_NE(record["reason"].get<std::string>().find("cannot parse"), std::string::npos);

  // The fix is deployed: replay the parked event.
  auto replayed = group->replay_parked();
  ASSERT_TRUE(replayed.ok());
  EXPECT_EQ(*replayed, 1u);
  pump(*group);
  auto again = member->poll(10);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].replayed);
  EXPECT_EQ(again[0].event.stream, "order-2");
  ASSERT_TRUE(member->ack(again[0].id).ok());
  // Replaying again queues nothing: that parked record was replayed.
  EXPECT_EQ(*group->replay_parked(), 0u);
}

TEST_F(ConsumerGroupTest, PinnedReplayWaitsBehindItsStreamsEventsInFlight) {
  append("acct-1", "Poison");
  auto group = open({.name = "g", .strategy = Strategy::kPinned, .max_deliveries = 1});
  auto member = join(*group, "m");
  pump(*group);
  auto first = member->poll(10);
  ASSERT_EQ(first.size(), 1u);
  ASSERT_TRUE(member->nack(first[0].id, NackAction::kPark, "bad").ok());
  pump(*group);  // parked
  append("acct-1");
  append("acct-1");
  pump(*group);
  auto held = member->poll(10);
  ASSERT_EQ(held.size(), 1u);  // one event of acct-1 at a time
  EXPECT_EQ(held[0].event.version, 1u);
  ASSERT_EQ(*group->replay_parked(), 1u);
  pump(*group);
  EXPECT_TRUE(member->poll(10).empty()) << "the replay went out while version 1 was in flight";
  ASSERT_TRUE(member->ack(held[0].id).ok());
  pump(*group);
  auto next = member->poll(10);
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].event.version, 2u);  // the stream's own order first, then the replay
  ASSERT_TRUE(member->ack(next[0].id).ok());
  pump(*group);
  auto replayed = member->poll(10);
  ASSERT_EQ(replayed.size(), 1u);
  EXPECT_TRUE(replayed[0].replayed);
  EXPECT_EQ(replayed[0].event.version, 0u);
}

TEST_F(ConsumerGroupTest, AMemberThatLeavesMidBatchHandsItsEventsToTheOthers) {
  for (int i = 0; i < 60; ++i) append("order-" + std::to_string(i));
  auto group = open({.name = "g", .max_in_flight = 10});
  auto a = join(*group, "a"), b = join(*group, "b"), c = join(*group, "c");
  std::map<std::uint64_t, int> acked;  // position -> times
  pump(*group);
  auto doomed = b->poll(100);
  ASSERT_EQ(doomed.size(), 10u);
  for (int i = 0; i < 4; ++i) {  // b handles 4 of its 10, then dies
    ASSERT_TRUE(b->ack(doomed[i].id).ok());
    ++acked[doomed[i].event.position];
  }
  b.reset();
  for (int round = 0; round < 20; ++round) {
    pump(*group);
    for (Member* member : {a.get(), c.get()}) {
      for (const auto& d : member->poll(100)) {
        ASSERT_TRUE(member->ack(d.id).ok());
        ++acked[d.event.position];
      }
    }
  }
  ASSERT_EQ(acked.size(), 60u);
  for (const auto& [position, times] : acked) EXPECT_EQ(times, 1) << "position " << position;
  EXPECT_EQ(group->stats().lag, 0u);
  EXPECT_EQ(group->stats().checkpoint, store_->next_position());
}

TEST_F(ConsumerGroupTest, PinnedKeepsEachStreamInOrderAcrossRebalances) {
  constexpr int kStreams = 12, kPerStream = 20;
  for (int v = 0; v < kPerStream; ++v)
    for (int s = 0; s < kStreams; ++s) append("acct-" + std::to_string(s));
  auto group = open({.name = "g", .strategy = Strategy::kPinned, .max_in_flight = 4});
  std::vector<std::unique_ptr<Member>> members;
  for (const char* name : {"a", "b", "c"}) members.push_back(join(*group, name));
  std::map<std::string, std::vector<std::uint64_t>> acked;  // stream -> versions in ack order
  std::map<std::string, std::set<std::string>> owners;      // stream -> members that got it
  Random random(5);
  for (int round = 0; round < 400 && group->stats().checkpoint < kStreams * kPerStream; ++round) {
    if (round == 30) members.erase(members.begin() + 1);    // b dies holding events
    if (round == 60) members.push_back(join(*group, "d"));  // d joins and takes some streams
    pump(*group);
    for (auto& member : members) {
      for (const auto& d : member->poll(100)) {
        owners[d.event.stream].insert(member->name());
        if (random.uniform(4) == 0) {
          ASSERT_TRUE(member->nack(d.id, NackAction::kRetry, "flaky").ok());
        } else {
          ASSERT_TRUE(member->ack(d.id).ok());
          acked[d.event.stream].push_back(d.event.version);
        }
      }
    }
    clock_.advance(1s);
  }
  ASSERT_EQ(acked.size(), static_cast<std::size_t>(kStreams));
  for (const auto& [stream, versions] : acked) {
    ASSERT_EQ(versions.size(), static_cast<std::size_t>(kPerStream)) << stream;
    for (int v = 0; v < kPerStream; ++v)
      EXPECT_EQ(versions[v], static_cast<std::uint64_t>(v)) << stream;
  }
  // Streams were spread, and moved when members came and went.
  std::set<std::string> used;
  for (const auto& [stream, who] : owners) used.insert(who.begin(), who.end());
  EXPECT_GE(used.size(), 3u);
}

TEST_F(ConsumerGroupTest, DispatchToSingleFillsTheFirstMemberBeforeTheNext) {
  for (int i = 0; i < 6; ++i) append("order-1");
  auto group = open({.name = "g", .strategy = Strategy::kDispatchToSingle, .max_in_flight = 4});
  auto first = join(*group, "first"), second = join(*group, "second");
  pump(*group);
  EXPECT_EQ(first->poll(100).size(), 4u);
  EXPECT_EQ(second->poll(100).size(), 2u);
}

TEST_F(ConsumerGroupTest, ProgressSurvivesARestart) {
  for (int i = 0; i < 10; ++i) append("order-" + std::to_string(i));
  {
    auto group = open({.name = "g", .filter = {.categories = {"order"}}});
    auto member = join(*group, "m");
    pump(*group);
    auto got = member->poll(100);
    ASSERT_EQ(got.size(), 10u);
    for (int i = 0; i < 6; ++i) ASSERT_TRUE(member->ack(got[i].id).ok());
    ASSERT_TRUE(group->checkpoint().ok());
  }
  reopen();
  append("order-x");
  auto group = open({.name = "g", .filter = {.categories = {"order"}}});
  auto member = join(*group, "m");
  pump(*group);
  std::vector<std::uint64_t> positions;
  for (const auto& d : member->poll(100)) positions.push_back(d.event.position);
  // The four never acked come again, and the new one; none of the six acked.
  EXPECT_EQ(positions, (std::vector<std::uint64_t>{6, 7, 8, 9, 12}));
}

TEST_F(ConsumerGroupTest, ReopeningWithAnotherFilterIsRefused) {
  ASSERT_NE(open({.name = "g", .filter = {.categories = {"order"}}}), nullptr);
  auto other =
      ConsumerGroup::open(*store_, {.name = "g", .filter = {.categories = {"cart"}}}, clock_);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.error().message().find("exists with filter 'category=order'"), std::string::npos);
  auto bad = ConsumerGroup::open(*store_, {.name = "no spaces"}, clock_);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("no spaces"), std::string::npos);
  auto no_timeout = ConsumerGroup::open(*store_, {.name = "t", .ack_timeout = 0s}, clock_);
  ASSERT_FALSE(no_timeout.ok());
  EXPECT_NE(no_timeout.error().message().find("ack_timeout"), std::string::npos);
}

TEST_F(ConsumerGroupTest, ARemovedGroupStartsAfreshAndMetricsAreExported) {
  for (int i = 0; i < 3; ++i) append("order-1");
  {
    auto group = open({.name = "g", .filter = {.categories = {"order"}}});
    auto member = join(*group, "m");
    pump(*group);
    ack_all(*member, member->poll(10));
    metrics::Registry registry;
    auto exported = group->export_metrics(registry);
    const std::string text = registry.render_prometheus();
    EXPECT_NE(text.find("keel_group_acked_total{group=\"g\"} 3"), std::string::npos) << text;
    EXPECT_NE(text.find("keel_group_in_flight{group=\"g\"} 0"), std::string::npos) << text;
    ASSERT_TRUE(group->checkpoint().ok());
  }
  EXPECT_FALSE(ConsumerGroup::remove(*store_, "nope").ok());
  ASSERT_TRUE(ConsumerGroup::remove(*store_, "g").ok());
  auto group =
      open({.name = "g", .filter = {.categories = {"cart"}}});  // another filter is fine now
  ASSERT_NE(group, nullptr);
  append("cart-1");
  auto member = join(*group, "m");
  pump(*group);
  auto got = member->poll(10);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].event.stream, "cart-1");
}

TEST_F(ConsumerGroupTest, IdleGroupsWriteNoCheckpointForCheckpointRecords) {
  append("order-1");
  auto busy = open({.name = "busy", .filter = {.categories = {"order"}}});
  auto idle = open({.name = "idle", .filter = {.categories = {"cart"}}});  // matches nothing
  auto member = join(*busy, "m");
  pump(*busy);
  ack_all(*member, member->poll(10));
  auto records = [&](ConsumerGroup& group) {
    return *store_->stream_version(group.checkpoint_stream()) + 1;
  };
  // Past checkpoint_interval (1 s) again and again: the ack is recorded once, and then the
  // groups' own records, which each group reads past, are no reason for another.
  for (int round = 0; round < 10; ++round) {
    clock_.advance(2s);
    pump(*busy);
    pump(*idle);
  }
  EXPECT_EQ(records(*busy), 2u);  // opened, the ack
  EXPECT_EQ(records(*idle), 1u);  // opened
  EXPECT_EQ(busy->stats().lag, 0u);

  // Many events the filter leaves out are worth a record (a restart does not read them again).
  for (int batch = 0; batch < 10; ++batch) {
    std::vector<eventlog::EventData> events;
    for (int i = 0; i < 1000; ++i)
      events.push_back(eventlog::testing::make_event(random_, "X", "{}"));
    ASSERT_TRUE(store_->append("other-1", eventlog::ExpectedVersion::any(), events).ok());
  }
  clock_.advance(2s);
  pump(*idle);
  EXPECT_EQ(records(*idle), 2u);
}

TEST_F(ConsumerGroupTest, TheBackgroundThreadDeliversToWaitingMembers) {
  auto group = open({.name = "g"});
  group->start();
  auto member = join(*group, "m");
  append("order-1");
  auto got = member->wait(10, 30s);  // the manual clock never gets there: the event comes first
  ASSERT_EQ(got.size(), 1u);
  ASSERT_TRUE(member->ack(got[0].id).ok());
  group->stop();
  EXPECT_EQ(group->stats().checkpoint, 2u);  // past the event and the group's first record
}

}  // namespace
}  // namespace keel::pubsub

#include "keel/coord/election.h"

#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "keel/coord/in_process_coordinator.h"

namespace keel::coord {
namespace {

// A coordinator whose keep-alives and revokes can be made to fail, standing in for a leader
// that is paused or cut off from the backend while its lease runs out.
class Unreliable final : public Coordinator {
 public:
  explicit Unreliable(Coordinator& inner) : inner_(inner) {}
  std::atomic<bool> renewals_fail{false};

  Result<LeaseId> grant(Duration ttl) override { return inner_.grant(ttl); }
  Result<Duration> keep_alive(LeaseId lease) override {
    if (renewals_fail) return Error(errc::unavailable, "backend unreachable");
    return inner_.keep_alive(lease);
  }
  Status revoke(LeaseId lease) override {
    if (renewals_fail) return Error(errc::unavailable, "backend unreachable");
    return inner_.revoke(lease);
  }
  Result<Duration> time_to_live(LeaseId lease) override { return inner_.time_to_live(lease); }
  Result<TransactionResult> transact(const Transaction& t) override {
    sent.push_back(t.timeout);
    return inner_.transact(t);
  }
  // The timeout of every transaction that reached the backend, in order.
  std::vector<std::optional<Duration>> sent;
  Result<std::pair<std::vector<KeyValue>, Revision>> range(std::string_view key,
                                                           bool prefix) override {
    return inner_.range(key, prefix);
  }
  Result<std::unique_ptr<WatchHandle>> watch(
      std::string_view key, bool prefix, Revision after,
      std::function<void(const WatchEvent&)> on_event) override {
    return inner_.watch(key, prefix, after, std::move(on_event));
  }

 private:
  Coordinator& inner_;
};

// Runs a campaign on its own thread and waits until it is queued behind the current leader.
std::future<Result<std::shared_ptr<Leadership>>> campaign_in_background(
    Elector& elector, Coordinator& store, ManualClock& clock, std::string value,
    CancelToken* cancel = nullptr) {
  // Queued behind the leader means: its key exists and its three timers (lease expiry, local
  // deadline, renewal) are set, so advancing the clock now cannot outrun it.
  auto keys = store.range(elector.prefix(), true)->first.size();
  auto timers = clock.pending_timers();
  auto future = std::async(std::launch::async,
                           [&elector, value, cancel] { return elector.campaign(value, cancel); });
  while (store.range(elector.prefix(), true)->first.size() == keys ||
         clock.pending_timers() < timers + 3) {
    std::this_thread::yield();
  }
  return future;
}

TEST(Election, FirstCandidateLeadsAndTheNextTakesOverOnResign) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Elector elector(store, clock, "controller");
  auto first = elector.campaign("node-a");
  ASSERT_TRUE(first.ok()) << first.error().to_string();
  EXPECT_EQ((*elector.leader())->value, "node-a");

  auto second = campaign_in_background(elector, store, clock, "node-b");
  EXPECT_EQ(second.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  ASSERT_TRUE((*first)->resign().ok());
  EXPECT_TRUE((*first)->lost());
  auto next = second.get();
  ASSERT_TRUE(next.ok());
  EXPECT_GT((*next)->token(), (*first)->token()) << "fencing tokens only grow";
  EXPECT_EQ((*elector.leader())->value, "node-b");
}

TEST(Election, LeaderThatCannotRenewDeposesItselfBeforeTheNextIsElected) {
  ManualClock clock;
  InProcessCoordinator inner(clock);
  Unreliable store(inner);
  Elector elector(store, clock, "controller", {.ttl = 3s});
  auto old_leader = elector.campaign("node-a");
  ASSERT_TRUE(old_leader.ok());
  Elector other(inner, clock, "controller", {.ttl = 3s});
  auto successor = campaign_in_background(other, inner, clock, "node-b");

  clock.advance(1s);  // one renewal works
  store.renewals_fail = true;
  clock.advance(1s);  // the renewal at 2 s fails; the local deadline is 1 s + 2 s = 3 s
  EXPECT_FALSE((*old_leader)->lost());
  clock.advance(1s);  // 3 s: past the local deadline, still before the lease expires (4 s)
  EXPECT_TRUE((*old_leader)->lost()) << "deposed by its own deadline";
  EXPECT_EQ(successor.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
      << "the lease is still alive at the backend: nobody else leads yet";
  clock.advance(1s);  // 4 s: the lease expires, the key goes, the successor is elected
  auto next = successor.get();
  ASSERT_TRUE(next.ok()) << next.error().to_string();

  // Every write the deposed leader still tries with its old token is refused.
  auto stale =
      fenced_transact(inner, **old_leader, {{Operation::Kind::kPut, "config", "old", 0, false}});
  ASSERT_FALSE(stale.ok());
  EXPECT_TRUE(stale.error().is(errc::not_leader));
  auto fresh = fenced_transact(inner, **next, {{Operation::Kind::kPut, "config", "new", 0, false}});
  EXPECT_TRUE(fresh.ok());
  EXPECT_EQ((*inner.get("config"))->value, "new");
}

TEST(Election, LeaderPastItsDeadlineStopsRenewingAndFreesTheKey) {
  ManualClock clock;
  InProcessCoordinator inner(clock);
  Unreliable store(inner);
  Elector elector(store, clock, "controller", {.ttl = 3s});
  auto old_leader = elector.campaign("node-a");
  ASSERT_TRUE(old_leader.ok());
  Elector other(inner, clock, "controller", {.ttl = 3s});
  auto successor = campaign_in_background(other, inner, clock, "node-b");
  store.renewals_fail = true;
  clock.advance(1s);            // renewal fails
  store.renewals_fail = false;  // the backend is back, but too late: the deadline (2 s) passes
  clock.advance(1s);
  EXPECT_TRUE((*old_leader)->lost());
  auto next = successor.get();  // freed by the old leader's revoke, before its lease would end
  ASSERT_TRUE(next.ok()) << next.error().to_string();
  clock.advance(10s);
  EXPECT_FALSE((*next)->lost()) << "the successor keeps renewing";
  EXPECT_EQ((*other.leader())->value, "node-b");
}

TEST(Election, LosingTheKeyAtTheBackendIsNoticedAtOnce) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Elector elector(store, clock, "controller");
  auto leadership = elector.campaign("node-a");
  ASSERT_TRUE(leadership.ok());
  bool told = false;
  (*leadership)->on_lost([&] { told = true; });
  ASSERT_TRUE(store.revoke((*leadership)->lease()).ok());  // e.g. an operator, or etcd expiry
  EXPECT_TRUE((*leadership)->lost());
  EXPECT_TRUE(told);
}

TEST(Election, CampaignCanBeCancelledAndWithdrawsItsCandidacy) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Elector elector(store, clock, "controller");
  auto leader = elector.campaign("node-a");
  ASSERT_TRUE(leader.ok());
  CancelToken cancel;
  auto waiting = campaign_in_background(elector, store, clock, "node-b", &cancel);
  cancel.cancel();
  auto result = waiting.get();
  ASSERT_FALSE(result.ok());
  EXPECT_TRUE(result.error().is(errc::cancelled));
  EXPECT_EQ(store.range(elector.prefix(), true)->first.size(), 1u) << "node-b's key is gone";
}

TEST(Election, ObserversSeeEveryChangeOfLeader) {
  ManualClock clock;
  InProcessCoordinator store(clock);
  Elector elector(store, clock, "controller");
  std::vector<std::string> seen;
  auto observer = elector.observe([&](const std::optional<KeyValue>& leader) {
    seen.push_back(leader ? leader->value : "(none)");
  });
  ASSERT_TRUE(observer.ok());
  auto a = elector.campaign("node-a");
  ASSERT_TRUE((*a)->resign().ok());
  auto b = elector.campaign("node-b");
  EXPECT_EQ(seen, (std::vector<std::string>{"(none)", "node-a", "(none)", "node-b"}));
}

TEST(Election, AFencedWriteWaitsNoLongerThanTheLocalDeadlineAndIsNotSentAfterIt) {
  ManualClock clock;
  InProcessCoordinator inner(clock);
  Unreliable store(inner);
  Elector elector(store, clock, "controller", {.ttl = 3s});
  auto leader = elector.campaign("node-a");
  ASSERT_TRUE(leader.ok());
  store.renewals_fail = true;  // the local deadline stays 2 s after the grant
  clock.advance(1500ms);
  EXPECT_EQ((*leader)->time_left(), 500ms);
  auto written =
      fenced_transact(store, **leader, {{Operation::Kind::kPut, "config", "in time", 0, false}});
  ASSERT_TRUE(written.ok()) << written.error().to_string();
  ASSERT_FALSE(store.sent.empty());
  EXPECT_EQ(store.sent.back(), std::optional<Duration>(500ms))
      << "the backend waits for the answer only until the local deadline";

  clock.advance(500ms);  // 2 s: the deadline; the lease lives on at the backend until 3 s
  EXPECT_EQ((*leader)->time_left(), Duration::zero());
  const std::size_t sent_before = store.sent.size();
  auto late =
      fenced_transact(store, **leader, {{Operation::Kind::kPut, "config", "too late", 0, false}});
  ASSERT_FALSE(late.ok());
  EXPECT_TRUE(late.error().is(errc::not_leader)) << late.error().to_string();
  EXPECT_EQ(store.sent.size(), sent_before) << "not sent at all";
  EXPECT_EQ((*inner.get("config"))->value, "in time")
      << "the backend would still have taken it: its lease has not expired";
}

TEST(Election, ANameIsOneToTwoHundredFiftyFiveBytesOfSegmentsWithoutControlCharacters) {
  for (std::string_view good :
       {"jobs", "keel/controller", "a/b/c", "with space", "é/ü", "x.y-z_1"}) {
    EXPECT_TRUE(validate_election_name(good).ok()) << good;
  }
  EXPECT_TRUE(validate_election_name(std::string(255, 'n')).ok());
  struct Bad {
    std::string name;
    std::string why;
  };
  for (const Bad& bad :
       {Bad{"", "empty"}, Bad{"/jobs", "starts with a slash"}, Bad{"jobs/", "ends with a slash"},
        Bad{"/", "starts with a slash"}, Bad{"a//b", "\"//\""},
        Bad{"tab\there", "control character"}, Bad{std::string("nul\0x", 5), "control character"},
        Bad{"del\x7f", "control character"}, Bad{std::string(256, 'n'), "256 bytes long"}}) {
    auto valid = validate_election_name(bad.name);
    ASSERT_FALSE(valid.ok()) << bad.name;
    EXPECT_TRUE(valid.error().is(errc::invalid_argument));
    EXPECT_NE(valid.error().message().find(bad.why), std::string::npos) << valid.error().message();
  }
  EXPECT_NE(validate_election_name("a//b").error().message().find("election name \"a//b\""),
            std::string::npos)
      << "names the bad name";
  EXPECT_NE(validate_election_name("tab\there").error().message().find("\"tab\\x09here\""),
            std::string::npos)
      << "control characters escaped";
}

TEST(Election, AnElectorWithABadNameRefusesEverythingAndTouchesNothing) {
  ManualClock clock;
  InProcessCoordinator inner(clock);
  Unreliable store(inner);
  ASSERT_TRUE(inner.put("/unrelated", "not a leader").ok());  // what prefix "/" would find
  Elector elector(store, clock, "");
  auto campaign = elector.campaign("node-a");
  ASSERT_FALSE(campaign.ok());
  EXPECT_TRUE(campaign.error().is(errc::invalid_argument)) << campaign.error().to_string();
  EXPECT_TRUE(store.sent.empty()) << "no key created";
  auto leader = elector.leader();
  ASSERT_FALSE(leader.ok()) << "not the unrelated key";
  EXPECT_TRUE(leader.error().is(errc::invalid_argument));
  auto observer = elector.observe([](const std::optional<KeyValue>&) {});
  ASSERT_FALSE(observer.ok());
  EXPECT_TRUE(observer.error().is(errc::invalid_argument));
  EXPECT_EQ(inner.range("", true)->first.size(), 1u);
}

TEST(FencingGuard, RefusesTokensLowerThanTheHighestSeen) {
  FencingGuard guard;
  EXPECT_TRUE(guard.admit(5));
  EXPECT_TRUE(guard.admit(5));
  EXPECT_TRUE(guard.admit(9));
  EXPECT_FALSE(guard.admit(5)) << "the deposed leader's token";
  EXPECT_EQ(guard.highest(), 9);
}

}  // namespace
}  // namespace keel::coord

// The etcd backend against a real etcd (Debian's etcd-server, started by LocalEtcd on free
// loopback ports): the Coordinator contract, the gateway's encodings (base64 bytes, 64-bit ids
// as strings, omitted zero fields), watches across compaction and restarts, endpoint failover,
// clear errors for wrong addresses, and the election and membership recipes on top.
#include "keel/coord/etcd_coordinator.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "keel/coord/election.h"
#include "keel/coord/membership.h"
#include "keel/http/client.h"
#include "keel/testing/local_etcd.h"

namespace keel::coord {
namespace {

using keel::testing::LocalEtcd;

// Polls `done` every 10 ms until it holds or `timeout` passes (real time: etcd runs in it).
template <typename Predicate>
bool eventually(Predicate done, Duration timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class EtcdCoordinatorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto started = LocalEtcd::start();
    ASSERT_TRUE(started) << started.error().to_string();
    etcd_ = started->release();
  }
  static void TearDownTestSuite() {
    delete etcd_;
    etcd_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(etcd_, nullptr);
    auto connected = EtcdCoordinator::connect({.endpoints = {etcd_->endpoint()}});
    ASSERT_TRUE(connected) << connected.error().to_string();
    etcd = std::move(*connected);
    // Each test works under its own prefix.
    prefix =
        std::string("t/") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
  }

  static LocalEtcd* etcd_;
  std::unique_ptr<EtcdCoordinator> etcd;
  std::string prefix;
  SteadyClock clock;
};
LocalEtcd* EtcdCoordinatorTest::etcd_ = nullptr;

TEST_F(EtcdCoordinatorTest, ReportsTheServerVersion) {
  EXPECT_FALSE(etcd->server_version().empty());
  EXPECT_EQ(etcd->endpoint(), etcd_->endpoint());
}

TEST_F(EtcdCoordinatorTest, AnUnreachableAddressIsAClearErrorNotAHang) {
  const std::string dead = "http://127.0.0.1:1";
  auto connected = EtcdCoordinator::connect({.endpoints = {dead}, .connect_timeout = 500ms});
  ASSERT_FALSE(connected);
  EXPECT_TRUE(connected.error().is(errc::unavailable));
  EXPECT_NE(connected.error().message().find(dead), std::string::npos)
      << connected.error().message();
  EXPECT_NE(connected.error().message().find("refused"), std::string::npos)
      << connected.error().message();
}

TEST_F(EtcdCoordinatorTest, AnAddressThatIsNotEtcdIsNamedAsSuch) {
  // etcd's peer port speaks HTTP, but not the v3 gateway.
  auto connected = EtcdCoordinator::connect({.endpoints = {etcd_->peer_endpoint()}});
  ASSERT_FALSE(connected);
  EXPECT_NE(connected.error().message().find("not an etcd v3 JSON gateway"), std::string::npos)
      << connected.error().message();
  auto malformed = EtcdCoordinator::connect({.endpoints = {"https://127.0.0.1:2379"}});
  ASSERT_FALSE(malformed);
  EXPECT_TRUE(malformed.error().is(errc::invalid_argument)) << malformed.error().to_string();
}

TEST_F(EtcdCoordinatorTest, FailsOverToAnEndpointThatAnswers) {
  auto connected = EtcdCoordinator::connect(
      {.endpoints = {"http://127.0.0.1:1", etcd_->endpoint()}, .connect_timeout = 500ms});
  ASSERT_TRUE(connected) << connected.error().to_string();
  EXPECT_EQ((*connected)->endpoint(), etcd_->endpoint());
  ASSERT_TRUE((*connected)->put(prefix + "k", "v"));
  EXPECT_EQ((*connected)->get(prefix + "k")->value().value, "v");
}

TEST_F(EtcdCoordinatorTest, KeysAndValuesAreBytes) {
  const std::string key = prefix + std::string("\x00\xff/\xc3\xa9", 5);
  const std::string value = std::string("\x00\x01\x02 binary \xff", 13);
  auto revision = etcd->put(key, value);
  ASSERT_TRUE(revision) << revision.error().to_string();
  auto got = etcd->get(key);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->key, key);
  EXPECT_EQ((*got)->value, value);
  EXPECT_EQ((*got)->create_revision, *revision);
  EXPECT_EQ((*got)->version, 1);
  EXPECT_FALSE(etcd->get(prefix + "absent")->has_value());
}

TEST_F(EtcdCoordinatorTest, RangeByPrefixInKeyOrder) {
  for (const char* name : {"b", "a", "c"}) ASSERT_TRUE(etcd->put(prefix + "r/" + name, name));
  ASSERT_TRUE(etcd->put(prefix + "s", "outside"));
  auto listing = etcd->range(prefix + "r/", true);
  ASSERT_TRUE(listing) << listing.error().to_string();
  ASSERT_EQ(listing->first.size(), 3u);
  EXPECT_EQ(listing->first[0].value, "a");
  EXPECT_EQ(listing->first[2].value, "c");
  EXPECT_GE(listing->second, listing->first[2].mod_revision);
  EXPECT_EQ(*etcd->erase(prefix + "r/", true), 3);
  EXPECT_TRUE(etcd->range(prefix + "r/", true)->first.empty());
}

TEST_F(EtcdCoordinatorTest, TransactionsCompareRevisionsAndValues) {
  const std::string key = prefix + "cas";
  Transaction create;
  create.compare.push_back({key, Compare::Target::kCreateRevision, Compare::Op::kEqual, 0, ""});
  create.success.push_back({Operation::Kind::kPut, key, "one", 0, false});
  create.failure.push_back({Operation::Kind::kGet, key, "", 0, false});
  auto first = etcd->transact(create);
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_TRUE(first->succeeded);
  auto second = etcd->transact(create);
  ASSERT_TRUE(second);
  EXPECT_FALSE(second->succeeded) << "a false `succeeded` is omitted by the gateway";
  ASSERT_EQ(second->kvs.size(), 1u);
  ASSERT_EQ(second->kvs[0].size(), 1u);
  EXPECT_EQ(second->kvs[0][0].value, "one");
  EXPECT_EQ(second->kvs[0][0].create_revision, first->revision);

  Transaction swap;
  swap.compare.push_back({key, Compare::Target::kValue, Compare::Op::kEqual, 0, "one"});
  swap.compare.push_back(
      {key, Compare::Target::kModRevision, Compare::Op::kEqual, first->revision, ""});
  swap.success.push_back({Operation::Kind::kDelete, key, "", 0, false});
  auto swapped = etcd->transact(swap);
  ASSERT_TRUE(swapped);
  EXPECT_TRUE(swapped->succeeded);
  ASSERT_EQ(swapped->kvs.size(), 1u);
  ASSERT_EQ(swapped->kvs[0].size(), 1u) << "a delete reports what it deleted";
  EXPECT_EQ(swapped->kvs[0][0].value, "one");
  EXPECT_GT(swapped->revision, first->revision);

  Transaction greater;
  greater.compare.push_back({key, Compare::Target::kVersion, Compare::Op::kGreater, 0, ""});
  auto absent = etcd->transact(greater);
  ASSERT_TRUE(absent);
  EXPECT_FALSE(absent->succeeded);
}

TEST_F(EtcdCoordinatorTest, LeasesRenewAndRevokeAndTheirIdsStayExact) {
  auto lease = etcd->grant(5s);
  ASSERT_TRUE(lease) << lease.error().to_string();
  EXPECT_GT(*lease, std::int64_t{1} << 53) << "etcd's ids exceed a double's 53 bits";
  auto ttl = etcd->time_to_live(*lease);
  ASSERT_TRUE(ttl) << ttl.error().to_string();
  EXPECT_LE(*ttl, 5s);
  EXPECT_GE(*ttl, 3s);
  auto renewed = etcd->keep_alive(*lease);
  ASSERT_TRUE(renewed) << renewed.error().to_string();
  EXPECT_EQ(*renewed, 5s);
  ASSERT_TRUE(etcd->put(prefix + "held", "x", *lease));
  EXPECT_EQ(etcd->get(prefix + "held")->value().lease, *lease);
  ASSERT_TRUE(etcd->revoke(*lease));
  EXPECT_FALSE(etcd->get(prefix + "held")->has_value()) << "revoking deletes the lease's keys";
  auto gone = etcd->keep_alive(*lease);
  ASSERT_FALSE(gone);
  EXPECT_TRUE(gone.error().is(errc::lease_not_found)) << gone.error().to_string();
  EXPECT_TRUE(etcd->time_to_live(*lease).error().is(errc::lease_not_found));
  EXPECT_TRUE(etcd->revoke(*lease).error().is(errc::lease_not_found));
  auto put = etcd->put(prefix + "orphan", "x", *lease);
  ASSERT_FALSE(put);
  EXPECT_TRUE(put.error().is(errc::lease_not_found)) << put.error().to_string();
}

TEST_F(EtcdCoordinatorTest, AnExpiredLeaseTakesItsKeysWithIt) {
  auto lease = etcd->grant(1s);  // etcd raises it to its minimum (2 s with default ticks)
  ASSERT_TRUE(lease);
  ASSERT_TRUE(etcd->put(prefix + "ephemeral", "x", *lease));
  EXPECT_TRUE(eventually([&] { return !etcd->get(prefix + "ephemeral")->has_value(); }));
  EXPECT_TRUE(etcd->keep_alive(*lease).error().is(errc::lease_not_found));
}

TEST_F(EtcdCoordinatorTest, WatchReplaysFromARevisionThenFollows) {
  auto start = etcd->put(prefix + "w/a", "1");
  ASSERT_TRUE(start);
  ASSERT_TRUE(etcd->put(prefix + "w/b", "2"));
  std::mutex mutex;
  std::vector<WatchEvent> seen;
  auto watch = etcd->watch(prefix + "w/", true, *start, [&](const WatchEvent& event) {
    std::lock_guard lock(mutex);
    seen.push_back(event);
  });
  ASSERT_TRUE(watch) << watch.error().to_string();
  ASSERT_TRUE(etcd->erase(prefix + "w/a"));
  ASSERT_TRUE(etcd->put(prefix + "x", "not watched"));
  ASSERT_TRUE(etcd->put(prefix + "w/c", "3"));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return seen.size() >= 3;
  }));
  (*watch)->cancel();
  std::lock_guard lock(mutex);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].type, WatchEvent::Type::kPut);
  EXPECT_EQ(seen[0].kv.key, prefix + "w/b");
  EXPECT_EQ(seen[1].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(seen[1].kv.key, prefix + "w/a");
  EXPECT_EQ(seen[2].kv.value, "3");
  EXPECT_LT(seen[0].kv.mod_revision, seen[1].kv.mod_revision);
  EXPECT_LT(seen[1].kv.mod_revision, seen[2].kv.mod_revision);
}

TEST_F(EtcdCoordinatorTest, AWatchFromACompactedRevisionResyncs) {
  auto first = etcd->put(prefix + "c/k", "0");
  ASSERT_TRUE(first);
  Revision last = 0;
  for (int i = 1; i <= 3; ++i) last = *etcd->put(prefix + "c/k", std::to_string(i));
  auto connection = http::Connection::open(*http::parse_url(etcd_->endpoint()), 1s);
  ASSERT_TRUE(connection);
  auto compacted =
      (*connection)
          ->post("/v3/kv/compaction", "{\"revision\":\"" + std::to_string(last) + "\"}", 5s);
  ASSERT_TRUE(compacted && compacted->status == 200);
  std::mutex mutex;
  std::vector<WatchEvent> seen;
  auto watch = etcd->watch(prefix + "c/", true, *first, [&](const WatchEvent& event) {
    std::lock_guard lock(mutex);
    seen.push_back(event);
  });
  ASSERT_TRUE(watch) << watch.error().to_string();
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return !seen.empty();
  }));
  ASSERT_TRUE(etcd->put(prefix + "c/j", "after"));
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return seen.size() >= 2;
  }));
  std::lock_guard lock(mutex);
  EXPECT_EQ(seen[0].type, WatchEvent::Type::kResync);
  ASSERT_EQ(seen[0].snapshot.size(), 1u);
  EXPECT_EQ(seen[0].snapshot[0].value, "3");
  EXPECT_EQ(seen[1].type, WatchEvent::Type::kPut);
  EXPECT_EQ(seen[1].kv.key, prefix + "c/j");
}

TEST_F(EtcdCoordinatorTest, ElectionHandsOverAndFencesTheOldLeader) {
  auto other = EtcdCoordinator::connect({.endpoints = {etcd_->endpoint()}});
  ASSERT_TRUE(other);
  Elector a(*etcd, clock, prefix + "election", {.ttl = 2s});
  Elector b(**other, clock, prefix + "election", {.ttl = 2s});
  auto first = a.campaign("a");
  ASSERT_TRUE(first) << first.error().to_string();
  auto waiting = std::async(std::launch::async, [&] { return b.campaign("b"); });
  ASSERT_TRUE(eventually([&] {
    return a.leader()->value().value == "a" && etcd->range(a.prefix(), true)->first.size() == 2;
  }));
  EXPECT_EQ(waiting.wait_for(300ms), std::future_status::timeout) << "b waits while a leads";
  ASSERT_TRUE((*first)->proclaim("a, proclaimed"));
  EXPECT_EQ(b.leader()->value().value, "a, proclaimed");

  ASSERT_TRUE((*first)->resign());
  auto second = waiting.get();
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_GT((*second)->token(), (*first)->token());
  EXPECT_EQ(a.leader()->value().value, "b");
  auto stale =
      fenced_transact(*etcd, **first, {{Operation::Kind::kPut, prefix + "r", "a", 0, false}});
  ASSERT_FALSE(stale);
  EXPECT_TRUE(stale.error().is(errc::not_leader));
  EXPECT_TRUE(
      fenced_transact(**other, **second, {{Operation::Kind::kPut, prefix + "r", "b", 0, false}}));
  EXPECT_FALSE((*first)->proclaim("too late"));
}

// SIGSTOPs the suite's etcd, and SIGCONTs it when done or destroyed (the other tests share it):
// a server that accepts connections and requests and answers nothing.
class Paused {
 public:
  explicit Paused(pid_t pid) : pid_(pid) {
    running_ = ::kill(pid_, SIGSTOP) != 0;
    // kill() returns before every thread of the process has stopped; a request sent meanwhile
    // could still be answered. Wait until each thread reports itself stopped.
    for (int i = 0; i < 400 && !running_ && !all_threads_stopped(); ++i) {
      std::this_thread::sleep_for(5ms);
    }
  }
  ~Paused() { resume(); }
  bool paused() const { return !running_; }
  void resume() {
    if (!running_) ::kill(pid_, SIGCONT);
    running_ = true;
  }

 private:
  bool all_threads_stopped() const {
    const std::string tasks = "/proc/" + std::to_string(pid_) + "/task";
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(tasks, ec)) {
      std::ifstream stat(task.path() / "stat");
      std::string line;
      std::getline(stat, line);
      const auto close = line.rfind(')');  // the state follows the command name in parentheses
      if (close == std::string::npos || close + 2 >= line.size()) return false;
      const char state = line[close + 2];
      if (state != 'T' && state != 't') return false;
    }
    return !ec;
  }

  pid_t pid_;
  bool running_;
};

TEST_F(EtcdCoordinatorTest, ATransactionWaitsNoLongerThanItsTimeoutOrTheRequestTimeout) {
  auto short_requests =
      EtcdCoordinator::connect({.endpoints = {etcd_->endpoint()}, .request_timeout = 300ms});
  ASSERT_TRUE(short_requests);
  ASSERT_TRUE(etcd->put(prefix + "k", "v"));  // an idle connection each, opened before the pause
  ASSERT_TRUE((*short_requests)->put(prefix + "k", "v"));
  Paused paused(etcd_->pid());
  ASSERT_TRUE(paused.paused());
  auto timed = [](Coordinator& coordinator, Duration timeout) {
    Transaction put;
    put.success.push_back({Operation::Kind::kPut, "k", "v", 0, false});
    put.timeout = timeout;
    const auto started = std::chrono::steady_clock::now();
    auto result = coordinator.transact(put);
    EXPECT_FALSE(result);
    if (!result) {
      EXPECT_TRUE(result.error().is(errc::unavailable)) << result.error().to_string();
    }
    return std::chrono::steady_clock::now() - started;
  };
  // The transaction's own timeout, shorter than the 5 s request timeout.
  const auto own = timed(*etcd, 300ms);
  EXPECT_GE(own, 300ms);
  EXPECT_LT(own, 1300ms);
  // The request timeout, shorter than the transaction's.
  const auto request = timed(**short_requests, 5s);
  EXPECT_GE(request, 300ms);
  EXPECT_LT(request, 1300ms);
}

TEST_F(EtcdCoordinatorTest, AFencedWriteEndsAtTheLocalDeadlineWhileEtcdIsPaused) {
  constexpr Duration kTtl = 2s;
  Elector elector(*etcd, clock, prefix + "election", {.ttl = kTtl});
  auto leader = elector.campaign("a");
  ASSERT_TRUE(leader) << leader.error().to_string();
  const std::string key = prefix + "resource";
  auto fenced_put = [&](const std::string& value) {
    return fenced_transact(*etcd, **leader, {{Operation::Kind::kPut, key, value, 0, false}});
  };
  ASSERT_TRUE(fenced_put("before"));

  Paused paused(etcd_->pid());
  ASSERT_TRUE(paused.paused());
  const auto paused_at = std::chrono::steady_clock::now();
  // The last renewal that worked was asked before the pause: the deadline is at most 2/3 of the
  // TTL from now. Without the deadline the write would wait for the 5 s request timeout.
  const Duration deadline_at_the_latest = kTtl * 2 / 3;
  auto in_flight = fenced_put("in flight");
  const auto returned = std::chrono::steady_clock::now() - paused_at;
  ASSERT_FALSE(in_flight);
  EXPECT_TRUE(in_flight.error().is(errc::unavailable)) << in_flight.error().to_string();
  EXPECT_LT(returned, deadline_at_the_latest + 500ms)
      << "returned " << returned / 1ms << " ms into the pause";
  EXPECT_TRUE((*leader)->wait_lost(500ms)) << "its timeout was the time left until the deadline";

  const auto started = std::chrono::steady_clock::now();
  auto after = fenced_put("after");
  ASSERT_FALSE(after);
  EXPECT_TRUE(after.error().is(errc::not_leader)) << after.error().to_string();
  EXPECT_LT(std::chrono::steady_clock::now() - started, 100ms) << "not sent to the paused etcd";

  paused.resume();
  // The write in flight at the deadline may have been applied when etcd resumed; the one after
  // it was never sent.
  std::this_thread::sleep_for(500ms);
  auto held = etcd->get(key);
  ASSERT_TRUE(held && held->has_value());
  EXPECT_NE((*held)->value, "after");
}

TEST_F(EtcdCoordinatorTest, ACancelledCampaignWithdraws) {
  Elector elector(*etcd, clock, prefix + "election", {.ttl = 2s});
  auto leader = elector.campaign("leader");
  ASSERT_TRUE(leader);
  CancelToken cancel;
  auto waiting = std::async(std::launch::async, [&] { return elector.campaign("w", &cancel); });
  ASSERT_TRUE(eventually([&] { return etcd->range(elector.prefix(), true)->first.size() == 2; }));
  cancel.cancel();
  auto result = waiting.get();
  ASSERT_FALSE(result);
  EXPECT_TRUE(result.error().is(errc::cancelled));
  EXPECT_EQ(etcd->range(elector.prefix(), true)->first.size(), 1u) << "its key is gone";
  EXPECT_FALSE((*leader)->lost());
}

TEST_F(EtcdCoordinatorTest, ALeaderWhoseKeyVanishesLearnsAtOnce) {
  Elector elector(*etcd, clock, prefix + "election", {.ttl = 5s});
  auto leader = elector.campaign("x");
  ASSERT_TRUE(leader);
  ASSERT_TRUE(etcd->erase((*leader)->key()));
  EXPECT_TRUE((*leader)->wait_lost(5s));
}

TEST_F(EtcdCoordinatorTest, MembersRegisterUnderTheirLeases) {
  Membership membership(*etcd, clock, prefix + "members", 2s);
  std::mutex mutex;
  std::vector<std::vector<Member>> views;
  auto watch = membership.watch([&](const std::vector<Member>& members) {
    std::lock_guard lock(mutex);
    views.push_back(members);
  });
  ASSERT_TRUE(watch);
  auto a = membership.join({"node-a", "127.0.0.1:7400", "zone=a"});
  ASSERT_TRUE(a) << a.error().to_string();
  auto duplicate = membership.join({"node-a", "127.0.0.1:7401", ""});
  EXPECT_FALSE(duplicate);
  auto members = membership.list();
  ASSERT_TRUE(members);
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ((*members)[0].address, "127.0.0.1:7400");
  EXPECT_EQ((*members)[0].metadata, "zone=a");
  a->reset();  // leaves: revokes its lease
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lock(mutex);
    return views.size() >= 3 && views.back().empty();
  }));
}

// Its own etcd, restarted under a watch and a leader.
TEST(EtcdRestart, WatchesResumeAndLeasesSurvive) {
  auto server = LocalEtcd::start();
  ASSERT_TRUE(server) << server.error().to_string();
  auto etcd = EtcdCoordinator::connect({.endpoints = {(*server)->endpoint()}});
  ASSERT_TRUE(etcd);
  std::atomic<int> events{0};
  auto watch = (*etcd)->watch("r/", true, 0, [&](const WatchEvent&) { ++events; });
  ASSERT_TRUE(watch);
  ASSERT_TRUE((*etcd)->put("r/1", "before"));
  ASSERT_TRUE(eventually([&] { return events == 1; }));
  auto lease = (*etcd)->grant(30s);
  ASSERT_TRUE(lease);
  ASSERT_TRUE((*server)->restart());
  ASSERT_TRUE((*etcd)->put("r/2", "after")) << "the idle connection died with the old process";
  EXPECT_TRUE(eventually([&] { return events == 2; })) << "the watch stream was reopened";
  EXPECT_TRUE((*etcd)->keep_alive(*lease)) << "leases are on disk";
  EXPECT_EQ((*etcd)->get("r/1")->value().value, "before");
}

}  // namespace
}  // namespace keel::coord

// A real `keel node` process and three consumer-group members that are processes too
// (node_group_member, keel::NodeClient), one or two of them SIGKILLed mid-batch — after a poll
// returned and before all of its acks — then replaced, under the same name or a new one. Once
// the group's stats say everything is acked, what every member printed (each delivery it got,
// each ack before it was sent and whether the node took it) must show, for each strategy:
//
// - none lost: every appended event was acked by some member, and the node counted exactly one
//   ack per event (no parking, nothing in flight, no lag);
// - redeliveries only where a member died holding them: an event went out again only after the
//   member holding it was killed before its ack reached the node, and no event was acked twice
//   unless one of the two was the last word of a killed member (its ack line is out, its answer
//   never came);
// - pinned: per stream, the acks of every member in time order are versions 0, 1, 2, … in
//   order, where a version may come once more only right after a killed member's unanswered ack
//   of it (checked below, at check_pinned_order()).
//
// Real processes, real time: member_timeout 1 s, ack timeout 3 s (what a member replaced under
// its own name would wait for if its NodeClient sent no session). The choices
// (how many kills, after how many acks, where in the batch, which replacement name) are drawn
// from a seed: KEEL_MEMBERS_SEED=N replays them (the moments still land as real time does).
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "keel/core/random.h"
#include "keel/node/client.h"
#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using Json = nlohmann::json;
using testing::Subprocess;

constexpr int kStreams = 12;
constexpr int kEventsPerStream = 40;  // half before the members start, half while they run
constexpr const char* kGroup = "workers";
constexpr const char* kStallPoints[] = {"poll", "mid", "intent", "sent"};

// What one member process printed (node_group_member's lines), parsed.
struct Got {
  std::uint64_t id = 0;
  std::string stream;
  std::uint64_t version = 0;
  std::uint32_t attempt = 0;
  std::uint64_t t = 0;
  std::size_t process = 0;
};
enum class Outcome { kUnanswered, kAcked, kRefused };
struct AckLine {
  std::uint64_t id = 0;
  std::string stream;
  std::uint64_t version = 0;
  std::uint64_t t = 0;
  std::size_t process = 0;
  Outcome outcome = Outcome::kUnanswered;
};

struct MemberProcess {
  std::string name;   // the member name it polls as
  std::string label;  // name, and #2 for a second process under that name
  std::string stall;  // "" or "AFTER POINT"
  std::unique_ptr<Subprocess> process;
  bool killed = false;
  // Filled by the reader thread, under the fixture's mutex_.
  std::vector<std::string> lines;
  bool stalled = false;
};

std::string describe(const AckLine& a, const std::vector<std::unique_ptr<MemberProcess>>& ps) {
  return a.stream + "@" + std::to_string(a.version) + " by " + ps[a.process]->label +
         (a.outcome == Outcome::kAcked     ? " (acked)"
          : a.outcome == Outcome::kRefused ? " (refused)"
                                           : " (unanswered)") +
         (ps[a.process]->killed ? " [killed]" : "");
}

class NodeGroupMembersTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');
    dir_ = std::filesystem::temp_directory_path() /
           ("keel_node_group_members_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override {
    for (auto& member : members_) member->process.reset();
    node_.reset();
    if (HasFailure()) {
      std::printf("keel node's log:\n%s\n",
                  testing::file_tail((dir_ / "node.log").string(), 4000).c_str());
    }
    std::filesystem::remove_all(dir_);
  }

  void start_node() {
    auto port = testing::free_loopback_port();
    ASSERT_TRUE(port) << port.error().message();
    url_ = "http://127.0.0.1:" + std::to_string(*port);
    const std::string config = (dir_ / "node.yaml").string();
    std::ofstream(config) << "data_dir: " << (dir_ / "data").string() << "\n"
                          << "listen: 127.0.0.1:" << *port << "\n"
                          << "durability: none\n"  // node_crash_test covers fsync
                          << "member_timeout_ms: 1000\n";
    auto node = Subprocess::spawn_to_file(
        {KEEL_BINARY, "--log-level", "warn", "node", "-c", config}, (dir_ / "node.log").string());
    ASSERT_TRUE(node) << node.error().message();
    node_ = std::move(*node);
    // Up when it answers a request (connect() opens its connection at once).
    auto up = [&] {
      auto client = NodeClient::connect({.url = url_, .timeout = 10s});
      if (!client || !(*client)->groups()) return false;
      client_ = std::move(*client);
      return true;
    };
    ASSERT_EQ(testing::wait_until_ready(*node_, 20s, up), testing::Readiness::kReady)
        << "keel node did not come up";
  }

  // Starts a member process polling as `name`; `stall` is "" or "AFTER POINT".
  MemberProcess& start_member(const std::string& name, const std::string& stall) {
    auto member = std::make_unique<MemberProcess>();
    MemberProcess& m = *member;
    m.name = name;
    int same = 0;
    for (const auto& other : members_) same += other->name == name;
    m.label = same == 0 ? name : name + "#" + std::to_string(same + 1);
    m.stall = stall;
    std::vector<std::string> argv = {KEEL_GROUP_MEMBER, url_, kGroup, name};
    if (!stall.empty()) {
      std::istringstream words(stall);
      std::string after, point;
      words >> after >> point;
      argv.push_back(after);
      argv.push_back(point);
    }
    {
      std::lock_guard lock(mutex_);
      members_.push_back(std::move(member));
    }
    auto spawned = Subprocess::spawn(argv, [this, &m](std::string_view line) {
      std::lock_guard lock(mutex_);
      m.lines.emplace_back(line);
      if (line.starts_with("stall ")) {
        m.stalled = true;
        changed_.notify_all();
      }
    });
    EXPECT_TRUE(spawned) << spawned.error().message();
    if (spawned) m.process = std::move(*spawned);
    return m;
  }

  // Appends `count` events to each stream in batches of 1-5, their data their index.
  void append_round(NodeClient& client, Random& random, int count) {
    for (int s = 0; s < kStreams; ++s) {
      const std::string stream = "job-" + std::to_string(s);
      for (int done = 0; done < count;) {
        const int n = std::min(count - done, 1 + static_cast<int>(random.uniform(5)));
        std::vector<eventlog::EventData> batch;
        for (int i = 0; i < n; ++i) {
          batch.push_back({Uuid::random_v4(random), "Job",
                           "{\"n\":" + std::to_string(appended_[stream] + i) + "}", ""});
        }
        auto appended = client.append(stream, eventlog::ExpectedVersion::any(), batch);
        ASSERT_TRUE(appended) << appended.error().message();
        ASSERT_EQ(appended->first_version, appended_[stream]);
        appended_[stream] += n;
        done += n;
      }
    }
  }

  Json group_stats() {
    auto group = client_->group(kGroup);
    if (!group) return Json();
    return Json::parse(*group, nullptr, false);
  }

  std::filesystem::path dir_;
  std::string url_;
  std::unique_ptr<Subprocess> node_;
  std::unique_ptr<NodeClient> client_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::unique_ptr<MemberProcess>> members_;
  std::map<std::string, std::uint64_t> appended_;  // stream -> events appended
};

// Pinned: a member that keeps state per stream applies version v only after v − 1, so it
// remembers the last version it applied and drops anything at or below it (a redelivery). That
// works when the stream's events reach the members, across every kill and rebalance, as
// 0, 1, 2, … with at most a repeat of the event whose ack was in doubt — the same promise a
// Kafka partition keeps to the consumer that takes it over (it resumes at the first
// uncommitted offset; nothing later arrives before it) and what EventStoreDB's pinned
// subscriptions are used for. So, per stream, the ack lines of every member in time order
// (CLOCK_MONOTONIC, written before each ack is sent, and the next event of a pinned stream
// goes out only after the node took the ack of this one) must be 0, 1, …, n−1, where a step
// back to the same version is allowed only right after a killed member's unanswered ack of it
// (the ack never arrived, so the node redelivered from that event, the stream's first
// unacked one). Any other repeat, a step back further, or a gap fails. The same holds for the
// `got` lines (deliveries): a version comes again only after a killed member held it.
void check_pinned_order(const std::map<std::string, std::vector<AckLine>>& acks_by_stream,
                        const std::map<std::string, std::vector<Got>>& gots_by_stream,
                        const std::map<std::string, std::uint64_t>& appended,
                        const std::vector<std::unique_ptr<MemberProcess>>& ps) {
  for (const auto& [stream, count] : appended) {
    auto acks = acks_by_stream.count(stream) ? acks_by_stream.at(stream) : std::vector<AckLine>{};
    std::sort(acks.begin(), acks.end(), [](const auto& a, const auto& b) { return a.t < b.t; });
    std::uint64_t next = 0;
    const AckLine* previous = nullptr;
    for (const AckLine& ack : acks) {
      const bool in_doubt = previous != nullptr && previous->outcome == Outcome::kUnanswered &&
                            ps[previous->process]->killed;
      if (ack.version == next) {
        ++next;
      } else if (!(in_doubt && ack.version == previous->version)) {
        std::string around;
        for (const AckLine& a : acks) around += "\n  " + describe(a, ps);
        ADD_FAILURE() << stream << ": ack of version " << ack.version << " (" << describe(ack, ps)
                      << ") where " << next << " was next; every ack of the stream:" << around;
        break;
      }
      previous = &ack;
    }
    EXPECT_EQ(next, count) << stream << ": acks in order reach version " << next << " of " << count;

    auto gots = gots_by_stream.count(stream) ? gots_by_stream.at(stream) : std::vector<Got>{};
    std::sort(gots.begin(), gots.end(), [](const auto& a, const auto& b) { return a.t < b.t; });
    for (std::size_t i = 1; i < gots.size(); ++i) {
      const Got& before = gots[i - 1];
      const Got& got = gots[i];
      const bool again = got.version == before.version && ps[before.process]->killed;
      if (got.version != before.version + 1 && !again) {
        ADD_FAILURE() << stream << ": delivered " << got.version << " to " << ps[got.process]->label
                      << " after " << before.version << " to " << ps[before.process]->label;
        break;
      }
    }
  }
}

TEST_P(NodeGroupMembersTest, MembersKilledMidBatchLoseNothingAndRedeliverOnlyWhatTheyHeld) {
  const std::string strategy = GetParam();
  std::uint64_t seed = random_seed();
  if (const char* text = std::getenv("KEEL_MEMBERS_SEED")) seed = std::strtoull(text, nullptr, 10);
  SCOPED_TRACE("KEEL_MEMBERS_SEED=" + std::to_string(seed));
  Random random(seed);
  const auto began = std::chrono::steady_clock::now();

  start_node();
  if (HasFatalFailure()) return;
  Json definition = {{"categories", {"job"}},  {"strategy", strategy},
                     {"max_in_flight", 8},     {"ack_timeout_ms", 3000},
                     {"retry_backoff_ms", 10}, {"max_retry_backoff_ms", 100},
                     {"max_deliveries", 10},   {"checkpoint_interval_ms", 200}};
  auto created = client_->create_group(kGroup, definition.dump());
  ASSERT_TRUE(created) << created.error().message();
  append_round(*client_, random, kEventsPerStream / 2);

  // One or two of m1..m3 stall after some acks at a point of a batch, to be killed there.
  const int kills = 1 + static_cast<int>(random.uniform(2));
  std::vector<MemberProcess*> doomed;
  for (int m = 1; m <= 3; ++m) {
    std::string stall;
    if (m <= kills) {
      stall = std::to_string(3 + random.uniform(25)) + " " + kStallPoints[random.uniform(4)];
    }
    MemberProcess& member = start_member("m" + std::to_string(m), stall);
    if (!stall.empty()) doomed.push_back(&member);
  }
  // The second half arrives while the members work (and die).
  std::thread appender([&] {
    auto client = NodeClient::connect({.url = url_, .timeout = 10s});
    ASSERT_TRUE(client) << client.error().message();
    Random own(seed + 1);
    append_round(**client, own, kEventsPerStream / 2);
  });

  // Each doomed member, as soon as it says it stalled: SIGKILL, then a replacement — the first
  // under the same name (its first poll, with a new session, makes the old process leave: its
  // deliveries go out again at once), the second under a new one (the old name is reaped after
  // member_timeout and its deliveries go to the others then), or either when there is one.
  const bool first_same_name = kills == 2 || random.uniform(2) == 0;
  std::vector<std::string> killed;
  for (std::size_t k = 0; k < doomed.size(); ++k) {
    MemberProcess* victim = nullptr;
    {
      std::unique_lock lock(mutex_);
      auto stalled = [&] {
        for (MemberProcess* m : doomed) {
          if (m->stalled && !m->killed) victim = m;
        }
        return victim != nullptr;
      };
      if (!changed_.wait_for(lock, 30s, stalled)) break;
    }
    victim->process->signal(SIGKILL);
    EXPECT_EQ(victim->process->wait(10s), 128 + SIGKILL) << victim->label;
    {
      std::lock_guard lock(mutex_);
      victim->killed = true;
    }
    killed.push_back(victim->label + " (" + victim->stall + ")");
    const bool same_name = k == 0 ? first_same_name : false;
    start_member(same_name ? victim->name : "m" + std::to_string(4 + k), "");
  }
  appender.join();
  ASSERT_EQ(killed.size(), doomed.size()) << "a member never stalled where it was told to";

  std::uint64_t total = 0;
  for (const auto& [stream, count] : appended_) total += count;
  // Done when the node has an ack for every event and holds nothing: bounded, not a sleep.
  Json stats;
  const auto deadline = std::chrono::steady_clock::now() + 40s;
  for (;;) {
    stats = group_stats();
    if (stats.is_object() && stats["stats"]["acked"] >= total && stats["stats"]["in_flight"] == 0 &&
        stats["stats"]["lag"] == 0 && stats["stats"]["buffered"] == 0) {
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL() << "the group did not finish in 40 s: " << stats.dump();
    }
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(stats["stats"]["acked"], total) << "the node took one ack per event: " << stats.dump();
  EXPECT_EQ(stats["stats"]["parked"], 0) << stats.dump();
  for (const auto& member : stats["members"]) EXPECT_EQ(member["in_flight"], 0) << stats.dump();

  // The survivors only poll now; stop them and read what everyone printed.
  for (auto& member : members_) {
    if (!member->killed) member->process->signal(SIGTERM);
  }
  for (auto& member : members_) {
    EXPECT_TRUE(member->process->wait(10s).has_value()) << member->label << " did not stop";
    member->process.reset();  // joins its reader: every line is in
  }

  std::vector<Got> gots;
  std::vector<AckLine> acks;
  std::size_t poll_errors = 0;
  for (std::size_t p = 0; p < members_.size(); ++p) {
    MemberProcess& member = *members_[p];
    std::map<std::uint64_t, std::size_t> ack_index;  // delivery id -> index in acks
    std::set<std::uint64_t> got_ids;
    for (const std::string& line : member.lines) {
      std::istringstream in(line);
      std::string word;
      in >> word;
      if (word == "got") {
        Got got;
        got.process = p;
        ASSERT_TRUE(in >> got.id >> got.stream >> got.version >> got.attempt >> got.t) << line;
        got_ids.insert(got.id);
        gots.push_back(got);
      } else if (word == "ack") {
        AckLine ack;
        ack.process = p;
        ASSERT_TRUE(in >> ack.id >> ack.stream >> ack.version >> ack.t) << line;
        ASSERT_TRUE(got_ids.contains(ack.id))
            << member.label << " acks what it did not get: " << line;
        ack_index[ack.id] = acks.size();
        acks.push_back(ack);
      } else if (word == "acked" || word == "refused" || word == "ack_error") {
        std::uint64_t id = 0;
        ASSERT_TRUE(in >> id) << line;
        ASSERT_TRUE(ack_index.contains(id)) << member.label << ": " << line;
        acks[ack_index[id]].outcome = word == "acked"     ? Outcome::kAcked
                                      : word == "refused" ? Outcome::kRefused
                                                          : Outcome::kUnanswered;
        // A live member's ack is answered; refused (taken back from a member that lived) or
        // lost on loopback is a failure.
        EXPECT_EQ(word, "acked") << member.label << ": " << line;
      } else if (word == "poll_error") {
        ++poll_errors;
      } else if (word != "stall") {
        ADD_FAILURE() << member.label << " printed: " << line;
      }
    }
    EXPECT_EQ(member.killed, !member.stall.empty()) << member.label;
  }

  // Per event: its deliveries and ack lines.
  using EventKey = std::pair<std::string, std::uint64_t>;
  std::map<EventKey, std::vector<const Got*>> gots_of;
  std::map<EventKey, std::vector<const AckLine*>> acks_of;
  std::map<std::uint64_t, const AckLine*> ack_of_delivery;
  std::map<std::string, std::vector<AckLine>> acks_by_stream;
  std::map<std::string, std::vector<Got>> gots_by_stream;
  for (const Got& got : gots) {
    gots_of[{got.stream, got.version}].push_back(&got);
    gots_by_stream[got.stream].push_back(got);
  }
  for (const AckLine& ack : acks) {
    acks_of[{ack.stream, ack.version}].push_back(&ack);
    ack_of_delivery[ack.id] = &ack;
    acks_by_stream[ack.stream].push_back(ack);
  }
  std::size_t redelivered = 0, acked_twice = 0;
  for (const auto& [stream, count] : appended_) {
    for (std::uint64_t version = 0; version < count; ++version) {
      const EventKey key{stream, version};
      const std::string event = stream + "@" + std::to_string(version);
      // None lost: acked by someone — the node said so, or a killed member sent it.
      std::size_t answered = 0, in_doubt = 0;
      for (const AckLine* ack : acks_of[key]) {
        if (ack->outcome == Outcome::kAcked) ++answered;
        if (ack->outcome == Outcome::kUnanswered && members_[ack->process]->killed) ++in_doubt;
      }
      EXPECT_GE(answered + in_doubt, 1u) << event << " was never acked: lost";
      EXPECT_LE(answered, 1u) << event << " was acked twice, and the node took both";
      if (acks_of[key].size() > 1) ++acked_twice;
      // Redelivered only after a killed member held it without its ack arriving.
      auto deliveries = gots_of[key];
      std::sort(deliveries.begin(), deliveries.end(),
                [](const Got* a, const Got* b) { return a->t < b->t; });
      if (deliveries.size() > 1) ++redelivered;
      for (std::size_t i = 0; i < deliveries.size(); ++i) {
        const Got& got = *deliveries[i];
        const MemberProcess& holder = *members_[got.process];
        auto ack = ack_of_delivery.find(got.id);
        const bool took_it =
            ack != ack_of_delivery.end() && ack->second->outcome == Outcome::kAcked;
        if (!holder.killed) {
          EXPECT_TRUE(took_it) << holder.label << " lived and never acked " << event;
        }
        if (i + 1 < deliveries.size()) {
          EXPECT_TRUE(holder.killed && !took_it)
              << event << " went out again (to " << members_[deliveries[i + 1]->process]->label
              << ") after " << holder.label << (took_it ? " acked it" : " held it and lived");
        }
        EXPECT_GE(got.attempt, i + 1) << event << ": attempt numbers";
      }
    }
  }
  if (strategy == "pinned") check_pinned_order(acks_by_stream, gots_by_stream, appended_, members_);

  std::string killed_text;
  for (const auto& k : killed) killed_text += (killed_text.empty() ? "" : ", ") + k;
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - began);
  std::printf(
      "%s: %llu events, killed %s; %zu events redelivered, %zu with two ack lines, %llu "
      "timed out, %zu poll errors, %lld ms (seed %llu)\n",
      strategy.c_str(), static_cast<unsigned long long>(total), killed_text.c_str(), redelivered,
      acked_twice, stats["stats"]["timed_out"].get<unsigned long long>(), poll_errors,
      static_cast<long long>(took.count()), static_cast<unsigned long long>(seed));
  EXPECT_GE(redelivered, 1u) << "a killed member held something, which went out again";
}

INSTANTIATE_TEST_SUITE_P(Strategies, NodeGroupMembersTest,
                         ::testing::Values("pinned", "round_robin", "dispatch_to_single"),
                         [](const auto& param_info) { return std::string(param_info.param); });

}  // namespace
}  // namespace keel

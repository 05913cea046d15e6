// Three `keel node` processes and a real etcd on loopback. Clients append (each with its
// expected version and a fixed event id) and read many streams through NodeClient, which follows
// the nodes' redirects, while slots move back and forth; then the same with the controller
// killed (SIGKILL) mid-move, and with a move's source killed mid-move and restarted. At the end
// no client request has failed, and every stream holds exactly the events its client saw
// acknowledged, in order, versions without a gap.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "keel/http/client.h"
#include "keel/node/client.h"
#include "keel/testing/local_etcd.h"
#include "keel/testing/scripted_server.h"
#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using Json = nlohmann::json;
using testing::Subprocess;

constexpr int kNodes = 3;
constexpr int kClients = 4;
constexpr int kStreamsPerClient = 16;
constexpr std::uint32_t kSlots = 64;

std::string event_id(int client, std::uint64_t seq) {
  char text[64];
  std::snprintf(text, sizeof text, "%08x-0000-4000-8000-%012llx", client + 1,
                static_cast<unsigned long long>(seq + 1));
  return text;
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("keel_cluster_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    auto etcd = testing::LocalEtcd::start();
    ASSERT_TRUE(etcd) << etcd.error().message();
    etcd_ = std::move(*etcd);
    for (int i = 0; i < kNodes; ++i) {
      auto port = testing::free_loopback_port();
      ASSERT_TRUE(port);
      ports_[i] = static_cast<std::uint16_t>(*port);
      auto kafka = testing::free_loopback_port();
      ASSERT_TRUE(kafka);
      kafka_ports_[i] = static_cast<std::uint16_t>(*kafka);
      std::ofstream(config(i)) << "data_dir: " << (dir_ / ("data" + std::to_string(i))).string()
                               << "\nlisten: 127.0.0.1:" << ports_[i]
                               << "\ndurability: none\nkafka:\n  listen: 127.0.0.1:"
                               << kafka_ports_[i]
                               << "\n  default_partitions: 6\ncluster:\n  etcd: \""
                               << etcd_->endpoint() << "\"\n  id: n" << i
                               << "\n  initial_nodes: " << kNodes << "\n  slot_count: " << kSlots
                               << "\n  max_slots_per_move: 4\n  lease_ttl_ms: 2000\n";
    }
    for (int i = 0; i < kNodes; ++i) start(i);
    for (int i = 0; i < kNodes; ++i) wait_ready(i);
    ASSERT_TRUE(wait_for([&] { return status(0).value("epoch", 0) >= 1; })) << "no map was written";
  }

  void TearDown() override {
    for (auto& node : nodes_) {
      if (node) node->signal(SIGKILL);
    }
    if (!HasFailure()) std::filesystem::remove_all(dir_);
  }

  std::string config(int i) const { return (dir_ / ("n" + std::to_string(i) + ".yaml")).string(); }
  std::string url(int i) const { return "http://127.0.0.1:" + std::to_string(ports_[i]); }

  void start(int i) {
    auto node =
        Subprocess::spawn_to_file({KEEL_BINARY, "--log-level", "info", "node", "-c", config(i)},
                                  (dir_ / ("n" + std::to_string(i) + ".log")).string());
    ASSERT_TRUE(node) << node.error().message();
    nodes_[i] = std::move(*node);
  }
  void kill(int i) {
    nodes_[i]->signal(SIGKILL);
    (void)nodes_[i]->wait(10s);
    nodes_[i].reset();
  }
  void wait_ready(int i) {
    ASSERT_TRUE(wait_for([&] {
      auto client = NodeClient::connect({.url = url(i), .timeout = 1s});
      return client && (*client)->cluster().ok();
    })) << "node "
        << i << " did not start (its log: " << (dir_ / ("n" + std::to_string(i) + ".log")) << ")";
  }

  template <typename F>
  bool wait_for(F done, Duration timeout = 60s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }

  Json status(int i) {
    auto client = NodeClient::connect({.url = url(i), .timeout = 2s});
    if (!client) return Json::object();
    auto answer = (*client)->cluster();
    if (!answer) return Json::object();
    auto json = Json::parse(*answer, nullptr, false);
    return json.is_object() ? json : Json::object();
  }
  int index_of(const std::string& id) const { return id.size() == 2 ? id[1] - '0' : -1; }

  // Sets the goal through node `via`; returns the slots it moves. settled() waits for a view
  // at least as new as the goal's write.
  std::uint64_t goal_revision_ = 0;
  int change(int via, const std::string& action, const Json& body) {
    auto client = NodeClient::connect({.url = url(via), .timeout = 5s});
    EXPECT_TRUE(client);
    if (!client) return 0;
    auto answer = (*client)->change_cluster(action, body.dump());
    EXPECT_TRUE(answer) << answer.error().message();
    if (!answer) return 0;
    const Json parsed = Json::parse(*answer);
    goal_revision_ = parsed.value("revision", std::uint64_t{0});
    return parsed.value("slots_to_move", 0);
  }
  bool settled(int via) {
    Json s = status(via);
    return s.value("revision", std::uint64_t{0}) >= goal_revision_ &&
           s.value("slots_to_move", 1) == 0 && s.contains("move") && s["move"].is_null();
  }

  // The load: each client appends to its own streams in turn, every append with its expected
  // version and a fixed id, retried (same id, same version) while a node is down or a slot is
  // moving; a read of the stream now and then checks its last version.
  struct Load {
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> appends{0}, failures{0}, redirects{0};
    std::vector<std::vector<std::uint64_t>> versions;  // per client, per stream: events acked
    std::vector<std::thread> threads;
    std::mutex mutex;
    std::vector<std::string> errors;
    ~Load() {
      stop = true;
      for (auto& thread : threads) {
        if (thread.joinable()) thread.join();
      }
    }
  };

  void start_load(Load& load) {
    load.versions.assign(kClients, std::vector<std::uint64_t>(kStreamsPerClient, 0));
    for (int c = 0; c < kClients; ++c) {
      load.threads.emplace_back([this, &load, c] {
        auto client = NodeClient::connect({.url = url(c % kNodes), .timeout = 5s});
        if (!client) {
          load.failures++;
          return;
        }
        for (int round = 0; !load.stop; ++round) {
          const int s = round % kStreamsPerClient;
          const std::string stream = "acct" + std::to_string(c) + "-" + std::to_string(s);
          std::uint64_t& version = load.versions[c][s];
          // The id is per (client, stream, version), so a retry is the same event.
          eventlog::EventData event{*Uuid::parse(event_id(c * 1000 + s, version)), "Deposited",
                                    Json{{"client", c}, {"version", version}}.dump(), ""};
          const auto expected = version == 0 ? eventlog::ExpectedVersion::no_stream()
                                             : eventlog::ExpectedVersion::exact(version - 1);
          Status outcome;
          const auto deadline = std::chrono::steady_clock::now() + 45s;
          for (;;) {
            auto appended = (*client)->append(stream, expected, {&event, 1});
            if (appended) {
              if (appended->last_version != version) {
                outcome =
                    Error(errc::invalid_argument, stream + ": acknowledged as version " +
                                                      std::to_string(appended->last_version) +
                                                      ", expected " + std::to_string(version));
              }
              break;
            }
            // A node down (connection refused, reset) or restarting: the same append again.
            if (std::chrono::steady_clock::now() > deadline) {
              outcome = appended.error();
              break;
            }
            std::this_thread::sleep_for(20ms);
          }
          if (!outcome) {
            load.failures++;
            std::lock_guard lock(load.mutex);
            if (load.errors.size() < 10) load.errors.push_back(outcome.error().message());
            continue;
          }
          ++version;
          load.appends++;
          if (round % 7 == 0) {
            auto page =
                (*client)->read_stream(stream, node::kEnd, 1, eventlog::Direction::kBackward);
            if (!page || page->events.empty() || page->events[0].version + 1 != version) {
              load.failures++;
              std::lock_guard lock(load.mutex);
              if (load.errors.size() < 10) {
                load.errors.push_back(
                    "read " + stream + ": " +
                    (page ? "last version " + (page->events.empty()
                                                   ? std::string("none")
                                                   : std::to_string(page->events[0].version))
                          : page.error().message()));
              }
            }
          }
        }
        load.redirects += (*client)->redirects_followed();
      });
    }
    std::this_thread::sleep_for(300ms);  // the clients have streams before anything moves
  }

  void finish_load(Load& load) {
    load.stop = true;
    for (auto& thread : load.threads) thread.join();
    load.threads.clear();
    for (const auto& error : load.errors) ADD_FAILURE() << error;
    EXPECT_EQ(load.failures.load(), 0u);
    EXPECT_GT(load.appends.load(), 0u);
    // Every stream, read whole through the cluster: exactly its acknowledged events, in order.
    auto client = NodeClient::connect({.url = url(0), .timeout = 10s});
    ASSERT_TRUE(client);
    for (int c = 0; c < kClients; ++c) {
      for (int s = 0; s < kStreamsPerClient; ++s) {
        const std::string stream = "acct" + std::to_string(c) + "-" + std::to_string(s);
        auto page = (*client)->read_stream(stream, 0, 1000);
        ASSERT_TRUE(page) << stream << ": " << page.error().message();
        const std::uint64_t acked = load.versions[c][s];
        ASSERT_EQ(page->events.size(), acked) << stream;
        for (std::uint64_t v = 0; v < acked; ++v) {
          EXPECT_EQ(page->events[v].version, v) << stream;
          EXPECT_EQ(page->events[v].id.to_string(), event_id(c * 1000 + s, v)) << stream;
        }
      }
    }
    std::printf("cluster load: %llu appends, %llu redirects followed\n",
                static_cast<unsigned long long>(load.appends.load()),
                static_cast<unsigned long long>(load.redirects.load()));
  }

  std::filesystem::path dir_;
  std::unique_ptr<testing::LocalEtcd> etcd_;
  std::array<std::uint16_t, kNodes> ports_{};
  std::array<std::uint16_t, kNodes> kafka_ports_{};
  std::array<std::unique_ptr<Subprocess>, kNodes> nodes_;
};

TEST_F(ClusterTest, SlotsMoveBackAndForthUnderLoadWithNothingLostOrFailed) {
  Load load;
  start_load(load);
  // Subscribers to some of client 0's streams: a stream that moves ends with `moved` on its old
  // owner and the client goes on at the new one, so each sees every version once, in order.
  constexpr int kSubscribed = 8;
  std::array<std::vector<std::uint64_t>, kSubscribed> seen;
  std::array<std::unique_ptr<NodeClient>, kSubscribed> subscribers;
  std::array<std::atomic<std::size_t>, kSubscribed> counts{};
  std::array<Status, kSubscribed> ended;
  std::vector<std::thread> subscribing;
  for (int s = 0; s < kSubscribed; ++s) {
    auto client = NodeClient::connect({.url = url(s % kNodes), .timeout = 5s});
    ASSERT_TRUE(client);
    subscribers[s] = std::move(*client);
    subscribing.emplace_back([&, s] {
      ended[s] = subscribers[s]->subscribe("acct0-" + std::to_string(s), 0, {},
                                           [&](const eventlog::RecordedEvent& event) {
                                             seen[s].push_back(event.version);
                                             counts[s]++;
                                             return true;
                                           });
    });
  }
  for (int round = 0; round < 3; ++round) {
    // All of n0's first slots to n1, then to n2, then a rebalance brings the map back even.
    EXPECT_GT(change(round % kNodes, "move", {{"first", 0}, {"last", 15}, {"to", "n1"}}), 0);
    ASSERT_TRUE(wait_for([&] { return settled(0); })) << status(0).dump();
    EXPECT_GT(change(1, "move", {{"first", 0}, {"last", 31}, {"to", "n2"}}), 0);
    ASSERT_TRUE(wait_for([&] { return settled(1); })) << status(1).dump();
    EXPECT_GT(change(2, "rebalance", Json::object()), 0);
    ASSERT_TRUE(wait_for([&] { return settled(2); })) << status(2).dump();
  }
  finish_load(load);
  EXPECT_GT(load.redirects.load(), 0u) << "the clients never needed a redirect";
  std::uint64_t subscriber_redirects = 0;
  for (int s = 0; s < kSubscribed; ++s) {
    const std::uint64_t acked = load.versions[0][s];
    EXPECT_TRUE(wait_for([&] { return counts[s].load() >= acked; }, 20s))
        << "acct0-" << s << ": " << counts[s].load() << " of " << acked;
    subscribers[s]->cancel();
  }
  for (auto& thread : subscribing) thread.join();
  for (int s = 0; s < kSubscribed; ++s) {
    EXPECT_TRUE(ended[s].ok() || ended[s].error().is(http::errc::cancelled))
        << "acct0-" << s << ": " << ended[s].error().message();
  }
  for (int s = 0; s < kSubscribed; ++s) {
    subscriber_redirects += subscribers[s]->redirects_followed();
    ASSERT_EQ(seen[s].size(), load.versions[0][s]) << "acct0-" << s;
    for (std::uint64_t v = 0; v < seen[s].size(); ++v) EXPECT_EQ(seen[s][v], v) << "acct0-" << s;
  }
  EXPECT_GT(subscriber_redirects, 0u) << "no subscribed stream moved";
  Json final = status(0);
  EXPECT_GE(final.value("epoch", 0), 10) << final.dump();
}

TEST_F(ClusterTest, AControllerKilledMidMoveIsReplacedAndTheMoveFinishes) {
  Load load;
  start_load(load);
  Json before = status(0);
  const int controller = index_of(before.value("controller", ""));
  ASSERT_GE(controller, 0) << before.dump();
  // Everything off one of the other nodes: many moves, so the kill lands mid-way.
  const int other = (controller + 1) % kNodes;
  EXPECT_GT(change(other, "drain", {{"node", "n" + std::to_string(other)}}), 0);
  ASSERT_TRUE(wait_for([&] { return status(other)["move"].is_object(); }, 10s));
  kill(controller);
  // Another node takes over the controller role once the dead one's lease runs out...
  ASSERT_TRUE(wait_for([&] {
    Json s = status(other);
    return s["controller"].is_string() && s["controller"] != "n" + std::to_string(controller);
  })) << status(other).dump();
  // ...and, with the killed node back (some of the drained slots go to it), finishes the drain.
  start(controller);
  wait_ready(controller);
  ASSERT_TRUE(wait_for([&] { return settled(other); })) << status(other).dump();
  finish_load(load);
  for (const auto& range : status(other)["ranges"]) {
    EXPECT_NE(range.value("owner", ""), "n" + std::to_string(other)) << "drained";
  }
}

TEST_F(ClusterTest, ASourceKilledMidMoveAndRestartedLosesNothing) {
  Load load;
  start_load(load);
  Json before = status(0);
  const int controller = index_of(before.value("controller", ""));
  ASSERT_GE(controller, 0) << before.dump();
  const int source = (controller + 1) % kNodes;
  const int target = (controller + 2) % kNodes;
  // The source's first 16 slots to the target, four at a time.
  std::uint32_t first = kSlots;
  for (const auto& range : before["ranges"]) {
    if (range["owner"] == "n" + std::to_string(source))
      first = std::min(first, range["first"].get<std::uint32_t>());
  }
  ASSERT_LT(first, kSlots);
  EXPECT_GT(change(controller, "move",
                   {{"first", first}, {"last", first + 15}, {"to", "n" + std::to_string(target)}}),
            0);
  ASSERT_TRUE(wait_for([&] { return status(controller)["move"].is_object(); }, 10s));
  kill(source);
  std::this_thread::sleep_for(500ms);
  start(source);
  wait_ready(source);
  ASSERT_TRUE(wait_for([&] { return settled(controller); })) << status(controller).dump();
  finish_load(load);
}

// kcat, a real Kafka client, against the cluster: Metadata names every broker and each
// partition's leader, so records produced through one node land on their partitions' owners;
// after a drain moves partitions, a consumer bootstrapped at another node reads every record,
// offsets dense per partition.
std::vector<std::string> kcat(const std::vector<std::string>& args, const std::string& input = "") {
  std::vector<std::string> argv{"/bin/sh", "-c", ""};
  std::string command = "kcat";
  for (const auto& arg : args) command += " '" + arg + "'";
  if (!input.empty()) command = "printf '" + input + "' | " + command;
  argv[2] = command;
  std::mutex mutex;
  std::vector<std::string> lines;
  auto process = Subprocess::spawn(argv, [&](std::string_view line) {
    std::lock_guard lock(mutex);
    lines.emplace_back(line);
  });
  EXPECT_TRUE(process) << process.error().message();
  if (!process) return {};
  EXPECT_EQ((*process)->wait(30s).value_or(-1), 0) << command;
  process->reset();
  return lines;
}

TEST_F(ClusterTest, KafkaClientsFindEachPartitionsLeaderAcrossAMove) {
  if (std::system("command -v kcat >/dev/null 2>&1") != 0) GTEST_SKIP() << "kcat is not installed";
  auto bootstrap = [&](int i) { return "127.0.0.1:" + std::to_string(kafka_ports_[i]); };
  auto produce = [&](int via, const std::string& prefix) {
    std::string input;
    for (int k = 0; k < 100; ++k) input += prefix + std::to_string(k) + ":v\\n";
    kcat({"-P", "-b", bootstrap(via), "-t", "orders", "-K:"}, input);
  };
  produce(0, "a");
  const auto metadata = kcat({"-L", "-b", bootstrap(1), "-t", "orders"});
  std::string listing;
  for (const auto& line : metadata) listing += line + "\n";
  EXPECT_NE(listing.find("3 brokers"), std::string::npos) << listing;
  Json before = status(0);
  const int controller = index_of(before.value("controller", ""));
  const int drained = (controller + 1) % kNodes;
  EXPECT_GT(change(controller, "drain", {{"node", "n" + std::to_string(drained)}}), 0);
  ASSERT_TRUE(wait_for([&] { return settled(controller); })) << status(controller).dump();
  produce(2, "b");
  std::map<int, std::vector<long>> offsets;
  for (const auto& line : kcat({"-C", "-b", bootstrap((drained + 1) % kNodes), "-t", "orders", "-e",
                                "-q", "-f", "%p %o\\n"})) {
    int partition = -1;
    long offset = -1;
    if (std::sscanf(line.c_str(), "%d %ld", &partition, &offset) == 2) {
      offsets[partition].push_back(offset);
    }
  }
  std::size_t total = 0;
  for (const auto& [partition, list] : offsets) {
    total += list.size();
    for (std::size_t o = 0; o < list.size(); ++o) {
      EXPECT_EQ(list[o], static_cast<long>(o)) << "partition " << partition;
    }
  }
  EXPECT_EQ(total, 200u);
  EXPECT_GT(offsets.size(), 1u) << "the keys spread over partitions";
}

}  // namespace
}  // namespace keel

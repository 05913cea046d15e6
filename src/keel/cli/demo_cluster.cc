#include <signal.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "keel/cli/demo.h"
#include "keel/node/client.h"
#include "keel/testing/local_etcd.h"
#include "keel/testing/subprocess.h"

namespace keel::cli {
namespace {

using Json = nlohmann::json;
using testing::Subprocess;

constexpr int kClients = 4;
constexpr int kStreams = 256;

int fail(const std::string& message) {
  std::fprintf(stderr, "keel demo (cluster): %s\n", message.c_str());
  return 1;
}

Json cluster_status(const std::string& url) {
  auto client = NodeClient::connect({.url = url, .timeout = 2s});
  if (!client) return Json::object();
  auto answer = (*client)->cluster();
  auto json = answer ? Json::parse(*answer, nullptr, false) : Json();
  return json.is_object() ? json : Json::object();
}

std::string slots_per_node(const Json& status) {
  std::string out;
  for (const auto& member : status.value("members", Json::array())) {
    if (!out.empty()) out += "  ";
    out += member.value("id", "?") + " " + std::to_string(member.value("slots", 0));
  }
  return out;
}

}  // namespace

int run_cluster_demo(const DemoOptions&) {
  std::printf(
      "\nSharding: three `keel node`s share 256 slots through a local etcd; a fourth joins and "
      "slots move to it while clients append\n");
  auto etcd = testing::LocalEtcd::start();
  if (!etcd) {
    return fail(etcd.error().message() + "\n(etcd comes from Debian's etcd-server package)");
  }
  std::error_code error;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
  if (error) return fail("cannot find this program's path: " + error.message());
  const auto dir =
      std::filesystem::temp_directory_path() / ("keel-demo-cluster-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  struct Cleanup {
    std::filesystem::path dir;
    ~Cleanup() { std::filesystem::remove_all(dir); }
  } cleanup{dir};

  std::array<std::unique_ptr<Subprocess>, 4> nodes;
  std::array<std::string, 4> urls;
  auto start = [&](int i) -> Status {
    auto port = testing::free_loopback_port();
    if (!port) return port.error();
    urls[i] = "http://127.0.0.1:" + std::to_string(*port);
    const std::string config = (dir / ("n" + std::to_string(i) + ".yaml")).string();
    std::ofstream(config) << "data_dir: " << (dir / ("data" + std::to_string(i))).string()
                          << "\nlisten: 127.0.0.1:" << *port
                          << "\ndurability: none\ncluster:\n  etcd: \"" << (*etcd)->endpoint()
                          << "\"\n  id: n" << i
                          << "\n  initial_nodes: 3\n  slot_count: 256\n  max_slots_per_move: 8\n";
    auto node = Subprocess::spawn_to_file({self, "--log-level", "warn", "node", "-c", config},
                                          (dir / ("n" + std::to_string(i) + ".log")).string());
    if (!node) return node.error();
    nodes[i] = std::move(*node);
    for (int tries = 0; tries < 300; ++tries) {
      if (cluster_status(urls[i]).contains("self")) return {};
      std::this_thread::sleep_for(50ms);
    }
    return Error(node::errc::unavailable, "node n" + std::to_string(i) + " did not start");
  };
  for (int i = 0; i < 3; ++i) {
    if (auto started = start(i); !started) return fail(started.error().message());
  }
  Json status = Json::object();
  for (int tries = 0; tries < 200 && status.value("epoch", 0) == 0; ++tries) {
    status = cluster_status(urls[0]);
    std::this_thread::sleep_for(50ms);
  }
  if (status.value("epoch", 0) == 0) return fail("the controller wrote no map");
  std::printf("  etcd %s; map epoch %d written by the controller %s: %s\n",
              (*etcd)->endpoint().c_str(), status.value("epoch", 0),
              status.value("controller", "?").c_str(), slots_per_node(status).c_str());

  // The clients: each starts at a different node and follows the 421s to each stream's owner.
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> appends{0}, failures{0};
  std::array<std::unique_ptr<NodeClient>, kClients> clients;
  std::array<std::array<std::uint64_t, kStreams>, kClients> acked{};
  for (int c = 0; c < kClients; ++c) {
    auto client = NodeClient::connect({.url = urls[c % 3], .timeout = 10s});
    if (!client) return fail(client.error().message());
    clients[c] = std::move(*client);
  }
  std::vector<std::thread> load;
  for (int c = 0; c < kClients; ++c) {
    load.emplace_back([&, c] {
      for (std::uint64_t i = 0; !stop; ++i) {
        const int s = static_cast<int>(i % kStreams);
        const std::string stream = "cart" + std::to_string(c) + "-" + std::to_string(s);
        std::uint64_t& version = acked[c][s];
        eventlog::EventData event{Uuid::random_v4(), "ItemAdded", R"({"sku":"A-1"})", ""};
        auto appended =
            clients[c]->append(stream,
                               version == 0 ? eventlog::ExpectedVersion::no_stream()
                                            : eventlog::ExpectedVersion::exact(version - 1),
                               {&event, 1});
        if (appended) {
          ++version;
          ++appends;
        } else {
          ++failures;
        }
        std::this_thread::sleep_for(1ms);
      }
    });
  }
  auto redirects = [&] {
    std::uint64_t n = 0;
    for (const auto& client : clients) n += client->redirects_followed();
    return n;
  };
  std::uint64_t last_appends = 0, last_redirects = 0;
  int last_epoch = status.value("epoch", 0);
  auto line = [&](int second, const char* note) {
    const Json now = cluster_status(urls[0]);
    const std::uint64_t a = appends.load(), r = redirects();
    std::string move = "-";
    if (now.contains("move") && now["move"].is_object()) {
      const Json& m = now["move"];
      move = "slots " + std::to_string(m.value("first", 0)) + "-" +
             std::to_string(m.value("last", 0)) + " " + m.value("from", "?") + "->" +
             m.value("to", "?") + " (" + m.value("phase", "?") + ")";
    }
    const int epoch = now.value("epoch", 0);
    std::printf(
        "  %2ds  appends/s %5llu  failed %llu  redirects %3llu  moves %2d  epoch %3d  %s%s\n",
        second, static_cast<unsigned long long>(a - last_appends),
        static_cast<unsigned long long>(failures.load()),
        static_cast<unsigned long long>(r - last_redirects), epoch - last_epoch, epoch,
        move == "-" ? "" : (move + "  ").c_str(), (slots_per_node(now) + note).c_str());
    last_epoch = epoch;
    last_appends = a;
    last_redirects = r;
  };
  int second = 0;
  for (; second < 2; ++second) {
    std::this_thread::sleep_for(1s);
    line(second + 1, "");
  }
  if (auto started = start(3); !started) {
    stop = true;
    for (auto& thread : load) thread.join();
    return fail(started.error().message());
  }
  std::this_thread::sleep_for(1s);
  line(++second, "   <- n3 joined, owns nothing yet");
  auto admin = NodeClient::connect({.url = urls[0], .timeout = 5s});
  auto goal =
      admin ? (*admin)->change_cluster("rebalance", "{}") : Result<std::string>(admin.error());
  if (!goal) {
    stop = true;
    for (auto& thread : load) thread.join();
    return fail("rebalance: " + goal.error().message());
  }
  const Json answer = Json::parse(*goal);
  std::printf("  $ keel ctl cluster rebalance -> %d slots to move, a few at a time\n",
              answer.value("slots_to_move", 0));
  const std::uint64_t revision = answer.value("revision", std::uint64_t{0});
  for (int waited = 0; waited < 30; ++waited) {
    std::this_thread::sleep_for(1s);
    line(++second, "");
    const Json now = cluster_status(urls[0]);
    if (now.value("revision", std::uint64_t{0}) >= revision && now.value("slots_to_move", 1) == 0 &&
        !(now.contains("move") && now["move"].is_object())) {
      break;
    }
  }
  std::this_thread::sleep_for(1s);
  line(++second, "   <- balanced");
  stop = true;
  for (auto& thread : load) thread.join();

  // Every stream, read back through the cluster: exactly the events acknowledged.
  std::uint64_t checked = 0, wrong = 0;
  for (int c = 0; c < kClients; ++c) {
    for (int s = 0; s < kStreams; ++s) {
      const std::string stream = "cart" + std::to_string(c) + "-" + std::to_string(s);
      auto page = clients[0]->read_stream(stream, 0, 1000);
      checked += acked[c][s];
      if (!page || page->events.size() != acked[c][s]) ++wrong;
    }
  }
  std::printf(
      "  %llu appends with expected versions, %llu failed; %llu events read back from %d "
      "streams, %llu streams wrong\n",
      static_cast<unsigned long long>(appends.load()),
      static_cast<unsigned long long>(failures.load()), static_cast<unsigned long long>(checked),
      kClients * kStreams, static_cast<unsigned long long>(wrong));
  for (auto& node : nodes) node->signal(SIGTERM);
  bool clean = true;
  for (auto& node : nodes) clean = node->wait(15s).value_or(-1) == 0 && clean;
  std::printf("  the four nodes stopped on SIGTERM%s\n", clean ? "" : " (not all cleanly)");
  return failures.load() == 0 && wrong == 0 && clean ? 0 : 1;
}

}  // namespace keel::cli

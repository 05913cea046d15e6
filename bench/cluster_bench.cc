// Load generator for bench/cluster.sh: appends through keel::NodeClient (which follows the
// cluster's 421 redirects and retries writes to a fenced slot) to a cluster of `keel node`s
// already running. Prints one JSON object of figures as its last stdout line.
//
//   cluster_bench --urls http://127.0.0.1:P1,... --clients C --streams S --size B
//                 --seconds T [--action rebalance|drain|move --body JSON]
//
// C client threads, each with its own NodeClient starting at urls[i % n], append one event of B
// bytes at a time to streams taken in turn from S (spread over every slot). The first second is
// warm-up; then T seconds "before". With --action, the change is then sent (POST
// /v1/cluster/ACTION with --body) and the load goes on until GET /v1/cluster says the map has
// reached the goal: that is "during". Figures: events/s and append latency p50/p99/max before
// and during, the ratio of the p99s, client failures and redirects followed, and the fences
// (phase fenced → flip) the controller reports.
#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "keel/node/client.h"

namespace {

using keel::bench::Wall;
using Json = nlohmann::json;
using namespace std::chrono_literals;

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

Json cluster_status(const std::string& url) {
  auto client = keel::NodeClient::connect({.url = url, .timeout = 5s});
  if (!client) return Json::object();
  auto answer = (*client)->cluster();
  if (!answer) return Json::object();
  auto json = Json::parse(*answer, nullptr, false);
  return json.is_object() ? json : Json::object();
}

struct Phase {
  std::vector<double> latencies_ms;
  std::uint64_t events = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Appends through NodeClient to a keel cluster, optionally during a rebalance"};
  std::string urls_text;
  int clients = 16;
  int streams = 1024;
  std::size_t size = 100;
  double seconds = 5;
  std::string action;
  std::string body = "{}";
  app.add_option("--urls", urls_text, "The nodes' API URLs, comma-separated")->required();
  app.add_option("--clients", clients)->check(CLI::Range(1, 1024));
  app.add_option("--streams", streams)->check(CLI::Range(1, 1000000));
  app.add_option("--size", size)->check(CLI::Range(1, 1 << 20));
  app.add_option("--seconds", seconds, "Of the load before the change");
  app.add_option("--action", action, "rebalance, drain or move, sent after --seconds")
      ->check(CLI::IsMember({"rebalance", "drain", "move"}));
  app.add_option("--body", body, "The action's JSON body");
  CLI11_PARSE(app, argc, argv);
  const std::vector<std::string> urls = split(urls_text);
  if (urls.empty()) {
    std::fprintf(stderr, "cluster_bench: --urls names no node\n");
    return 2;
  }

  // 0 warm-up, 1 before, 2 during, 3 stop.
  std::atomic<int> phase{0};
  std::atomic<std::uint64_t> failures{0}, redirects{0};
  std::mutex mutex;
  Phase measured[3];
  std::vector<std::thread> threads;
  const std::string payload = Json{{"p", std::string(size, 'x')}}.dump();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      auto client = keel::NodeClient::connect({.url = urls[c % urls.size()], .timeout = 30s});
      if (!client) {
        failures++;
        return;
      }
      Phase local[3];
      for (std::uint64_t i = 0;; ++i) {
        const int now = phase.load();
        if (now == 3) break;
        const std::string stream =
            "bench-" + std::to_string((i * clients + c) % static_cast<std::uint64_t>(streams));
        keel::eventlog::EventData event{keel::Uuid::random_v4(), "Tick", payload, ""};
        const auto start = Wall::now();
        auto appended =
            (*client)->append(stream, keel::eventlog::ExpectedVersion::any(), {&event, 1});
        const double ms = std::chrono::duration<double, std::milli>(Wall::now() - start).count();
        if (!appended) {
          failures++;
          if (failures.load() < 5) {
            std::fprintf(stderr, "cluster_bench: %s\n", appended.error().message().c_str());
          }
          continue;
        }
        local[now].latencies_ms.push_back(ms);
        local[now].events++;
      }
      redirects += (*client)->redirects_followed();
      std::lock_guard lock(mutex);
      for (int p = 0; p < 3; ++p) {
        measured[p].events += local[p].events;
        measured[p].latencies_ms.insert(measured[p].latencies_ms.end(),
                                        local[p].latencies_ms.begin(), local[p].latencies_ms.end());
      }
    });
  }
  std::this_thread::sleep_for(1s);
  phase = 1;
  auto before_start = Wall::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const double before_s = keel::bench::seconds_since(before_start);
  double during_s = 0;
  std::uint64_t slots_moved = 0;
  if (!action.empty()) {
    phase = 2;
    auto during_start = Wall::now();
    auto client = keel::NodeClient::connect({.url = urls[0], .timeout = 10s});
    auto changed = client ? (*client)->change_cluster(action, body)
                          : keel::Result<std::string>(client.error());
    if (!changed) {
      std::fprintf(stderr, "cluster_bench: %s: %s\n", action.c_str(),
                   changed.error().message().c_str());
    } else {
      const Json answer = Json::parse(*changed);
      slots_moved = answer.value("slots_to_move", 0);
      const std::uint64_t revision = answer.value("revision", std::uint64_t{0});
      for (;;) {
        Json status = cluster_status(urls[0]);
        if (status.value("revision", std::uint64_t{0}) >= revision &&
            status.value("slots_to_move", 1) == 0 && status["move"].is_null()) {
          break;
        }
        if (keel::bench::seconds_since(during_start) > 600) {
          std::fprintf(stderr, "cluster_bench: the change did not finish in 600 s\n");
          break;
        }
        std::this_thread::sleep_for(50ms);
      }
    }
    during_s = keel::bench::seconds_since(during_start);
  }
  phase = 3;
  for (auto& thread : threads) thread.join();

  std::map<std::string, double> figures;
  auto report = [&](Phase& p, const std::string& name, double s) {
    std::sort(p.latencies_ms.begin(), p.latencies_ms.end());
    figures[name + "_events_per_s"] = s > 0 ? static_cast<double>(p.events) / s : 0;
    figures[name + "_p50_ms"] = keel::bench::percentile(p.latencies_ms, 0.5);
    figures[name + "_p99_ms"] = keel::bench::percentile(p.latencies_ms, 0.99);
    figures[name + "_max_ms"] = p.latencies_ms.empty() ? 0 : p.latencies_ms.back();
  };
  report(measured[1], "before", before_s);
  if (!action.empty()) {
    report(measured[2], "during", during_s);
    figures["during_s"] = during_s;
    figures["slots_moved"] = static_cast<double>(slots_moved);
    figures["p99_during_vs_before_ratio"] =
        figures["before_p99_ms"] > 0 ? figures["during_p99_ms"] / figures["before_p99_ms"] : 0;
    for (const auto& url : urls) {
      Json status = cluster_status(url);
      if (status.contains("fences")) {
        figures["fence_count"] = status["fences"].value("count", 0);
        figures["fence_p50_ms"] = status["fences"].value("p50_ms", 0.0);
        figures["fence_p99_ms"] = status["fences"].value("p99_ms", 0.0);
        figures["fence_max_ms"] = status["fences"].value("max_ms", 0.0);
      }
    }
  }
  figures["failures"] = static_cast<double>(failures.load());
  figures["redirects"] = static_cast<double>(redirects.load());
  figures["clients"] = clients;
  figures["nodes"] = static_cast<double>(urls.size());
  keel::bench::print_figures_line(figures);
  return failures.load() == 0 ? 0 : 1;
}

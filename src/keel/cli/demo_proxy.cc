#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "keel/cli/demo.h"
#include "keel/proxy/server.h"
#include "keel/testing/scripted_server.h"

namespace keel::cli {
namespace {

using testing::Behaviour;
using testing::ScriptedServer;

struct Phase {
  const char* what;
  Behaviour a, b, c;
  int seconds;
};

// What the clients saw in one second.
struct Tally {
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::mutex mutex;
  std::map<std::string, int> by_reason;  // x-keel-reason of local replies
  std::map<std::string, int> by_upstream;
};

}  // namespace

int run_proxy_demo(const DemoOptions&) {
  std::printf(
      "\nAmbassador: keel proxy in front of three local upstreams (a, b, c); 8 clients keep "
      "asking\n  cluster: least_request, retry on another endpoint, per-try timeout 150 ms, "
      "outlier ejection after 3 gateway errors, circuit breaker at 50%% failures\n");
  ScriptedServer a("a"), b("b"), c("c");
  c.set_slow_delay(std::chrono::milliseconds(400));
  const std::string yaml =
      "access_log: false\n"
      "listeners:\n"
      "  - address: 127.0.0.1:0\n"
      "    routes: [{match: {prefix: /}, cluster: app, timeout_ms: 2000}]\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [{address: " +
      a.address() + "}, {address: " + b.address() + "}, {address: " + c.address() +
      "}]\n"
      "    load_balancer: {policy: least_request}\n"
      "    per_try_timeout_ms: 150\n"
      "    retry: {num_retries: 2, retry_on: \"gateway-error,connect-failure,reset\"}\n"
      "    retry_budget: {budget_ratio: 0.5}\n"
      "    endpoint_options: {panic_threshold_percent: 30}\n"
      "    outlier_detection: {consecutive_gateway_errors: 3, interval_ms: 500,\n"
      "                        base_ejection_time_ms: 3000, max_ejection_percent: 70}\n"
      "    circuit_breaker: {window_type: time_based, window_size: 2, minimum_calls: 20,\n"
      "                      failure_rate_threshold: 50, open_duration_ms: 1500}\n";
  auto config = proxy::parse_config(yaml, "demo");
  if (!config) {
    std::fprintf(stderr, "keel demo: %s\n", config.error().message().c_str());
    return 1;
  }
  SteadyClock clock;
  auto server = proxy::Server::start(std::move(*config), clock);
  if (!server) {
    std::fprintf(stderr, "keel demo: %s\n", server.error().message().c_str());
    return 1;
  }
  const std::uint16_t port = (*server)->listening().front().port;

  std::atomic<bool> done{false};
  std::atomic<Tally*> tally{new Tally()};
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      int fd = -1;
      std::string buffer;
      while (!done) {
        if (fd < 0) {
          fd = testing::connect_to(port);
          buffer.clear();
        }
        if (fd < 0 || !testing::send_all(fd, "GET /work HTTP/1.1\r\nHost: app\r\n\r\n")) {
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
          continue;
        }
        testing::Message response = testing::read_message(fd, buffer, true);
        Tally* t = tally.load();
        if (response.status() == 200) {
          ++t->ok;
          std::lock_guard lock(t->mutex);
          ++t->by_upstream[response.body];
        } else {
          ++t->failed;
          std::lock_guard lock(t->mutex);
          ++t->by_reason[response.header("x-keel-reason").empty()
                             ? std::to_string(response.status())
                             : response.header("x-keel-reason")];
        }
        if (!response.complete || response.header("connection") == "close") {
          ::close(fd);
          fd = -1;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // a few thousand a second
      }
      if (fd >= 0) ::close(fd);
    });
  }

  const std::vector<Phase> phases = {
      {"all healthy", Behaviour::kOk, Behaviour::kOk, Behaviour::kOk, 2},
      {"b fails (503)", Behaviour::kOk, Behaviour::kFail, Behaviour::kOk, 3},
      {"c slows down (400 ms)", Behaviour::kOk, Behaviour::kFail, Behaviour::kSlow, 3},
      {"everything fails", Behaviour::kFail, Behaviour::kFail, Behaviour::kFail, 3},
      {"all recover", Behaviour::kOk, Behaviour::kOk, Behaviour::kOk, 4},
  };
  std::printf("  %-24s %4s %6s %7s  %-26s %-10s %s\n", "phase", "s", "ok/s", "fail/s",
              "answered by (a/b/c)", "breaker", "local replies, endpoint state");
  std::uint64_t total_ok = 0, total_failed = 0;
  int second = 0;
  for (const auto& phase : phases) {
    a.set(phase.a);
    b.set(phase.b);
    c.set(phase.c);
    for (int s = 0; s < phase.seconds; ++s) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      std::unique_ptr<Tally> t(tally.exchange(new Tally()));
      auto clusters = nlohmann::json::parse((*server)->clusters_json());
      const auto& cluster = clusters[0];
      std::string endpoints;
      for (const auto& e : cluster["endpoints"]) {
        endpoints += std::to_string(e["ejections"].get<int>()) + " ";
      }
      std::string reasons;
      {
        std::lock_guard lock(t->mutex);
        for (const auto& [reason, count] : t->by_reason) {
          reasons += reason + "=" + std::to_string(count) + " ";
        }
      }
      std::lock_guard lock(t->mutex);
      std::printf("  %-24s %4d %6d %7d  %-26s %-10s %sejections a/b/c: %s| retries so far %d\n",
                  s == 0 ? phase.what : "", ++second, t->ok.load(), t->failed.load(),
                  (std::to_string(t->by_upstream["a"]) + "/" + std::to_string(t->by_upstream["b"]) +
                   "/" + std::to_string(t->by_upstream["c"]))
                      .c_str(),
                  cluster["breaker"].get<std::string>().c_str(), reasons.c_str(), endpoints.c_str(),
                  cluster["retries"].get<int>());
      std::fflush(stdout);
      total_ok += static_cast<std::uint64_t>(t->ok.load());
      total_failed += static_cast<std::uint64_t>(t->failed.load());
    }
  }
  done = true;
  for (auto& client : clients) client.join();
  delete tally.exchange(nullptr);
  (*server)->stop(1s);
  std::printf(
      "  clients got %llu answers and %llu errors (the errors: while every upstream failed; the "
      "open breaker made them fast)\n",
      static_cast<unsigned long long>(total_ok), static_cast<unsigned long long>(total_failed));
  return 0;
}

}  // namespace keel::cli

// `keel demo --console`: after the parts, a running system to watch in the console. A proxy
// in front of three upstreams (and a Strangler Fig route to a modern one) under a steady load,
// and a node taking orders that a slow consumer group works through (poison orders parked).
// Faults come in a cycle: one upstream fails, then all do, then one is slow. Runs until Ctrl-C.
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "keel/cli/demo.h"
#include "keel/cli/stop_signal.h"
#include "keel/core/random.h"
#include "keel/core/uuid.h"
#include "keel/cqrs/projection_runner.h"
#include "keel/cqrs/sqlite_read_model.h"
#include "keel/node/client.h"
#include "keel/node/node.h"
#include "keel/node/projection_reporter.h"
#include "keel/node/remote_store.h"
#include "keel/proxy/server.h"
#include "keel/testing/scripted_server.h"

namespace keel::cli {
namespace {

using testing::Behaviour;
using testing::ScriptedServer;

// An admin address: the one people expect when it is free, else any free port.
std::string admin_address(std::uint16_t wanted) {
  int fd = testing::connect_to(wanted);
  if (fd < 0) return "127.0.0.1:" + std::to_string(wanted);
  ::close(fd);
  return "127.0.0.1:0";
}

struct Phase {
  const char* what;
  Behaviour a, b, c;
  int seconds;
};

// The read side of the demo's orders: events counted by type.
cqrs::Projection order_counts() {
  return {.name = "order-counts",
          .filter = {.categories = {"order"}},
          .setup =
              [](cqrs::Transaction& tx) {
                return tx.exec(
                    "CREATE TABLE IF NOT EXISTS counts (type TEXT PRIMARY KEY, n BIGINT NOT NULL)");
              },
          .reset = [](cqrs::Transaction& tx) { return tx.exec("DELETE FROM counts"); },
          .apply =
              [](const eventlog::RecordedEvent& event, cqrs::Transaction& tx) {
                return tx.exec(
                    "INSERT INTO counts (type, n) VALUES ($1, 1) "
                    "ON CONFLICT (type) DO UPDATE SET n = counts.n + 1",
                    {event.type});
              },
          .on_error = cqrs::OnError::kSkip};
}

node::ProjectionReport counts_report(const cqrs::ProjectionRunner& runner, cqrs::ReadModel& model) {
  const cqrs::Progress progress = runner.progress();
  node::ProjectionReport report{.name = runner.projection().name,
                                .position = progress.position,
                                .applied = progress.applied,
                                .skipped = progress.skipped,
                                .live = progress.live,
                                .paused = progress.paused};
  if (auto rows = model.query("SELECT type, n FROM counts ORDER BY type")) {
    report.state = "{";
    for (const auto& row : *rows) {
      if (report.state.size() > 1) report.state += ',';
      report.state += '"' + cqrs::to_string(row[0]) + "\":" + cqrs::to_string(row[1]);
    }
    report.state += '}';
  }
  return report;
}

}  // namespace

int run_console_demo(const DemoOptions& options) {
  StopSignal stop;  // first: the threads started below inherit its signal mask
  // The consoles show what happens; the log would only repeat it between the phase lines.
  QuietLog quiet_pubsub("pubsub"), quiet_proxy("proxy"), quiet_node("node");
  ScriptedServer a("a"), b("b"), c("c"), modern("modern");
  c.set_slow_delay(std::chrono::milliseconds(300));
  const std::string yaml =
      "access_log: false\n"
      "admin: {address: \"" +
      admin_address(9901) +
      "\"}\n"
      "listeners:\n"
      "  - name: web\n"
      "    address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - {name: price, match: {prefix: /price}, timeout_ms: 2000,\n"
      "         migration: {legacy: app, modern: modern, stage: shadow}}\n"
      "      - {name: shop, match: {prefix: /}, cluster: app, timeout_ms: 2000}\n"
      "clusters:\n"
      "  - name: app\n"
      "    endpoints: [{address: " +
      a.address() + "}, {address: " + b.address() + "}, {address: " + c.address() +
      "}]\n"
      "    load_balancer: {policy: peak_ewma}\n"
      "    per_try_timeout_ms: 200\n"
      "    retry: {num_retries: 1, retry_on: \"gateway-error,connect-failure,reset\"}\n"
      "    endpoint_options: {panic_threshold_percent: 30}\n"
      "    outlier_detection: {consecutive_gateway_errors: 5, interval_ms: 1000,\n"
      "                        base_ejection_time_ms: 8000, max_ejection_percent: 34}\n"
      "    circuit_breaker: {window_type: time_based, window_size: 2, minimum_calls: 20,\n"
      "                      failure_rate_threshold: 50, open_duration_ms: 3000}\n"
      "  - name: modern\n"
      "    endpoints: [{address: " +
      modern.address() + "}]\n";
  auto config = proxy::parse_config(yaml, "demo");
  if (!config) {
    std::fprintf(stderr, "keel demo: %s\n", config.error().message().c_str());
    return 1;
  }
  SteadyClock clock;
  auto proxy_server = proxy::Server::start(std::move(*config), clock);
  if (!proxy_server) {
    std::fprintf(stderr, "keel demo: %s\n", proxy_server.error().message().c_str());
    return 1;
  }
  const std::uint16_t port = (*proxy_server)->listening().front().port;

  const std::string data_dir =
      (std::filesystem::temp_directory_path() / ("keel-demo-console-" + std::to_string(::getpid())))
          .string();
  node::NodeConfig node_config;
  node_config.data_dir = data_dir;
  node_config.listen = {"127.0.0.1", 0};
  auto node_admin = http::parse_host_port(admin_address(2114));
  node_config.admin = *node_admin;
  node_config.store.durability = eventlog::Durability::kInterval;
  auto node = node::Node::start(node_config, clock);
  if (!node) {
    std::fprintf(stderr, "keel demo: %s\n", node.error().message().c_str());
    return 1;
  }
  const std::string node_url = "http://" + (*node)->api().to_string();

  std::printf(
      "\nThe console, live: a proxy (three upstreams a, b, c; /price migrating to modern) and a "
      "node (orders, a slow consumer group, poison orders parked)\n"
      "  proxy console  http://%s/\n  node console   http://%s/\n"
      "Faults come in a cycle (a line each). Ctrl-C stops.\n",
      (*proxy_server)->admin()->to_string().c_str(), (*node)->admin()->to_string().c_str());

  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      while (!done) {
        int fd = testing::connect_to(port);
        if (fd >= 0) {
          const std::string path = i == 0 ? "/price/42" : "/cart/" + std::to_string(i);
          testing::send_all(fd,
                            "GET " + path + " HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
          std::string buffer;
          (void)testing::read_message(fd, buffer, true);
          ::close(fd);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    });
  }
  // Orders: 20 a second, one in 25 a poison order the shipping group parks.
  threads.emplace_back([&] {
    auto client = NodeClient::connect({.url = node_url});
    if (!client) return;
    Random random(options.seed);
    for (std::uint64_t n = 0; !done; ++n) {
      const std::string type = n % 25 == 24 ? "OrderPoisoned" : "OrderPlaced";
      const eventlog::EventData event{Uuid::random_v4(random), type,
                                      "{\"order\":" + std::to_string(n) + "}", ""};
      (void)(*client)->append("order-" + std::to_string(n % 50), eventlog::ExpectedVersion::any(),
                              std::span(&event, 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  threads.emplace_back([&] {
    auto client = NodeClient::connect({.url = node_url});
    if (!client) return;
    (void)(*client)->create_group("shipping", R"({"categories":["order"],"max_deliveries":2})");
    while (!done) {
      auto deliveries = (*client)->poll("shipping", "worker-1", 4, std::chrono::milliseconds(500));
      if (!deliveries) continue;
      for (const auto& d : *deliveries) {
        const std::uint64_t id = d.id;
        if (d.event.type == "OrderPoisoned") {
          (void)(*client)->nack("shipping", "worker-1", std::span(&id, 1),
                                pubsub::NackAction::kPark, "cannot ship a poisoned order");
        } else {
          (void)(*client)->ack("shipping", "worker-1", std::span(&id, 1));
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(250));  // slower than the orders
    }
  });

  // A projection of the orders in this process, as a CQRS read side would run: it counts them
  // by type into SQLite and reports its progress to the node (the node view's projections).
  auto remote = RemoteStore::open({.url = node_url}, clock);
  auto counts = remote ? cqrs::SqliteReadModel::open(data_dir + "/order-counts.db")
                       : Result<std::unique_ptr<cqrs::SqliteReadModel>>(remote.error());
  std::unique_ptr<cqrs::ProjectionRunner> projection;
  std::unique_ptr<ProjectionReporter> reporter;
  if (counts) {
    auto runner = cqrs::ProjectionRunner::open(**remote, **counts, order_counts(), clock);
    if (runner) {
      projection = std::move(*runner);
      projection->start();
      auto started = ProjectionReporter::start(
          {.url = node_url}, [&] { return counts_report(*projection, **counts); }, clock);
      if (started) reporter = std::move(*started);
    }
  }

  const Phase phases[] = {
      {"all upstreams healthy", Behaviour::kOk, Behaviour::kOk, Behaviour::kOk, 15},
      {"b fails: watch it get ejected", Behaviour::kOk, Behaviour::kFail, Behaviour::kOk, 15},
      {"all fail: the breaker opens", Behaviour::kFail, Behaviour::kFail, Behaviour::kFail, 8},
      {"recovered: half-open, then closed", Behaviour::kOk, Behaviour::kOk, Behaviour::kOk, 12},
      {"c slow (300 ms): peak_ewma moves load away", Behaviour::kOk, Behaviour::kOk,
       Behaviour::kSlow, 15}};
  for (std::size_t i = 0; !stop.stopping(); i = (i + 1) % std::size(phases)) {
    const Phase& phase = phases[i];
    a.set(phase.a);
    b.set(phase.b);
    c.set(phase.c);
    std::printf("  %s\n", phase.what);
    stop.wait_for(std::chrono::seconds(phase.seconds), [] { return false; });
  }
  done = true;
  for (auto& thread : threads) thread.join();
  if (reporter) reporter->stop();
  if (projection) projection->stop();
  (*proxy_server)->stop();
  (*node)->stop();
  std::filesystem::remove_all(data_dir);
  std::printf("stopped\n");
  return 0;
}

}  // namespace keel::cli

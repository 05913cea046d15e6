// `keel demo --only cqrs`: the orders example on an embedded event store. Commands append
// events; a projection keeps SQL tables current and a query waits for its own write; a consumer
// group of three "shipping" workers shares the order events, one worker dies holding some, and
// a poison event is parked; finally the read model is rebuilt from zero with a progress bar.
// Then the same over the network: a `keel node` process holds the events, the command side
// appends through keel::RemoteStore, and a second process (`keel orders-projection`) keeps its
// own SQLite read model from the node's events; each order is read back from it.

#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <optional>
#include <thread>

#include "keel/cli/demo.h"
#include "keel/cli/progress.h"
#include "keel/cli/stop_signal.h"
#include "keel/cqrs/sqlite_read_model.h"
#include "keel/node/client.h"
#include "keel/node/projection_reporter.h"
#include "keel/node/remote_store.h"
#include "keel/pubsub/consumer_group.h"
#include "keel/testing/subprocess.h"
#include "orders.h"

namespace keel::cli {
namespace {

template <typename T>
void show(const std::string& what, const Result<T>& result) {
  std::printf("  %-44s %s\n", what.c_str(),
              result ? "ok" : ("refused: " + result.error().message()).c_str());
}

// The positions the projection process reports ("at N"), for the demo to wait on.
struct Reported {
  std::mutex mutex;
  std::condition_variable changed;
  std::uint64_t at = 0;
  std::string last_line;
  // Until every event below `position` + 1 is in the read model, or `timeout`.
  bool wait_past(std::uint64_t position, Duration timeout) {
    std::unique_lock lock(mutex);
    return changed.wait_for(lock, timeout, [&] { return at > position; });
  }
};

// The second half: a node process, the projection as a process of its own, commands over HTTP.
int run_remote_part(const std::string& dir) {
  std::printf("\nthe same over the network: a keel node process, the projection in another:\n");
  std::error_code error;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
  Reported reported;  // before the children: their output goes to it until they are stopped
  DemoChild node;
  DemoChild projection;  // declared after the node: stopped first
  auto node_url = start_demo_node(dir, node);
  if (!node_url) {
    std::fprintf(stderr, "demo: %s\n", node_url.error().message().c_str());
    return 1;
  }
  const std::string& url = *node_url;
  std::printf("  keel node          pid %-7d %s (data in %s/node)\n", node.process->pid(),
              url.c_str(), dir.c_str());

  auto started = testing::Subprocess::spawn(
      {self, "--log-level", "warn", "orders-projection", "--node", url, "--db", dir + "/remote.db"},
      [&](std::string_view line) {
        std::lock_guard lock(reported.mutex);
        if (line.starts_with("at ")) {
          reported.at =
              std::max<std::uint64_t>(reported.at, std::stoull(std::string(line.substr(3))));
        } else {
          reported.last_line = std::string(line);
        }
        reported.changed.notify_all();
      });
  if (!started) {
    std::fprintf(stderr, "demo: keel orders-projection: %s\n", started.error().message().c_str());
    return 1;
  }
  projection.process = std::move(*started);
  std::printf("  orders-projection  pid %-7d %s -> %s/remote.db\n", projection.process->pid(),
              url.c_str(), dir.c_str());

  SteadyClock clock;
  auto remote = RemoteStore::open({.url = url}, clock);
  if (!remote) {
    std::fprintf(stderr, "demo: %s\n", remote.error().to_string().c_str());
    return 1;
  }
  orders::Shop shop(**remote);  // the command side, appending through the node's API
  show("add_stock tea 10 (over HTTP)", shop.add_stock({"tea", 10}));
  std::unique_ptr<cqrs::SqliteReadModel> model;  // the projection process's file, read here
  for (const orders::PlaceOrder& order : {orders::PlaceOrder{"B-1", "ada", {{"tea", 2, 450}}},
                                          orders::PlaceOrder{"B-2", "grace", {{"tea", 3, 450}}},
                                          orders::PlaceOrder{"B-3", "linus", {{"tea", 9, 450}}}}) {
    const std::string what = "place_order " + order.order_id + " for " + order.customer;
    auto placed = shop.place_order(order);
    if (!placed) {
      show(what, placed);
      continue;
    }
    // Read-your-writes across processes: the projection process says how far it is.
    const auto asked = std::chrono::steady_clock::now();
    if (!reported.wait_past(placed->position, 10s)) {
      std::lock_guard lock(reported.mutex);
      std::fprintf(stderr, "demo: the projection process did not catch up: %s\n",
                   reported.last_line.c_str());
      return 1;
    }
    const double waited =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - asked).count();
    if (!model) {
      auto opened = cqrs::SqliteReadModel::open(dir + "/remote.db");
      if (!opened) {
        std::fprintf(stderr, "demo: %s\n", opened.error().to_string().c_str());
        return 1;
      }
      model = std::move(*opened);
    }
    auto view = orders::find_order(*model, order.order_id);
    std::printf("  %-44s ok at position %llu; projection process has it after %.1f ms: %s %s\n",
                what.c_str(), static_cast<unsigned long long>(placed->position), waited,
                order.order_id.c_str(), view && *view ? (*view)->status.c_str() : "?");
  }
  model.reset();

  // The projection process reports its progress to the node every second: the node knows
  // where every read model is (its console shows the same).
  if (auto client = NodeClient::connect({.url = url})) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto listed = (*client)->projections();
      if (listed && listed->find("\"lag\":0,") != std::string::npos) break;
      std::this_thread::sleep_for(100ms);
    }
  }
  std::printf("\n$ keel ctl projections --node %s\n", url.c_str());
  auto listing = testing::Subprocess::spawn(
      {self, "ctl", "projections", "--node", url}, [](std::string_view line) {
        std::printf("  %.*s\n", static_cast<int>(line.size()), line.data());
      });
  if (listing) (*listing)->wait(10s);
  std::printf("  stopping the projection process and the node (SIGTERM)\n");
  return 0;
}

}  // namespace

int run_orders_projection(const std::string& node_url, const std::string& db_path) {
  StopSignal stop;  // first: the threads below inherit its signal mask
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  SteadyClock clock;
  auto node = RemoteStore::open({.url = node_url}, clock);
  auto model = cqrs::SqliteReadModel::open(db_path);
  if (!node || !model) {
    std::fprintf(stderr, "orders-projection: %s\n",
                 (!node ? node.error() : model.error()).to_string().c_str());
    return 1;
  }
  // A node keeps no $ streams for others: a failing event is skipped (and logged), not parked.
  auto runner = cqrs::ProjectionRunner::open(
      **node, **model, orders::projection(cqrs::OnError::kSkip), clock, {.retry_after = 200ms});
  if (!runner) {
    std::fprintf(stderr, "orders-projection: %s\n", runner.error().to_string().c_str());
    return 1;
  }
  (*runner)->start();
  // The node's console and GET /v1/projections show this projection through its reports.
  auto reporter = ProjectionReporter::start(
      {.url = node_url}, [&] { return orders::report(**runner, **model); }, clock);
  if (!reporter) {
    std::fprintf(stderr, "orders-projection: %s\n", reporter.error().to_string().c_str());
    return 1;
  }
  std::uint64_t shown = (*runner)->progress().position;
  std::printf("at %llu\n", static_cast<unsigned long long>(shown));
  while (!stop.stopping()) {
    // Wakes as soon as the position passes `shown`; otherwise looks at the signal again.
    (*runner)->wait_for(shown, 200ms);
    const std::uint64_t position = (*runner)->progress().position;
    if (position != shown) {
      shown = position;
      std::printf("at %llu\n", static_cast<unsigned long long>(shown));
    }
  }
  (*reporter)->stop();
  (*runner)->stop();
  return 0;
}

int run_cqrs_demo(const DemoOptions&) {
  std::printf("\n=== Publish/Subscribe and CQRS: orders on the event store ===\n");
  const std::string dir = (std::filesystem::temp_directory_path() / "keel-demo-cqrs").string();
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  SteadyClock clock;
  eventlog::StoreOptions store_options;
  store_options.durability = eventlog::Durability::kInterval;
  auto store = eventlog::EventStore::open(dir + "/events", store_options, clock);
  auto model = cqrs::SqliteReadModel::open(dir + "/read.db");
  if (!store || !model) {
    std::fprintf(stderr, "demo: %s\n",
                 (!store ? store.error() : model.error()).to_string().c_str());
    return 1;
  }
  // Small batches, so that the rebuild at the end shows its progress bar move.
  auto runner =
      cqrs::ProjectionRunner::open(**store, **model, orders::projection(), clock, {.batch = 8});
  if (!runner) {
    std::fprintf(stderr, "demo: %s\n", runner.error().to_string().c_str());
    return 1;
  }
  (*runner)->start();
  orders::Shop shop(**store);

  std::printf("\ncommands (the command side validates against the aggregates):\n");
  show("add_stock tea 10", shop.add_stock({"tea", 10}));
  show("add_stock cups 4", shop.add_stock({"cups", 4}));
  std::vector<orders::PlaceOrder> orders_to_place = {
      {"A-1", "ada", {{"tea", 2, 450}, {"cups", 1, 1200}}},
      {"A-2", "grace", {{"tea", 5, 450}}},
      {"A-3", "linus", {{"cups", 9, 1200}}},  // only 3 cups left: refused
      {"A-4", "ada", {{"tea", 1, 450}}},
      {"A-5", "poison", {{"tea", 1, 450}}},  // the shipping workers cannot handle this one
  };
  for (const auto& order : orders_to_place) {
    auto placed = shop.place_order(order);
    std::string what = "place_order " + order.order_id + " for " + order.customer;
    if (!placed) {
      show(what, placed);
      continue;
    }
    // Read-your-writes: wait until the projection has this order, then query the table.
    const bool seen = (*runner)->wait_for(placed->position, 5s);
    auto view = orders::find_order(**model, order.order_id);
    std::printf("  %-44s ok at position %llu; read model %s: %s %s %.2f\n", what.c_str(),
                static_cast<unsigned long long>(placed->position), seen ? "has it" : "lags",
                order.order_id.c_str(), view && *view ? (*view)->status.c_str() : "?",
                view && *view ? static_cast<double>((*view)->total_cents) / 100 : 0.0);
  }
  show("cancel_order A-2", shop.cancel_order({"A-2", "changed mind"}));
  show("cancel_order A-2 again", shop.cancel_order({"A-2", "twice"}));
  (*runner)->wait_for((*store)->next_position() - 1, 5s);
  std::printf("\nread model (SQLite %s/read.db), table inventory:\n", dir.c_str());
  if (auto stock = orders::inventory(**model)) {
    for (const auto& [sku, on_hand, reserved] : *stock)
      std::printf("  %-6s on hand %3lld  reserved %3lld\n", sku.c_str(),
                  static_cast<long long>(on_hand), static_cast<long long>(reserved));
  }

  std::printf(
      "\nconsumer group 'shipping' over category order (pinned by stream), three workers:\n");
  const QuietLog quiet("pubsub");  // the group's parking warning: shown below, as it happens
  auto group = pubsub::ConsumerGroup::open(**store,
                                           {.name = "shipping",
                                            .filter = {.categories = {"order"}},
                                            .strategy = pubsub::Strategy::kPinned,
                                            .ack_timeout = 2s,
                                            .max_deliveries = 3,
                                            .retry_backoff = 50ms},
                                           clock);
  if (!group) {
    std::fprintf(stderr, "demo: %s\n", group.error().to_string().c_str());
    return 1;
  }
  (*group)->start();
  std::mutex print;
  std::atomic<bool> done{false};
  std::vector<std::thread> workers;
  for (int w = 1; w <= 3; ++w) {
    auto member = (*group)->join("worker-" + std::to_string(w));
    if (!member) return 1;
    workers.emplace_back([&, w, member = std::move(*member)]() mutable {
      int handled = 0;
      while (!done) {
        for (const auto& d : member->wait(10, 100ms)) {
          std::lock_guard lock(print);
          if (w == 2 && handled++ == 1) {
            std::printf("  worker-2 dies holding %s (unacked: it goes to another worker)\n",
                        d.event.stream.c_str());
            member.reset();  // leaves without acking
            return;
          }
          if (d.event.data.find("\"poison\"") != std::string::npos) {
            std::printf("  worker-%d cannot ship %s %s (attempt %u): nack\n", w,
                        d.event.stream.c_str(), d.event.type.c_str(), d.attempt);
            (void)member->nack(d.id, pubsub::NackAction::kRetry, "no address for customer poison");
            continue;
          }
          std::printf("  worker-%d ships %-5s %-14s (attempt %u)\n", w, d.event.stream.c_str(),
                      d.event.type.c_str(), d.attempt);
          (void)member->ack(d.id);
        }
      }
    });
  }
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto stats = (*group)->stats();
    if (stats.parked >= 1 && stats.lag == 0 && stats.in_flight == 0) break;
    std::this_thread::sleep_for(50ms);
  }
  done = true;
  for (auto& worker : workers) worker.join();
  auto stats = (*group)->stats();
  std::printf(
      "  group: delivered %llu, acked %llu, nacked %llu, parked %llu, lag %llu\n",
      static_cast<unsigned long long>(stats.delivered),
      static_cast<unsigned long long>(stats.acked), static_cast<unsigned long long>(stats.nacked),
      static_cast<unsigned long long>(stats.parked), static_cast<unsigned long long>(stats.lag));
  if (auto parked = (*store)->read_stream((*group)->parked_stream(), 0, 10);
      parked && !parked->empty())
    std::printf("  %s: %s\n", (*group)->parked_stream().c_str(), parked->front().data.c_str());
  (*group)->stop();

  std::printf("\nrebuild the read model from zero:\n");
  (*runner)->stop();
  if (auto rebuilt = (*runner)->rebuild(); !rebuilt) {
    std::fprintf(stderr, "demo: %s\n", rebuilt.error().to_string().c_str());
    return 1;
  }
  // One line per batch that did something: the last step, which finds nothing left, would
  // print 100% a second time.
  for (;;) {
    auto stepped = (*runner)->step();
    if (!stepped || !*stepped) break;
    std::printf("  %s\n", progress_bar((*runner)->progress()).c_str());
  }
  auto view = orders::find_order(**model, "A-2");
  std::printf("  after the rebuild, order A-2 is %s\n",
              view && *view ? (*view)->status.c_str() : "missing");
  (void)(*store)->close();
  const int remote = run_remote_part(dir);
  std::filesystem::remove_all(dir);
  return remote;
}

}  // namespace keel::cli

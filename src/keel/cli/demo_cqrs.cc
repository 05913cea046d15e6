// `keel demo --only cqrs`: the orders example on an embedded event store. Commands append
// events; a projection keeps SQL tables current and a query waits for its own write; a consumer
// group of three "shipping" workers shares the order events, one worker dies holding some, and
// a poison event is parked; finally the read model is rebuilt from zero with a progress bar.

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <thread>

#include "keel/cli/demo.h"
#include "keel/cli/progress.h"
#include "keel/cqrs/sqlite_read_model.h"
#include "keel/pubsub/consumer_group.h"
#include "orders.h"

namespace keel::cli {
namespace {

template <typename T>
void show(const std::string& what, const Result<T>& result) {
  std::printf("  %-44s %s\n", what.c_str(),
              result ? "ok" : ("refused: " + result.error().message()).c_str());
}

}  // namespace

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
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace keel::cli

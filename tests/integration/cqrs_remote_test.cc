// CQRS against a real `keel node` process (started here on a temp dir and a free port): the
// orders domain's commands and its projection into SQLite, both through keel::RemoteStore.
// Concurrent orders over HTTP never oversell (conflicts are 409s, retried like local ones);
// read-your-writes works across the network; and a node killed with SIGKILL in the middle of a
// projection, then restarted, leaves a read model equal to one projected from the same data
// directory embedded — nothing lost, nothing applied twice. The projection reports its progress
// to the node (GET /v1/projections), and reports again once a killed node is back.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "keel/cqrs/sqlite_read_model.h"
#include "keel/eventlog/test_support.h"
#include "keel/node/client.h"
#include "keel/node/projection_reporter.h"
#include "keel/node/remote_store.h"
#include "keel/testing/subprocess.h"
#include "orders.h"
#include "orders_race.h"

namespace keel::cqrs {
namespace {

using keel::testing::Subprocess;

// Polls `done` every 10 ms until it holds or `timeout` passes: for conditions that have no
// signal of their own (another process's state).
template <typename Done>
bool eventually(Duration timeout, Done done) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

class CqrsRemoteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto port = keel::testing::free_loopback_port();
    ASSERT_TRUE(port.ok());
    port_ = *port;
    url_ = "http://127.0.0.1:" + std::to_string(port_);
    start_node();
    auto remote = RemoteStore::open({.url = url_, .timeout = 5s, .retry_after = 50ms}, clock_);
    ASSERT_TRUE(remote.ok()) << remote.error().to_string();
    remote_ = std::move(*remote);
  }
  void TearDown() override {
    remote_.reset();
    stop_node();
  }

  void start_node() {
    auto node = Subprocess::spawn_to_file(
        {KEEL_BINARY, "--log-level", "warn", "node", "--data-dir", dir_.path() + "/node",
         "--listen", "127.0.0.1:" + std::to_string(port_), "--durability", "every_commit"},
        dir_.path() + "/node.log");
    ASSERT_TRUE(node.ok()) << node.error().message();
    node_ = std::move(*node);
    auto ready = keel::testing::wait_until_ready(*node_, 30s, [&] {
      auto client = NodeClient::connect({.url = url_, .timeout = 1s});
      return client.ok() && (*client)->next_position().ok();
    });
    ASSERT_EQ(ready, keel::testing::Readiness::kReady)
        << keel::testing::file_tail(dir_.path() + "/node.log", 2000);
  }
  void stop_node(int signal = SIGTERM) {
    if (!node_) return;
    node_->signal(signal);
    EXPECT_TRUE(node_->wait(30s).has_value());
    node_.reset();
  }

  std::unique_ptr<ReadModel> open_model(const std::string& name) {
    auto model = SqliteReadModel::open(dir_.path() + "/" + name + ".db");
    EXPECT_TRUE(model.ok()) << model.error().to_string();
    return model.ok() ? std::move(*model) : nullptr;
  }
  std::unique_ptr<ProjectionRunner> remote_runner(ReadModel& model,
                                                  Projection projection = orders::projection()) {
    auto opened = ProjectionRunner::open(*remote_, model, std::move(projection), clock_,
                                         {.batch = 25, .retry_after = 50ms});
    EXPECT_TRUE(opened.ok()) << opened.error().to_string();
    return opened.ok() ? std::move(*opened) : nullptr;
  }
  std::uint64_t head() {
    auto head = remote_->head();
    EXPECT_TRUE(head.ok()) << head.error().to_string();
    return head.ok() ? *head : 0;
  }
  // Stock for 10 products and `count` orders of one to three lines, every tenth cancelled.
  void place_orders(orders::Shop& shop, int first, int count) {
    if (first == 0) {
      for (int sku = 0; sku < 10; ++sku)
        ASSERT_TRUE(shop.add_stock({"sku-" + std::to_string(sku), 1000}).ok());
    }
    for (int i = first; i < first + count; ++i) {
      orders::PlaceOrder order{"o" + std::to_string(i), "customer-" + std::to_string(i % 17), {}};
      for (int line = 0; line <= i % 3; ++line)
        order.lines.push_back({"sku-" + std::to_string((i + line) % 10), 1 + i % 4, 100 + i});
      auto placed = shop.place_order(order);
      ASSERT_TRUE(placed.ok()) << placed.error().to_string();
      if (i % 10 == 9) {
        ASSERT_TRUE(shop.cancel_order({order.order_id, "changed my mind"}).ok());
      }
    }
  }
  // The node's data directory opened embedded (the node stopped) and projected from zero.
  std::vector<std::string> projected_embedded() {
    eventlog::StoreOptions options;
    options.durability = eventlog::Durability::kNone;
    auto store = eventlog::EventStore::open(dir_.path() + "/node", options, clock_);
    EXPECT_TRUE(store.ok()) << store.error().to_string();
    if (!store.ok()) return {};
    auto model = open_model("embedded");
    auto runner = ProjectionRunner::open(**store, *model, orders::projection(), clock_);
    EXPECT_TRUE(runner.ok());
    EXPECT_TRUE((*runner)->catch_up().ok());
    auto rows = orders::dump(*model);
    EXPECT_TRUE(rows.ok());
    runner->reset();
    EXPECT_TRUE((*store)->close().ok());
    return rows.ok() ? *rows : std::vector<std::string>{};
  }

  eventlog::testing::TempDir dir_;
  SteadyClock clock_;
  int port_ = 0;
  std::string url_;
  std::unique_ptr<Subprocess> node_;
  std::unique_ptr<RemoteStore> remote_;
};

TEST_F(CqrsRemoteTest, ConcurrentOrdersOverTheNetworkNeverOversellAndReadTheirWrites) {
  orders::Shop shop(*remote_);
  const orders::RaceResult race = orders::race_for_scarce_stock(shop);
  EXPECT_EQ(race.accepted, 40);
  EXPECT_EQ(race.refused, 60);

  auto model = open_model("read");
  auto projection = remote_runner(*model);
  projection->start();
  ASSERT_TRUE(projection->wait_for(head() - 1, 30s));
  auto stock = orders::inventory(*model);
  ASSERT_TRUE(stock.ok());
  ASSERT_EQ(stock->size(), 1u);
  EXPECT_EQ((*stock)[0], std::make_tuple(std::string("rare"), std::int64_t{40}, std::int64_t{40}));

  // Read-your-writes: the runner is woken by the node's commit feed, not by a poll.
  ASSERT_TRUE(shop.add_stock({"tea", 3}).ok());
  auto placed = shop.place_order({"t1", "ada", {{"tea", 2, 450}}});
  ASSERT_TRUE(placed.ok()) << placed.error().to_string();
  ASSERT_TRUE(projection->wait_for(placed->position, 10s));
  auto order = orders::find_order(*model, "t1");
  ASSERT_TRUE(order.ok() && order->has_value());
  EXPECT_EQ((*order)->status, "placed");
  EXPECT_EQ((*order)->total_cents, 900);

  // The projection's reports: the node shows its position, no lag, and its state.
  auto reporter = ProjectionReporter::start(
      {.url = url_}, [&] { return orders::report(*projection, *model); }, clock_, 50ms);
  ASSERT_TRUE(reporter.ok()) << reporter.error().to_string();
  auto client = NodeClient::connect({.url = url_});
  ASSERT_TRUE(client.ok());
  nlohmann::json shown;
  ASSERT_TRUE(eventually(10s, [&] {
    auto listed = (*client)->projections();
    if (!listed) return false;
    shown = nlohmann::json::parse(*listed);
    // Caught up and says so: the runner marks itself live at its look after the last batch.
    return shown["projections"].size() == 1 && shown["projections"][0]["lag"] == 0 &&
           shown["projections"][0]["live"] == true;
  })) << shown.dump();
  const nlohmann::json& p = shown["projections"][0];
  EXPECT_EQ(p["name"], "orders");
  EXPECT_EQ(p["position"], head());
  EXPECT_EQ(p["live"], true);
  EXPECT_EQ(p["error"], nullptr);
  EXPECT_EQ(p["interval_ms"], 50);
  EXPECT_EQ(p["state"]["placed"]["orders"], 41) << p.dump();
  EXPECT_EQ(p["state"]["placed"]["total_cents"], 40 + 900) << p.dump();
  (*reporter)->stop();
  EXPECT_GT((*reporter)->sent(), 0u);
  projection->stop();

  // A node takes no appends to $ streams, so parking is refused up front.
  auto parking =
      ProjectionRunner::open(*remote_, *model, orders::projection(OnError::kPark), clock_);
  ASSERT_FALSE(parking.ok());
  EXPECT_TRUE(parking.error().is(errc::invalid_argument)) << parking.error().to_string();
}

TEST_F(CqrsRemoteTest, ANodeKilledMidProjectionLosesAndDuplicatesNothing) {
  orders::Shop shop(*remote_);
  place_orders(shop, 0, 150);

  // The 100th event applied holds the runner inside its batch while the node is killed.
  std::mutex mutex;
  std::condition_variable changed;
  bool reached = false, released = false;
  Projection held = orders::projection();
  held.apply = [&, inner = held.apply, applied = 0](const RecordedEvent& e,
                                                    Transaction& tx) mutable {
    if (++applied == 100) {
      std::unique_lock lock(mutex);
      reached = true;
      changed.notify_all();
      changed.wait(lock, [&] { return released; });
    }
    return inner(e, tx);
  };
  auto model = open_model("read");
  auto projection = remote_runner(*model, held);
  projection->start();
  auto reporter = ProjectionReporter::start(
      {.url = url_}, [&] { return orders::report(*projection, *model); }, clock_, 50ms);
  ASSERT_TRUE(reporter.ok()) << reporter.error().to_string();
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, 30s, [&] { return reached; }));
  }
  stop_node(SIGKILL);
  {
    std::lock_guard lock(mutex);
    released = true;
    changed.notify_all();
  }
  // The runner's next read finds no node: an error it retries, never a skipped batch.
  ASSERT_TRUE(eventually(30s, [&] { return projection->progress().error.has_value(); }));
  EXPECT_LT(projection->progress().position, 300u);
  start_node();
  place_orders(shop, 150, 20);  // more after the restart, through the same RemoteStore
  const std::uint64_t last = head() - 1;
  ASSERT_TRUE(projection->wait_for(last, 60s)) << "at " << projection->progress().position;
  EXPECT_FALSE(projection->progress().error.has_value());
  // The reports failed while the node was down, and the restarted node (which keeps reports in
  // memory only) has the projection again, caught up.
  EXPECT_GT((*reporter)->failed(), 0u);
  auto client = NodeClient::connect({.url = url_});
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(eventually(10s, [&] {
    auto listed = (*client)->projections();
    if (!listed) return false;
    const auto shown = nlohmann::json::parse(*listed);
    return shown["projections"].size() == 1 && shown["projections"][0]["position"] == last + 1;
  }));
  (*reporter)->stop();
  projection->stop();
  auto remote_rows = orders::dump(*model);
  ASSERT_TRUE(remote_rows.ok());

  remote_.reset();
  stop_node();
  const std::vector<std::string> embedded_rows = projected_embedded();
  EXPECT_GT(embedded_rows.size(), 400u);
  EXPECT_EQ(*remote_rows, embedded_rows);
}

}  // namespace
}  // namespace keel::cqrs

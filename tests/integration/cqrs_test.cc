// CQRS end to end on both read-model backends: the orders domain's commands, its projection
// into SQLite and into a real PostgreSQL (started here), read-your-writes, concurrent
// commands, and a projection killed mid-batch whose read model must equal a rebuild.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <thread>

#include "keel/core/random.h"
#include "keel/cqrs/postgres_read_model.h"
#include "keel/cqrs/sqlite_read_model.h"
#include "keel/eventlog/test_support.h"
#include "keel/testing/local_postgres.h"
#include "orders.h"
#include "orders_race.h"

namespace keel::cqrs {
namespace {

using keel::testing::LocalPostgres;

using eventlog::EventStore;

enum class Backend { kSqlite, kPostgres };

class CqrsTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void SetUpTestSuite() {
    auto pg = LocalPostgres::start({.settings = {"fsync=off"}});
    ASSERT_TRUE(pg.ok()) << pg.error().to_string();
    postgres_ = std::move(*pg).release();
  }
  static void TearDownTestSuite() {
    delete postgres_;
    postgres_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(postgres_, nullptr);
    open_store();
    model_ = open_model("main");
    ASSERT_NE(model_, nullptr);
  }
  void open_store() {
    eventlog::StoreOptions options;
    options.segment_bytes = 4 << 20;
    options.durability = eventlog::Durability::kNone;
    auto store = EventStore::open(dir_.path() + "/events", options, clock_);
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    store_ = std::move(*store);
  }
  // A read model of its own for each test and name: a SQLite file, or a PostgreSQL schema.
  std::unique_ptr<ReadModel> open_model(const std::string& name) {
    if (GetParam() == Backend::kSqlite) {
      auto model = SqliteReadModel::open(dir_.path() + "/" + name + ".db");
      EXPECT_TRUE(model.ok()) << model.error().to_string();
      return model.ok() ? std::move(*model) : nullptr;
    }
    const std::string schema =
        "t" + std::to_string(::getpid()) + "_" + std::to_string(++schemas_) + "_" + name;
    schema_of_[name] = schema;
    auto admin = PostgresReadModel::connect({postgres_->conninfo()});
    EXPECT_TRUE(admin.ok()) << admin.error().to_string();
    EXPECT_TRUE((*admin)->query("CREATE SCHEMA " + schema).ok());
    auto model = PostgresReadModel::connect(
        {postgres_->conninfo() + " options='-c search_path=" + schema + "'"});
    EXPECT_TRUE(model.ok()) << model.error().to_string();
    return model.ok() ? std::move(*model) : nullptr;
  }
  std::unique_ptr<ReadModel> reopen_model(const std::string& name) {
    if (GetParam() == Backend::kSqlite) return open_model(name);
    auto model = PostgresReadModel::connect(
        {postgres_->conninfo() + " options='-c search_path=" + schema_of_.at(name) + "'"});
    EXPECT_TRUE(model.ok());
    return model.ok() ? std::move(*model) : nullptr;
  }
  std::unique_ptr<ProjectionRunner> runner(ReadModel& model, RunnerOptions options = {}) {
    auto opened = ProjectionRunner::open(*store_, model, orders::projection(), clock_, options);
    EXPECT_TRUE(opened.ok()) << opened.error().to_string();
    return opened.ok() ? std::move(*opened) : nullptr;
  }
  // Stock for 10 products and `count` orders of one to three lines.
  void place_orders(orders::Shop& shop, int count) {
    for (int sku = 0; sku < 10; ++sku)
      ASSERT_TRUE(shop.add_stock({"sku-" + std::to_string(sku), 1000}).ok());
    for (int i = 0; i < count; ++i) {
      orders::PlaceOrder order{"o" + std::to_string(i), "customer-" + std::to_string(i % 17), {}};
      for (int line = 0; line <= i % 3; ++line)
        order.lines.push_back({"sku-" + std::to_string((i + line) % 10), 1 + i % 4, 100 + i});
      ASSERT_TRUE(shop.place_order(order).ok());
      if (i % 10 == 9) {
        ASSERT_TRUE(shop.cancel_order({order.order_id, "changed my mind"}).ok());
      }
    }
  }

  static LocalPostgres* postgres_;
  static int schemas_;
  eventlog::testing::TempDir dir_;
  SteadyClock clock_;
  std::unique_ptr<EventStore> store_;
  std::unique_ptr<ReadModel> model_;
  std::map<std::string, std::string> schema_of_;
};

LocalPostgres* CqrsTest::postgres_ = nullptr;
int CqrsTest::schemas_ = 0;

TEST_P(CqrsTest, CommandsValidateAndTheProjectionAnswersQueriesWithItsOwnWrites) {
  orders::Shop shop(*store_);
  auto projection = runner(*model_);
  projection->start();
  ASSERT_TRUE(shop.add_stock({"apple", 5}).ok());
  auto placed = shop.place_order({"o1", "ada", {{"apple", 3, 50}}});
  ASSERT_TRUE(placed.ok()) << placed.error().to_string();
  ASSERT_TRUE(projection->wait_for(placed->position, 10s));
  auto order = orders::find_order(*model_, "o1");
  ASSERT_TRUE(order.ok() && order->has_value())
      << (order.ok() ? "missing" : order.error().to_string());
  EXPECT_EQ((*order)->status, "placed");
  EXPECT_EQ((*order)->total_cents, 150);

  auto too_many = shop.place_order({"o2", "bob", {{"apple", 3, 50}}});
  ASSERT_FALSE(too_many.ok());
  EXPECT_TRUE(too_many.error().is(errc::rejected));
  EXPECT_EQ(too_many.error().message(), "order o2: apple has 2 available, not 3");
  EXPECT_TRUE(shop.place_order({"o3", "bob", {}}).error().is(errc::rejected));
  EXPECT_TRUE(shop.place_order({"o1", "ada", {{"apple", 1, 50}}}).error().is(errc::rejected));

  auto cancelled = shop.cancel_order({"o1", "wrong size"});
  ASSERT_TRUE(cancelled.ok());
  ASSERT_TRUE(projection->wait_for(store_->next_position() - 1, 10s));
  EXPECT_EQ((*orders::find_order(*model_, "o1"))->status, "cancelled");
  auto stock = orders::inventory(*model_);
  ASSERT_TRUE(stock.ok());
  ASSERT_EQ(stock->size(), 1u);
  EXPECT_EQ((*stock)[0], std::make_tuple(std::string("apple"), std::int64_t{5}, std::int64_t{0}));
  projection->stop();
}

TEST_P(CqrsTest, ConcurrentOrdersNeverOversellStock) {
  orders::Shop shop(*store_);
  const orders::RaceResult race = orders::race_for_scarce_stock(shop);
  EXPECT_EQ(race.accepted, 40);
  EXPECT_EQ(race.refused, 60);
  auto projection = runner(*model_);
  ASSERT_TRUE(projection->catch_up().ok());
  auto stock = orders::inventory(*model_);
  ASSERT_TRUE(stock.ok());
  EXPECT_EQ((*stock)[0], std::make_tuple(std::string("rare"), std::int64_t{40}, std::int64_t{40}));
}

TEST_P(CqrsTest, AProjectionKilledMidBatchResumesToTheSameReadModelAsARebuild) {
  {
    orders::Shop shop(*store_);
    place_orders(shop, 200);
  }
  const std::uint64_t head = store_->next_position();
  ASSERT_TRUE(store_->close().ok());
  store_.reset();
  model_.reset();

  // The child applies 250 events in batches of 100 and is SIGKILLed inside the third batch.
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    open_store();
    auto model = reopen_model("main");
    Projection doomed = orders::projection();
    int applied = 0;
    doomed.apply = [inner = doomed.apply, &applied](const RecordedEvent& e, Transaction& tx) {
      if (++applied == 250) ::raise(SIGKILL);
      return inner(e, tx);
    };
    auto runner_ = ProjectionRunner::open(*store_, *model, doomed, clock_, {.batch = 100});
    Status ran = runner_ ? (*runner_)->catch_up() : Status(runner_.error());
    std::fprintf(stderr, "child: not killed: %s\n",
                 ran ? "caught up" : ran.error().to_string().c_str());
    ::_exit(3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child status " << status;

  open_store();
  model_ = reopen_model("main");
  auto rows = model_->query("SELECT position FROM keel_projections WHERE name = 'orders'");
  ASSERT_TRUE(rows.ok()) << rows.error().to_string();
  ASSERT_EQ(rows->size(), 1u);
  const std::int64_t saved = as_int(rows->front()[0]);
  EXPECT_GT(saved, 0);                                // two batches were committed …
  EXPECT_LT(saved, static_cast<std::int64_t>(head));  // … and the third was not
  auto resumed = runner(*model_, {.batch = 100});
  ASSERT_TRUE(resumed->catch_up().ok());
  EXPECT_EQ(resumed->progress().position, head);

  auto fresh_model = open_model("fresh");
  auto fresh = runner(*fresh_model, {.batch = 37});
  ASSERT_TRUE(fresh->catch_up().ok());
  auto crashed_rows = orders::dump(*model_);
  auto fresh_rows = orders::dump(*fresh_model);
  ASSERT_TRUE(crashed_rows.ok() && fresh_rows.ok());
  EXPECT_GT(fresh_rows->size(), 400u);
  EXPECT_EQ(*crashed_rows, *fresh_rows);
}

TEST_P(CqrsTest, AStatementTheDatabaseRefusesBlamesItsOwnEvent) {
  // The statement for "Bad" breaks a constraint; PostgreSQL reports it only when the pipeline
  // is read, while later events are being applied. Exactly that event must be skipped.
  Projection ledger{.name = "ledger",
                    .filter = {.categories = {"acct"}},
                    .setup =
                        [](Transaction& tx) {
                          return tx.exec(
                              "CREATE TABLE IF NOT EXISTS ledger (position BIGINT PRIMARY KEY, "
                              "amount BIGINT NOT NULL CHECK (amount >= 0))");
                        },
                    .apply =
                        [](const RecordedEvent& e, Transaction& tx) {
                          return tx.exec("INSERT INTO ledger (position, amount) VALUES ($1, $2)",
                                         {static_cast<std::int64_t>(e.position),
                                          std::int64_t{e.type == "Bad" ? -1 : 1}});
                        },
                    .on_error = OnError::kSkip};
  Random random(3);
  for (int i = 0; i < 400; ++i) {  // past the pipeline's depth (256): read back mid-batch
    ASSERT_TRUE(
        store_
            ->append("acct-1", eventlog::ExpectedVersion::any(),
                     {eventlog::testing::make_event(random, i == 17 ? "Bad" : "Good", "{}")})
            .ok());
  }
  auto opened = ProjectionRunner::open(*store_, *model_, ledger, clock_, {.batch = 1000});
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  ASSERT_TRUE((*opened)->catch_up().ok());
  EXPECT_EQ((*opened)->progress().skipped, 1u);
  EXPECT_EQ((*opened)->progress().applied, 399u);
  auto rows = model_->query("SELECT COUNT(*), MIN(position) FROM ledger WHERE position = 17");
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(as_int((*rows)[0][0]), 0);
  auto all = model_->query("SELECT COUNT(*) FROM ledger");
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(as_int((*all)[0][0]), 399);
}

INSTANTIATE_TEST_SUITE_P(Backends, CqrsTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& test) {
                           return test.param == Backend::kSqlite ? "Sqlite" : "Postgres";
                         });

}  // namespace
}  // namespace keel::cqrs

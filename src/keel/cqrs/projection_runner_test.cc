#include "keel/cqrs/projection_runner.h"

#include <gtest/gtest.h>

#include "keel/cqrs/errc.h"
#include "keel/cqrs/sqlite_read_model.h"
#include "keel/pubsub/test_support.h"

namespace keel::cqrs {
namespace {

// A projection that counts events per stream and sums their "n" field; it fails on an event
// of type "Bad".
Projection counting(OnError on_error = OnError::kStop) {
  return {.name = "counts",
          .filter = {.categories = {"acct"}},
          .setup =
              [](Transaction& tx) {
                return tx.exec(
                    "CREATE TABLE IF NOT EXISTS counts (stream TEXT PRIMARY KEY, events BIGINT, "
                    "total BIGINT)");
              },
          .reset = [](Transaction& tx) { return tx.exec("DELETE FROM counts"); },
          .apply = [](const RecordedEvent& e, Transaction& tx) -> Status {
            if (e.type == "Bad") return Error(errc::invalid_argument, "cannot apply a Bad event");
            if (e.type == "Throws") throw std::runtime_error("boom");
            return tx.exec(
                "INSERT INTO counts (stream, events, total) VALUES ($1, 1, $2) "
                "ON CONFLICT (stream) DO UPDATE SET events = counts.events + 1, total = "
                "counts.total + excluded.total",
                {e.stream, static_cast<std::int64_t>(e.data.size())});
          },
          .on_error = on_error};
}

// A log that fails two calls in five (heads and reads alike), as a node going up and down does,
// and cannot park.
class FlakyLog final : public pubsub::LogSource {
 public:
  explicit FlakyLog(EventStore& store) : embedded_(store) {}
  Result<pubsub::LogPage> read(std::uint64_t from, const pubsub::Filter& filter,
                               std::size_t max) override {
    if (fails()) return Error(errc::database, "the node is down (read)");
    return embedded_.read(from, filter, max);
  }
  Result<std::uint64_t> head() override {
    if (fails()) return Error(errc::database, "the node is down (head)");
    return embedded_.head();
  }
  std::uint64_t known_head() const override { return embedded_.known_head(); }
  std::uint64_t add_commit_listener(std::function<void(std::uint64_t)> listener) override {
    return embedded_.add_commit_listener(std::move(listener));
  }
  void remove_commit_listener(std::uint64_t id) override { embedded_.remove_commit_listener(id); }
  bool can_park() const override { return false; }
  Status park(std::string_view, const RecordedEvent&, std::string_view) override {
    return Error(errc::invalid_argument, "cannot park");
  }
  std::string describe() const override { return "a flaky log"; }
  int failures = 0;

 private:
  bool fails() {
    const int call = calls_++ % 5;
    if (call != 0 && call != 2) return false;
    ++failures;
    return true;
  }
  pubsub::EmbeddedLog embedded_;
  int calls_ = 0;
};

class ProjectionRunnerTest : public pubsub::testing::StoreFixture {
 protected:
  void SetUp() override {
    StoreFixture::SetUp();
    auto model = SqliteReadModel::open(dir_.path() + "/read.db");
    ASSERT_TRUE(model.ok()) << model.error().to_string();
    model_ = std::move(*model);
  }
  std::unique_ptr<ProjectionRunner> runner(Projection projection, RunnerOptions options = {}) {
    auto opened = ProjectionRunner::open(*store_, *model_, std::move(projection), clock_, options);
    EXPECT_TRUE(opened.ok()) << opened.error().to_string();
    return opened.ok() ? std::move(*opened) : nullptr;
  }
  std::int64_t events_of(const std::string& stream) {
    auto rows = model_->query("SELECT events FROM counts WHERE stream = $1", {stream});
    EXPECT_TRUE(rows.ok());
    return rows.ok() && !rows->empty() ? as_int(rows->front()[0]) : 0;
  }
  std::int64_t saved_checkpoint() {
    auto rows = model_->query("SELECT position FROM keel_projections WHERE name = 'counts'");
    EXPECT_TRUE(rows.ok());
    return rows.ok() && !rows->empty() ? as_int(rows->front()[0]) : -1;
  }
  std::unique_ptr<SqliteReadModel> model_;
};

TEST_F(ProjectionRunnerTest, AppliesInBatchesAndResumesFromItsCheckpoint) {
  for (int i = 0; i < 25; ++i) append(i % 2 ? "acct-1" : "acct-2", "Deposited", "xx");
  append("other-1");
  {
    auto counts = runner(counting(), {.batch = 10});
    ASSERT_TRUE(counts->catch_up().ok());
    EXPECT_EQ(counts->progress().applied, 25u);
    EXPECT_EQ(counts->progress().position, 26u);
  }
  EXPECT_EQ(events_of("acct-1"), 12);
  EXPECT_EQ(events_of("acct-2"), 13);
  EXPECT_EQ(saved_checkpoint(), 26);
  for (int i = 0; i < 5; ++i) append("acct-1", "Deposited", "x");
  auto counts = runner(counting(), {.batch = 10});
  ASSERT_TRUE(counts->catch_up().ok());
  EXPECT_EQ(counts->progress().applied, 5u);  // only the new ones: nothing applied twice
  EXPECT_EQ(events_of("acct-1"), 17);
  metrics::Registry registry;
  auto exported = counts->export_metrics(registry);
  const std::string text = registry.render_prometheus();
  EXPECT_NE(text.find("keel_projection_position{projection=\"counts\"} 31"), std::string::npos)
      << text;
  EXPECT_NE(text.find("keel_projection_lag_events{projection=\"counts\"} 0"), std::string::npos)
      << text;
}

TEST_F(ProjectionRunnerTest, StopPolicyKeepsWhatCameBeforeAndStopsAtTheBadEvent) {
  for (int i = 0; i < 4; ++i) append("acct-1");
  const std::uint64_t bad = append("acct-1", "Bad");
  append("acct-1");
  auto counts = runner(counting(OnError::kStop));
  auto stepped = counts->step();
  ASSERT_FALSE(stepped.ok());
  EXPECT_TRUE(stepped.error().is(errc::projection_failed));
  EXPECT_NE(stepped.error().message().find("event 4 (4@acct-1, Bad): cannot apply a Bad event"),
            std::string::npos)
      << stepped.error().message();
  EXPECT_EQ(events_of("acct-1"), 4);
  EXPECT_EQ(counts->progress().position, bad);
  EXPECT_EQ(saved_checkpoint(), static_cast<std::int64_t>(bad));
  EXPECT_FALSE(counts->wait_for(bad, 1h));  // stopped: nobody waits an hour for it
}

TEST_F(ProjectionRunnerTest, SkipPassesOverTheBadEventOnly) {
  append("acct-9");
  append("acct-9", "Throws");
  append("acct-9");
  auto counts = runner(counting(OnError::kSkip));
  ASSERT_TRUE(counts->catch_up().ok());
  EXPECT_EQ(counts->progress().position, 3u);
  EXPECT_EQ(counts->progress().skipped, 1u);
  EXPECT_EQ(events_of("acct-9"), 2);
  EXPECT_EQ(saved_checkpoint(), 3);
}

TEST_F(ProjectionRunnerTest, ParkRecordsTheBadEventAndGoesOn) {
  append("acct-9");
  append("acct-9", "Throws");
  append("acct-9");
  auto counts = runner(counting(OnError::kPark));
  ASSERT_TRUE(counts->catch_up().ok());
  EXPECT_EQ(counts->progress().parked, 1u);
  EXPECT_EQ(events_of("acct-9"), 2);
  auto parked = store_->read_stream(counts->parked_stream(), 0, 10);
  ASSERT_TRUE(parked.ok());
  ASSERT_EQ(parked->size(), 1u);
  EXPECT_NE(parked->front().data.find("apply() threw: boom"), std::string::npos);
  EXPECT_NE(parked->front().data.find("\"position\":1"), std::string::npos);
}

TEST_F(ProjectionRunnerTest, AnSqlErrorNamesTheEventAndTheStatement) {
  append("acct-1");
  Projection broken = counting();
  broken.apply = [](const RecordedEvent&, Transaction& tx) {
    return tx.exec("INSERT INTO no_such_table VALUES ($1)", {std::int64_t{1}});
  };
  auto runner_ = runner(broken);
  auto stepped = runner_->step();
  ASSERT_FALSE(stepped.ok());
  EXPECT_NE(stepped.error().message().find("no such table: no_such_table"), std::string::npos)
      << stepped.error().message();
  EXPECT_NE(stepped.error().message().find("event 0 (0@acct-1"), std::string::npos);
}

TEST_F(ProjectionRunnerTest, RebuildStartsOverAndEndsWithTheSameReadModel) {
  for (int i = 0; i < 50; ++i)
    append("acct-" + std::to_string(i % 5), "Deposited", std::string(i % 7, 'x'));
  auto counts = runner(counting(), {.batch = 7});
  ASSERT_TRUE(counts->catch_up().ok());
  auto before = model_->query("SELECT stream, events, total FROM counts ORDER BY stream");
  ASSERT_TRUE(counts->rebuild().ok());
  EXPECT_EQ(counts->progress().position, 0u);
  EXPECT_EQ(counts->progress().head, 50u);
  ASSERT_TRUE(counts->step().ok());
  EXPECT_GT(counts->progress().position, 0u);
  EXPECT_LT(counts->progress().position, 50u);
  ASSERT_TRUE(counts->catch_up().ok());
  EXPECT_EQ(counts->progress().position, 50u);
  EXPECT_EQ(counts->progress().head, 50u);
  auto after = model_->query("SELECT stream, events, total FROM counts ORDER BY stream");
  ASSERT_TRUE(before.ok() && after.ok());
  EXPECT_EQ(*before, *after);
}

TEST_F(ProjectionRunnerTest, AQueryCanWaitForItsOwnWriteAndPauseHoldsTheRunner) {
  auto counts = runner(counting());
  counts->start();
  const std::uint64_t written = append("acct-1");
  ASSERT_TRUE(counts->wait_for(written, 1h));  // returns as soon as the event is applied
  EXPECT_EQ(events_of("acct-1"), 1);

  counts->pause();
  const std::uint64_t held = append("acct-1");
  EXPECT_FALSE(counts->wait_for(held, 0s));
  EXPECT_EQ(events_of("acct-1"), 1);
  counts->resume();
  ASSERT_TRUE(counts->wait_for(held, 1h));
  EXPECT_EQ(events_of("acct-1"), 2);
  counts->stop();
}

TEST_F(ProjectionRunnerTest, ALogThatFailsLosesAndRepeatsNothing) {
  for (int i = 0; i < 40; ++i) append("acct-" + std::to_string(i % 3), "Deposited", "x");
  append("other-1");
  FlakyLog log(*store_);
  auto opened = ProjectionRunner::open(log, *model_, counting(), clock_, {.batch = 7});
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto& counts = *opened;
  int steps = 0;
  while (counts->progress().position < 41 && steps++ < 100) {
    auto stepped = counts->step();
    if (!stepped) {
      EXPECT_NE(stepped.error().message().find("the node is down"), std::string::npos);
      EXPECT_TRUE(counts->progress().error.has_value());
    }
  }
  EXPECT_GT(log.failures, 5);
  EXPECT_EQ(counts->progress().position, 41u);
  EXPECT_EQ(counts->progress().applied, 40u);
  EXPECT_EQ(events_of("acct-0") + events_of("acct-1") + events_of("acct-2"), 40);
  EXPECT_EQ(saved_checkpoint(), 41);
  // Caught up, with the log answering again: the error is over.
  for (int i = 0; i < 5 && !counts->step().ok(); ++i) {
  }
  EXPECT_FALSE(counts->progress().error.has_value());
}

TEST_F(ProjectionRunnerTest, ALogThatCannotParkRefusesThePolicy) {
  FlakyLog log(*store_);
  auto opened = ProjectionRunner::open(log, *model_, counting(OnError::kPark), clock_);
  ASSERT_FALSE(opened.ok());
  EXPECT_TRUE(opened.error().is(errc::invalid_argument));
  EXPECT_NE(opened.error().message().find("a flaky log cannot append to $ streams"),
            std::string::npos)
      << opened.error().message();
  EXPECT_TRUE(ProjectionRunner::open(log, *model_, counting(OnError::kSkip), clock_).ok());
}

TEST_F(ProjectionRunnerTest, BadNamesAreRefused) {
  Projection bad = counting();
  bad.name = "has space";
  auto opened = ProjectionRunner::open(*store_, *model_, bad, clock_);
  ASSERT_FALSE(opened.ok());
  EXPECT_NE(opened.error().message().find("'has space'"), std::string::npos);
}

}  // namespace
}  // namespace keel::cqrs

#include "keel/eventlog/event_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <set>
#include <thread>

#include "keel/eventlog/test_support.h"

namespace keel::eventlog {
namespace {

using testing::make_event;
using testing::TempDir;

class EventStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { reopen(); }

  void reopen(StoreOptions options = small()) {
    if (store_) {
      ASSERT_TRUE(store_->close().ok());
    }
    store_.reset();
    auto opened = EventStore::open(path_, options, clock_);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    store_ = std::move(*opened);
  }
  static StoreOptions small() {
    StoreOptions options;
    options.segment_bytes = 64 * 1024;
    return options;
  }
  std::vector<EventData> events(int n, const std::string& type = "Happened") {
    std::vector<EventData> result;
    for (int i = 0; i < n; ++i)
      result.push_back(make_event(random_, type, "{\"n\":" + std::to_string(i) + "}"));
    return result;
  }
  AppendResult must_append(const std::string& stream, ExpectedVersion expected,
                           const std::vector<EventData>& batch) {
    auto result = store_->append(stream, expected, batch);
    EXPECT_TRUE(result.ok()) << result.error().to_string();
    return result.ok() ? *result : AppendResult{};
  }
  std::vector<std::uint64_t> versions(const std::string& stream) {
    auto read = store_->read_stream(stream, 0, 1000);
    EXPECT_TRUE(read.ok());
    std::vector<std::uint64_t> result;
    for (const auto& event : *read) result.push_back(event.version);
    return result;
  }

  void async_appends_land(Durability durability);

  TempDir dir_;
  std::string path_ = dir_.path();  // the store's directory
  ManualClock clock_;
  Random random_{7};
  std::unique_ptr<EventStore> store_;
};

TEST_F(EventStoreTest, AppendAssignsVersionsAndGapFreePositions) {
  auto first = must_append("order-1", ExpectedVersion::no_stream(), events(2));
  auto second = must_append("order-2", ExpectedVersion::any(), events(1));
  auto third = must_append("order-1", ExpectedVersion::exact(1), events(3));
  EXPECT_EQ(first.first_version, 0u);
  EXPECT_EQ(first.last_version, 1u);
  EXPECT_EQ(second.first_position, 2u);
  EXPECT_EQ(third.first_version, 2u);
  EXPECT_EQ(third.last_version, 4u);
  EXPECT_EQ(third.last_position, 5u);
  auto all = store_->read_all(0, 100);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 6u);
  for (std::uint64_t i = 0; i < 6; ++i) EXPECT_EQ((*all)[i].position, i);
  EXPECT_EQ((*all)[2].stream, "order-2");
  EXPECT_EQ((*all)[3].data, "{\"n\":0}");
  EXPECT_GT((*all)[0].timestamp_ns, 0);
}

TEST_F(EventStoreTest, ListsStreamsByPrefixInNameOrderWithoutDeletedOnes) {
  for (const char* name : {"order-3", "order-1", "cart-1", "order-2", "order-10"})
    must_append(name, ExpectedVersion::any(), events(2));
  must_append("order-1", ExpectedVersion::any(), events(1));
  ASSERT_TRUE(store_->delete_stream("order-2", ExpectedVersion::any(), false));
  auto all = store_->list_streams("order-", 10);
  std::vector<std::string> names;
  for (const auto& s : all.streams) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"order-1", "order-10", "order-3"}));
  EXPECT_EQ(all.streams[0].version, 2u);
  EXPECT_FALSE(all.more);
  auto first = store_->list_streams("", 2);
  ASSERT_EQ(first.streams.size(), 2u);
  EXPECT_EQ(first.streams[0].name, "cart-1");
  EXPECT_EQ(first.streams[1].name, "order-1");
  EXPECT_TRUE(first.more);
  EXPECT_TRUE(store_->list_streams("nothing", 5).streams.empty());
}

TEST_F(EventStoreTest, StatsCountAppendsCommitsAndSyncs) {
  const StoreStats before = store_->stats();
  for (int i = 0; i < 3; ++i) must_append("s-1", ExpectedVersion::any(), events(2));
  const StoreStats after = store_->stats();
  EXPECT_EQ(after.appends - before.appends, 3u);  // appends, not events
  EXPECT_EQ(after.commits - before.commits, 3u) << "one appender: a commit each";
  EXPECT_EQ(after.syncs - before.syncs, 3u) << "every_commit: a sync per commit";
}

TEST_F(EventStoreTest, ExpectedVersionConflictsCarryTheActualVersion) {
  must_append("cart-1", ExpectedVersion::no_stream(), events(3));
  auto conflict = store_->append("cart-1", ExpectedVersion::exact(1), events(1));
  ASSERT_FALSE(conflict.ok());
  EXPECT_TRUE(conflict.error().is(errc::wrong_expected_version));
  EXPECT_EQ(conflict.error().detail(), 2);
  EXPECT_EQ(conflict.error().message(),
            "stream 'cart-1': expected version 1, but it is at version 2");
  EXPECT_FALSE(store_->append("cart-1", ExpectedVersion::no_stream(), events(1)).ok());
  auto missing = store_->append("cart-2", ExpectedVersion::stream_exists(), events(1));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().detail(), -1);
  must_append("cart-1", ExpectedVersion::stream_exists(), events(1));
}

TEST_F(EventStoreTest, ReappendingTheSameIdsReturnsTheFirstResult) {
  auto batch = events(3);
  auto first = must_append("order-7", ExpectedVersion::no_stream(), batch);
  auto again = store_->append("order-7", ExpectedVersion::no_stream(), batch);
  ASSERT_TRUE(again.ok()) << again.error().to_string();
  EXPECT_TRUE(again->duplicate);
  EXPECT_EQ(again->first_position, first.first_position);
  EXPECT_EQ(again->last_version, first.last_version);
  EXPECT_EQ(store_->next_position(), 3u) << "nothing new written";

  auto changed = batch;
  changed[1].data = "{\"other\":true}";
  auto conflict = store_->append("order-7", ExpectedVersion::any(), changed);
  ASSERT_FALSE(conflict.ok());
  EXPECT_TRUE(conflict.error().is(errc::duplicate_event_id));
  auto partial = store_->append("order-7", ExpectedVersion::any(), {batch[0], events(1)[0]});
  EXPECT_TRUE(partial.error().is(errc::duplicate_event_id));
}

TEST_F(EventStoreTest, ReadsStreamsForwardAndBackwardWithLimits) {
  must_append("s-1", ExpectedVersion::any(), events(10));
  auto forward = store_->read_stream("s-1", 3, 4);
  ASSERT_TRUE(forward.ok());
  ASSERT_EQ(forward->size(), 4u);
  EXPECT_EQ(forward->front().version, 3u);
  auto backward = store_->read_stream("s-1", UINT64_MAX, 3, Direction::kBackward);
  ASSERT_EQ(backward->size(), 3u);
  EXPECT_EQ(backward->front().version, 9u);
  EXPECT_EQ(backward->back().version, 7u);
  auto all_backward = store_->read_all(UINT64_MAX, 2, Direction::kBackward);
  EXPECT_EQ(all_backward->front().position, 9u);
  EXPECT_TRUE(store_->read_stream("nothing-here", 0, 10)->empty());
}

TEST_F(EventStoreTest, CategoryAndTypeIndexes) {
  must_append("order-1", ExpectedVersion::any(), events(2, "OrderPlaced"));
  must_append("cart-1", ExpectedVersion::any(), events(1, "ItemAdded"));
  must_append("order-2", ExpectedVersion::any(), events(1, "OrderShipped"));
  must_append("order-1", ExpectedVersion::any(), events(1, "OrderShipped"));
  auto orders = store_->read_category("order", 0, 100);
  ASSERT_EQ(orders->size(), 4u);
  EXPECT_EQ((*orders)[2].stream, "order-2");
  EXPECT_EQ(store_->read_category("order", 3, 100)->size(), 2u);
  auto shipped = store_->read_event_type("OrderShipped", 0, 100);
  ASSERT_EQ(shipped->size(), 2u);
  EXPECT_EQ((*shipped)[1].stream, "order-1");
}

TEST_F(EventStoreTest, EverythingSurvivesARestartAndIndexesRebuildWithoutACheckpoint) {
  for (int i = 0; i < 200; ++i)
    must_append("s-" + std::to_string(i % 7), ExpectedVersion::any(), events(3));
  reopen();
  EXPECT_EQ(store_->next_position(), 600u);
  EXPECT_EQ(store_->read_category("s", 0, 10000)->size(), 600u);
  EXPECT_EQ(*store_->stream_version("s-3"), 86u);
  ASSERT_TRUE(store_->close().ok());
  store_.reset();
  std::filesystem::remove(dir_.path() + "/index.chk");
  reopen();
  EXPECT_EQ(store_->next_position(), 600u);
  EXPECT_EQ(store_->read_all(0, 10000)->size(), 600u);
  EXPECT_EQ(store_->read_event_type("Happened", 590, 100)->size(), 10u);
  // Appends continue where they were, and ids are still known.
  must_append("s-3", ExpectedVersion::exact(86), events(1));
}

TEST_F(EventStoreTest, RollsOverSegments) {
  for (int i = 0; i < 300; ++i) {
    must_append("big-1", ExpectedVersion::any(),
                {make_event(random_, "Blob", std::string(1000, 'x'))});
  }
  int segments = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    segments += entry.path().extension() == ".seg" ? 1 : 0;
  }
  EXPECT_GE(segments, 5);
  reopen();
  EXPECT_EQ(store_->read_stream("big-1", 0, 1000)->size(), 300u);
}

TEST_F(EventStoreTest, MetadataHidesTruncatedOldAndExcessEvents) {
  must_append("m-1", ExpectedVersion::any(), events(10));
  ASSERT_TRUE(store_->set_metadata("m-1", {.max_count = 4}).ok());
  EXPECT_EQ(versions("m-1"), (std::vector<std::uint64_t>{6, 7, 8, 9}));
  ASSERT_TRUE(store_->set_metadata("m-1", {.truncate_before = 8}).ok());
  EXPECT_EQ(versions("m-1"), (std::vector<std::uint64_t>{8, 9}));
  ASSERT_TRUE(store_->set_metadata("m-1", {.max_age = 1min}).ok());
  clock_.advance(30s);
  must_append("m-1", ExpectedVersion::any(), events(1));
  clock_.advance(45s);
  EXPECT_EQ(versions("m-1"), (std::vector<std::uint64_t>{10}));
  reopen();
  EXPECT_EQ(versions("m-1"), (std::vector<std::uint64_t>{10}));
  EXPECT_EQ(store_->metadata("m-1").max_age, Duration(1min));
}

TEST_F(EventStoreTest, SoftDeleteHidesAndRecreatingContinuesVersions) {
  must_append("u-1", ExpectedVersion::any(), events(3));
  ASSERT_TRUE(store_->delete_stream("u-1", ExpectedVersion::exact(2), false).ok());
  EXPECT_TRUE(store_->read_stream("u-1", 0, 10)->empty());
  EXPECT_FALSE(store_->stream_version("u-1").has_value());
  auto recreated = must_append("u-1", ExpectedVersion::no_stream(), events(1));
  EXPECT_EQ(recreated.first_version, 3u);
  EXPECT_EQ(versions("u-1"), (std::vector<std::uint64_t>{3}));
  reopen();
  EXPECT_EQ(versions("u-1"), (std::vector<std::uint64_t>{3}));
}

TEST_F(EventStoreTest, HardDeleteIsFinal) {
  must_append("t-1", ExpectedVersion::any(), events(2));
  ASSERT_TRUE(store_->delete_stream("t-1", ExpectedVersion::any(), true).ok());
  auto read = store_->read_stream("t-1", 0, 10);
  ASSERT_FALSE(read.ok());
  EXPECT_TRUE(read.error().is(errc::stream_deleted));
  auto append = store_->append("t-1", ExpectedVersion::any(), events(1));
  EXPECT_TRUE(append.error().is(errc::stream_deleted));
  reopen();
  EXPECT_TRUE(
      store_->append("t-1", ExpectedVersion::any(), events(1)).error().is(errc::stream_deleted));
  EXPECT_TRUE(store_->read_all(0, 10)->empty()) << "a tombstoned stream's events leave $all too";
}

TEST_F(EventStoreTest, SnapshotsRoundTripAndReplaceEachOther) {
  EXPECT_FALSE(store_->load_snapshot("cart-9")->has_value());
  ASSERT_TRUE(store_->save_snapshot("cart-9", {4, "{\"items\":2}"}).ok());
  ASSERT_TRUE(store_->save_snapshot("cart-9", {7, "{\"items\":3}"}).ok());
  reopen();
  auto snapshot = store_->load_snapshot("cart-9");
  ASSERT_TRUE(snapshot.ok() && snapshot->has_value());
  EXPECT_EQ((*snapshot)->version, 7u);
  EXPECT_EQ((*snapshot)->data, "{\"items\":3}");
}

TEST_F(EventStoreTest, ScavengeRemovesDeletedEventsAndReclaimsSegments) {
  for (int i = 0; i < 120; ++i) {
    must_append(i % 2 ? "keep-1" : "drop-1", ExpectedVersion::any(),
                {make_event(random_, "Blob", std::string(1000, 'y'))});
  }
  ASSERT_TRUE(store_->delete_stream("drop-1", ExpectedVersion::any(), true).ok());
  must_append("keep-1", ExpectedVersion::any(), events(1));  // moves the write head on
  auto report = store_->scavenge();
  ASSERT_TRUE(report.ok()) << report.error().to_string();
  EXPECT_GT(report->events_removed, 25u) << "the drop-1 events in sealed segments";
  EXPECT_GT(report->bytes_reclaimed, 25000u);
  EXPECT_EQ(store_->read_stream("keep-1", 0, 1000)->size(), 61u);
  reopen();
  EXPECT_EQ(store_->read_stream("keep-1", 0, 1000)->size(), 61u);
  EXPECT_EQ(store_->read_all(0, 1000)->size(), 61u);
}

TEST_F(EventStoreTest, AppendsGoOnWhileScavengeRuns) {
  for (int i = 0; i < 150; ++i) {
    must_append(i % 2 ? "live-1" : "gone-1", ExpectedVersion::any(),
                {make_event(random_, "Blob", std::string(1000, 'g'))});
  }
  ASSERT_TRUE(store_->delete_stream("gone-1", ExpectedVersion::any(), true).ok());
  std::atomic<bool> done{false};
  std::thread appender([&] {
    Random random(11);
    for (int i = 0; i < 300; ++i) {
      auto result = store_->append("live-2", ExpectedVersion::any(),
                                   {make_event(random, "Tick", std::to_string(i))});
      ASSERT_TRUE(result.ok()) << result.error().to_string();
    }
    done = true;
  });
  int scavenges = 0;
  while (!done || scavenges == 0) {
    auto report = store_->scavenge();
    ASSERT_TRUE(report.ok()) << report.error().to_string();
    ++scavenges;
  }
  appender.join();
  EXPECT_EQ(store_->read_stream("live-2", 0, 1000)->size(), 300u);
  EXPECT_EQ(store_->read_stream("live-1", 0, 1000)->size(), 75u);
  reopen();
  EXPECT_EQ(store_->read_stream("live-2", 0, 1000)->size(), 300u);
  EXPECT_EQ(store_->read_stream("live-1", 0, 1000)->size(), 75u);
}

TEST_F(EventStoreTest, FullDiskFailsTheAppendClearlyAndWorksWhenSpaceReturns) {
  bool full = false;
  StoreOptions options = small();
  options.inject_fault = [&](std::string_view operation) {
    return full && operation == "fallocate" ? ENOSPC : 0;
  };
  reopen(options);
  full = true;
  std::optional<Error> error;
  for (int i = 0; i < 200 && !error; ++i) {
    auto result = store_->append("d-1", ExpectedVersion::any(),
                                 {make_event(random_, "Blob", std::string(1000, 'z'))});
    if (!result) error = result.error();
  }
  ASSERT_TRUE(error.has_value());
  EXPECT_TRUE(error->is(errc::disk_full)) << error->to_string();
  EXPECT_NE(error->message().find("No space left on device"), std::string::npos);
  std::uint64_t before = store_->next_position();
  full = false;
  must_append("d-1", ExpectedVersion::any(), events(1));
  EXPECT_EQ(store_->next_position(), before + 1);
  reopen();
  EXPECT_EQ(store_->read_stream("d-1", 0, 1000)->size(), before + 1);
}

// A real small file system, not the fault seam: posix_fallocate reports ENOSPC as its return
// value, not in errno. Needs root to mount a tmpfs; skipped with a message otherwise.
class SmallFileSystem {
 public:
  explicit SmallFileSystem(const std::string& size) {
    if (::geteuid() != 0) {
      why_not_ = "not root: cannot mount a tmpfs";
      return;
    }
    std::string command = "mount -t tmpfs -o size=" + size + " keel-test " + dir_.path();
    if (std::system(command.c_str()) != 0) {
      why_not_ = "`" + command + "` failed";
      return;
    }
    mounted_ = true;
  }
  ~SmallFileSystem() {
    if (mounted_) (void)std::system(("umount " + dir_.path()).c_str());
  }
  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_not_; }
  std::string path(const std::string& name) const { return dir_.path() + "/" + name; }

 private:
  TempDir dir_;
  bool mounted_ = false;
  std::string why_not_;
};

TEST(EventStoreDiskTest, AFullFileSystemIsReportedAsDiskFullEverywhere) {
  SmallFileSystem disk("256k");
  if (!disk.mounted()) GTEST_SKIP() << disk.why_not();
  ManualClock clock;
  Random random(3);
  StoreOptions options;
  options.segment_bytes = 1 << 20;  // larger than the whole file system
  auto too_big = EventStore::open(disk.path("new"), options, clock);
  ASSERT_FALSE(too_big.ok());
  EXPECT_TRUE(too_big.error().is(errc::disk_full)) << too_big.error().to_string();
  EXPECT_NE(too_big.error().message().find("No space left on device"), std::string::npos)
      << too_big.error().message();

  options.segment_bytes = 64 * 1024;
  auto opened = EventStore::open(disk.path("store"), options, clock);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto store = std::move(*opened);
  std::optional<Error> error;
  std::uint64_t appended = 0;
  for (int i = 0; i < 100 && !error; ++i) {
    auto result = store->append("d-1", ExpectedVersion::any(),
                                {make_event(random, "Blob", std::string(8000, 'z'))});
    if (result) {
      ++appended;
    } else {
      error = result.error();
    }
  }
  ASSERT_TRUE(error.has_value()) << "256 KiB never filled";
  EXPECT_TRUE(error->is(errc::disk_full)) << error->to_string();
  // Fill what is left so that the checkpoint cannot be written either.
  std::ofstream(disk.path("filler")) << std::string(256 * 1024, 'f');
  (void)store->close();
  EXPECT_FALSE(std::filesystem::exists(disk.path("store/index.chk.tmp")))
      << "a failed checkpoint left its temporary file";
  std::filesystem::remove(disk.path("filler"));
  store.reset();
  auto reopened = EventStore::open(disk.path("store"), options, clock);
  ASSERT_TRUE(reopened.ok()) << reopened.error().to_string();
  EXPECT_EQ((*reopened)->read_stream("d-1", 0, 1000)->size(), appended);
}

TEST_F(EventStoreTest, FailedSyncStopsAppendsUntilReopened) {
  bool broken = false;
  StoreOptions options = small();
  options.inject_fault = [&](std::string_view operation) {
    return broken && operation == "sync" ? EIO : 0;
  };
  reopen(options);
  must_append("f-1", ExpectedVersion::any(), events(1));
  broken = true;
  auto failed = store_->append("f-1", ExpectedVersion::any(), events(1));
  ASSERT_FALSE(failed.ok());
  EXPECT_TRUE(failed.error().is(errc::io_error));
  broken = false;
  EXPECT_FALSE(store_->append("f-1", ExpectedVersion::any(), events(1)).ok());
  reopen();
  EXPECT_GE(store_->read_stream("f-1", 0, 10)->size(), 1u);
  must_append("f-1", ExpectedVersion::any(), events(1));
}

TEST_F(EventStoreTest, IntervalDurabilitySyncsEverySegmentWrittenBeforeItsCheckpoint) {
  std::atomic<int> syncs{0};
  StoreOptions options = small();
  options.durability = Durability::kInterval;
  options.sync_interval = std::chrono::hours(1);  // only close() syncs in this test
  options.inject_fault = [&](std::string_view operation) {
    if (operation == "sync") ++syncs;
    return 0;
  };
  reopen(options);
  for (int i = 0; i < 100; ++i) {
    must_append("i-1", ExpectedVersion::any(),
                {make_event(random_, "Blob", std::string(1000, 'i'))});
  }
  EXPECT_EQ(syncs.load(), 0) << "acknowledged without syncing";
  ASSERT_TRUE(store_->close().ok());
  EXPECT_GE(syncs.load(), 2) << "the sealed segment and the active one are both synced";
  store_.reset();
  reopen();
  EXPECT_EQ(store_->read_stream("i-1", 0, 1000)->size(), 100u);
}

TEST_F(EventStoreTest, IntervalDurabilitySyncsOnTheInjectedClock) {
  std::atomic<int> syncs{0};
  StoreOptions options = small();
  options.durability = Durability::kInterval;
  options.sync_interval = 100ms;
  options.inject_fault = [&](std::string_view operation) {
    if (operation == "sync") ++syncs;
    return 0;
  };
  reopen(options);
  must_append("j-1", ExpectedVersion::any(), events(3));
  EXPECT_EQ(syncs.load(), 0);
  // The syncer thread is waiting for its timer; once the clock passes the interval it syncs.
  while (clock_.pending_timers() == 0) std::this_thread::yield();
  clock_.advance(100ms);
  while (syncs.load() == 0) std::this_thread::yield();
  EXPECT_EQ(syncs.load(), 1);
}

TEST_F(EventStoreTest, ConcurrentAppendersShareCommitsAndKeepStreamsOrdered) {
  constexpr int kThreads = 8;
  constexpr int kAppends = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Random random(100 + t);
      for (int i = 0; i < kAppends; ++i) {
        auto result =
            store_->append("w-" + std::to_string(t), ExpectedVersion::exact(i - 1 < 0 ? 0 : i - 1),
                           {make_event(random, "Tick", std::to_string(i))});
        if (i == 0) {
          // exact(0) on a new stream is a conflict: the first append uses no_stream.
          ASSERT_FALSE(result.ok());
          result = store_->append("w-" + std::to_string(t), ExpectedVersion::no_stream(),
                                  {make_event(random, "Tick", std::to_string(i))});
        }
        ASSERT_TRUE(result.ok()) << result.error().to_string();
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(store_->next_position(), std::uint64_t{kThreads * kAppends});
  for (int t = 0; t < kThreads; ++t) {
    auto read = store_->read_stream("w-" + std::to_string(t), 0, 1000);
    ASSERT_EQ(read->size(), std::size_t{kAppends});
    for (int i = 0; i < kAppends; ++i) ASSERT_EQ((*read)[i].data, std::to_string(i));
  }
}

// What an append_async() callback was given, for the tests below to wait on.
struct AsyncAnswers {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<Result<AppendResult>> answers;
  std::function<void(Result<AppendResult>)> add() {
    return [this](Result<AppendResult> result) {
      std::lock_guard lock(mutex);
      answers.push_back(std::move(result));
      changed.notify_all();
    };
  }
  // The answers once there are `n` (none comes twice: the count would pass n).
  std::vector<Result<AppendResult>> wait(std::size_t n) {
    std::unique_lock lock(mutex);
    EXPECT_TRUE(changed.wait_for(lock, 30s, [&] { return answers.size() >= n; }));
    return answers;
  }
};

TEST_F(EventStoreTest, AsyncAppendsAreAnsweredOnceDurableInOrderAndShareSyncs) {
  for (Durability durability : {Durability::kEveryCommit, Durability::kInterval}) {
    SCOPED_TRACE(durability == Durability::kInterval ? "interval" : "every_commit");
    ASSERT_TRUE(store_->close().ok());
    store_.reset();
    path_ = dir_.path() + (durability == Durability::kInterval ? "/interval" : "/every_commit");
    async_appends_land(durability);
  }
}

void EventStoreTest::async_appends_land(Durability durability) {
  // Segments of 4 KiB: many appends must roll while a write is in flight (encoded again after
  // it), and every segment boundary is crossed by async appends.
  StoreOptions options = small();
  options.segment_bytes = 4096;
  options.durability = durability;
  reopen(options);
  AsyncAnswers answers;
  constexpr int kThreads = 4;
  constexpr int kAppends = 300;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Random random(200 + t);
      for (int i = 0; i < kAppends; ++i) {
        std::vector<EventData> one = {make_event(random, "Tick", std::to_string(i))};
        store_->append_async("a-" + std::to_string(t), ExpectedVersion::any(), one, answers.add());
      }
    });
  }
  must_append("blocking", ExpectedVersion::no_stream(), events(3));  // beside them
  for (auto& thread : threads) thread.join();
  auto all = answers.wait(kThreads * kAppends);
  std::set<std::uint64_t> positions;
  for (const auto& answer : all) {
    ASSERT_TRUE(answer.ok()) << answer.error().to_string();
    positions.insert(answer->first_position);
  }
  EXPECT_EQ(positions.size(), std::size_t{kThreads * kAppends});
  EXPECT_LT(store_->stats().syncs, store_->stats().appends);
  reopen(options);  // everything answered is written
  EXPECT_EQ(store_->next_position(), std::uint64_t{kThreads * kAppends + 3});
  for (int t = 0; t < kThreads; ++t) {
    auto read = store_->read_stream("a-" + std::to_string(t), 0, 1000);
    ASSERT_EQ(read->size(), std::size_t{kAppends});
    for (int i = 0; i < kAppends; ++i) ASSERT_EQ((*read)[i].data, std::to_string(i));
  }
}

TEST_F(EventStoreTest, AsyncAppendRefusalsAndRetriesAnswerLikeAppend) {
  AsyncAnswers answers;
  auto batch = events(2);
  store_->append_async("r-1", ExpectedVersion::no_stream(), batch, answers.add());
  store_->append_async("r-1", ExpectedVersion::no_stream(), events(1), answers.add());  // conflict
  store_->append_async("r-1", ExpectedVersion::any(), batch, answers.add());            // a retry
  store_->append_async("$system", ExpectedVersion::any(), events(1), answers.add());
  store_->append_async("", ExpectedVersion::any(), events(1), answers.add());
  auto all = answers.wait(5);
  ASSERT_EQ(all.size(), 5u);
  // The answers that waited for nothing come first; the rest in ticket order. The retry of the
  // first append is its first result (duplicate) or, while that is still being written,
  // refused as such, as append() does.
  int appended = 0, retried = 0, conflicts = 0, invalid = 0;
  for (const auto& answer : all) {
    if (answer.ok()) {
      (answer->duplicate ? retried : appended) += 1;
      EXPECT_EQ(answer->first_version, 0u);
      EXPECT_EQ(answer->last_version, 1u);
    } else if (answer.error().is(errc::wrong_expected_version)) {
      ++conflicts;
      EXPECT_EQ(answer.error().detail(), 1);  // it waited for the first append to be durable
    } else if (answer.error().is(errc::duplicate_event_id)) {
      EXPECT_NE(answer.error().message().find("right now"), std::string::npos);
      ++retried;
    } else {
      EXPECT_TRUE(answer.error().is(errc::invalid_argument)) << answer.error().to_string();
      ++invalid;
    }
  }
  EXPECT_EQ(appended, 1);
  EXPECT_EQ(retried, 1);
  EXPECT_EQ(conflicts, 1);
  EXPECT_EQ(invalid, 2);
  AsyncAnswers again;  // once durable, the retry is the first result
  store_->append_async("r-1", ExpectedVersion::any(), batch, again.add());
  auto retry = again.wait(1);
  ASSERT_TRUE(retry[0].ok());
  EXPECT_TRUE(retry[0]->duplicate);
}

TEST_F(EventStoreTest, AsyncAppendsAfterAFailedSyncAndAtCloseAreAllAnswered) {
  bool broken = false;
  StoreOptions options = small();
  options.inject_fault = [&](std::string_view operation) {
    return broken && operation == "sync" ? EIO : 0;
  };
  reopen(options);
  AsyncAnswers answers;
  broken = true;
  for (int i = 0; i < 20; ++i)
    store_->append_async("f-1", ExpectedVersion::any(), events(1), answers.add());
  for (const auto& answer : answers.wait(20)) {
    ASSERT_FALSE(answer.ok());
    EXPECT_TRUE(answer.error().is(errc::io_error)) << answer.error().to_string();
  }
  broken = false;
  reopen(options);
  AsyncAnswers at_close;
  for (int i = 0; i < 50; ++i)
    store_->append_async("c-1", ExpectedVersion::any(), events(1), at_close.add());
  ASSERT_TRUE(store_->close().ok());
  {
    std::lock_guard lock(at_close.mutex);
    EXPECT_EQ(at_close.answers.size(), 50u);  // close() answered every one before returning
  }
  store_->append_async("c-1", ExpectedVersion::any(), events(1), at_close.add());
  auto all = at_close.wait(51);
  EXPECT_TRUE(all.back().error().is(errc::closed));
}

TEST_F(EventStoreTest, BadInputGetsClearErrors) {
  EXPECT_TRUE(
      store_->append("", ExpectedVersion::any(), events(1)).error().is(errc::invalid_argument));
  EXPECT_TRUE(
      store_->append("$all", ExpectedVersion::any(), events(1)).error().is(errc::invalid_argument));
  auto no_type = events(1);
  no_type[0].type.clear();
  EXPECT_TRUE(
      store_->append("s-1", ExpectedVersion::any(), no_type).error().is(errc::invalid_argument));
  auto huge = store_->append("s-1", ExpectedVersion::any(),
                             {make_event(random_, "Big", std::string(5 << 20, 'x'))});
  EXPECT_NE(huge.error().message().find("max_event_bytes"), std::string::npos);
}

TEST_F(EventStoreTest, SecondOpenOfTheSameDirectoryIsRefused) {
  auto second = EventStore::open(dir_.path(), small(), clock_);
  ASSERT_FALSE(second.ok());
  EXPECT_NE(second.error().message().find("LOCK"), std::string::npos);
}

}  // namespace
}  // namespace keel::eventlog

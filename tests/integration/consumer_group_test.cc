// Consumer groups on real time and real threads: worker threads wait for deliveries while
// appenders publish; one worker dies holding unacked events; a poison event is parked.
#include "keel/pubsub/consumer_group.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "keel/eventlog/test_support.h"

namespace keel::pubsub {
namespace {

using eventlog::ExpectedVersion;

class ConsumerGroupThreadsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    eventlog::StoreOptions options;
    options.segment_bytes = 8 << 20;
    options.durability = eventlog::Durability::kNone;
    auto store = EventStore::open(dir_.path(), options, clock_);
    ASSERT_TRUE(store.ok()) << store.error().to_string();
    store_ = std::move(*store);
  }
  void publish(int events, int streams, int threads) {
    std::vector<std::thread> appenders;
    for (int t = 0; t < threads; ++t) {
      appenders.emplace_back([&, t] {
        Random random(t + 1);
        for (int i = t; i < events; i += threads) {
          const std::string type = i == 77 ? "Poison" : "Paid";
          auto ok =
              store_->append("acct-" + std::to_string(i % streams), ExpectedVersion::any(),
                             {eventlog::testing::make_event(random, type, std::to_string(i))});
          ASSERT_TRUE(ok.ok());
        }
      });
    }
    for (auto& appender : appenders) appender.join();
  }

  eventlog::testing::TempDir dir_;
  SteadyClock clock_;
  std::unique_ptr<EventStore> store_;
};

TEST_F(ConsumerGroupThreadsTest, AWorkerKilledMidBatchLosesNothingAndPinnedOrderHolds) {
  constexpr int kEvents = 3000, kStreams = 40;
  auto opened = ConsumerGroup::open(*store_,
                                    {.name = "billing",
                                     .filter = {.categories = {"acct"}},
                                     .strategy = Strategy::kPinned,
                                     .max_in_flight = 8,
                                     .ack_timeout = 2s,
                                     .max_deliveries = 3,
                                     .retry_backoff = 10ms},
                                    clock_);
  ASSERT_TRUE(opened.ok()) << opened.error().to_string();
  auto group = *opened;
  group->start();

  std::mutex mutex;
  std::map<std::string, std::vector<std::uint64_t>> acked;  // stream -> versions, ack order
  std::atomic<bool> done{false};
  auto work = [&](std::unique_ptr<Member> member, int die_after) {
    int handled = 0;
    while (!done) {
      for (const auto& d : member->wait(16, 50ms)) {
        if (die_after >= 0 && handled++ == die_after) return;  // dies holding the rest, unacked
        if (d.event.type == "Poison") {
          ASSERT_TRUE(member->nack(d.id, NackAction::kRetry, "cannot bill").ok());
          continue;
        }
        std::lock_guard lock(mutex);
        acked[d.event.stream].push_back(d.event.version);
        ASSERT_TRUE(member->ack(d.id).ok());
      }
    }
  };
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w) {
    auto member = group->join("worker-" + std::to_string(w));
    ASSERT_TRUE(member.ok());
    workers.emplace_back(work, std::move(*member), w == 1 ? 500 : -1);
  }
  publish(kEvents, kStreams, 4);
  // Wait for every event to be acked or parked: the group's checkpoint reaches the head.
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto stats = group->stats();
    if (stats.acked + stats.parked >= kEvents) break;
    std::this_thread::sleep_for(20ms);
  }
  done = true;
  for (auto& worker : workers) worker.join();
  auto stats = group->stats();
  group->stop();

  EXPECT_EQ(stats.parked, 1u);
  std::size_t total = 0;
  for (const auto& [stream, versions] : acked) {
    total += versions.size();
    // In stream order, each version once (the poison event's version is missing).
    for (std::size_t i = 1; i < versions.size(); ++i)
      ASSERT_LT(versions[i - 1], versions[i]) << stream;
  }
  EXPECT_EQ(total, static_cast<std::size_t>(kEvents - 1));
  auto parked = store_->read_stream(group->parked_stream(), 0, 10);
  ASSERT_TRUE(parked.ok());
  ASSERT_EQ(parked->size(), 1u);
  EXPECT_NE(parked->front().data.find("cannot bill"), std::string::npos);
}

TEST_F(ConsumerGroupThreadsTest, AReopenedGroupResumesAfterItsCheckpoint) {
  publish(100, 5, 1);
  GroupOptions options{.name = "audit", .checkpoint_after_acks = 10};
  {
    auto group = *ConsumerGroup::open(*store_, options, clock_);
    group->start();
    auto joined = group->join("m");
    ASSERT_TRUE(joined.ok());
    auto member = std::move(*joined);
    std::size_t got = 0;
    while (got < 60) {
      for (const auto& d : member->wait(100, 1s)) {
        if (got++ < 60) {
          ASSERT_TRUE(member->ack(d.id).ok());
        }
      }
    }
    group->stop();  // writes a final checkpoint
  }
  auto group = *ConsumerGroup::open(*store_, options, clock_);
  group->start();
  auto joined = group->join("m");
  ASSERT_TRUE(joined.ok());
  auto member = std::move(*joined);
  std::set<std::uint64_t> positions;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (positions.size() < 40 && std::chrono::steady_clock::now() < deadline) {
    for (const auto& d : member->wait(100, 100ms)) {
      positions.insert(d.event.position);
      ASSERT_TRUE(member->ack(d.id).ok());
    }
  }
  group->stop();
  ASSERT_FALSE(positions.empty());
  EXPECT_GE(*positions.begin(), 60u);  // nothing acked before the restart comes again
  EXPECT_EQ(positions.size(), 40u);
}

}  // namespace
}  // namespace keel::pubsub

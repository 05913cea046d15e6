#include "keel/pubsub/subscription.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "keel/pubsub/test_support.h"

namespace keel::pubsub {
namespace {

using eventlog::ExpectedVersion;
using testing::StoreFixture;

// What a subscription delivered, with a bounded wait for it to reach a count.
struct Collector {
  std::mutex mutex;
  std::condition_variable grew;
  std::vector<RecordedEvent> events;
  std::optional<std::uint64_t> live_at;

  Status add(const RecordedEvent& event) {
    std::lock_guard lock(mutex);
    events.push_back(event);
    grew.notify_all();
    return {};
  }
  bool wait_for_count(std::size_t count) {
    std::unique_lock lock(mutex);
    return grew.wait_for(lock, std::chrono::seconds(20), [&] { return events.size() >= count; });
  }
  std::vector<std::uint64_t> positions() {
    std::lock_guard lock(mutex);
    std::vector<std::uint64_t> out;
    for (const auto& e : events) out.push_back(e.position);
    return out;
  }
};

class SubscriptionTest : public StoreFixture {};

TEST_F(SubscriptionTest, FilterKindsAreAndedAndListsAreOred) {
  RecordedEvent placed{.stream = "order-42", .type = "OrderPlaced"};
  EXPECT_TRUE(Filter{}.matches(placed));
  EXPECT_TRUE((Filter{.categories = {"cart", "order"}}.matches(placed)));
  EXPECT_FALSE(Filter{.categories = {"orders"}}.matches(placed));
  EXPECT_TRUE((Filter{.categories = {"order"}, .event_types = {"OrderPlaced"}}.matches(placed)));
  EXPECT_FALSE((Filter{.categories = {"order"}, .event_types = {"OrderPaid"}}.matches(placed)));
  EXPECT_TRUE(Filter{.stream_prefixes = {"order-4"}}.matches(placed));
  EXPECT_FALSE(Filter{.stream_prefixes = {"order-5"}}.matches(placed));
  RecordedEvent system{.stream = "$keel-group-g-checkpoint", .type = "$checkpoint"};
  EXPECT_FALSE(Filter{}.matches(system));
  EXPECT_TRUE(Filter{.include_system = true}.matches(system));
  EXPECT_EQ(Filter{}.describe(), "all");
  EXPECT_EQ((Filter{.categories = {"a", "b"}, .event_types = {"T"}}.describe()),
            "category=a|b type=T");
}

TEST_F(SubscriptionTest, ReaderMovesPastEventsThatDoNotMatch) {
  for (int i = 0; i < 10; ++i) append("other-" + std::to_string(i));
  append("order-1", "OrderPlaced");
  for (int i = 0; i < 10; ++i) append("other-x");
  for (Filter filter : {Filter{.categories = {"order"}}, Filter{.event_types = {"OrderPlaced"}},
                        Filter{.stream_prefixes = {"order-"}}}) {
    Reader reader(*store_, filter, 0);
    std::vector<RecordedEvent> seen;
    while (!reader.caught_up()) {
      auto page = reader.next(4);
      ASSERT_TRUE(page.ok());
      seen.insert(seen.end(), page->begin(), page->end());
    }
    ASSERT_EQ(seen.size(), 1u) << filter.describe();
    EXPECT_EQ(seen[0].position, 10u);
    EXPECT_EQ(reader.position(), 21u);
  }
}

TEST_F(SubscriptionTest, ReservedStreamsNeedTheSystemAppendAndAreNotDelivered) {
  auto refused = store_->append("$mine", ExpectedVersion::any(),
                                {eventlog::testing::make_event(random_, "T", "{}")});
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("reserved"), std::string::npos);
  ASSERT_TRUE(store_
                  ->append_system("$keel-x", ExpectedVersion::any(),
                                  {eventlog::testing::make_event(random_, "T", "{}")})
                  .ok());
  EXPECT_FALSE(store_
                   ->append_system("plain", ExpectedVersion::any(),
                                   {eventlog::testing::make_event(random_, "T", "{}")})
                   .ok());
  append("order-1");
  Reader reader(*store_, {}, 0);
  auto page = reader.next(10);
  ASSERT_TRUE(page.ok());
  ASSERT_EQ(page->size(), 1u);
  EXPECT_EQ(page->front().stream, "order-1");
}

TEST_F(SubscriptionTest, ReplaysHistoryThenGoesLiveWithoutGapOrDuplicate) {
  for (int i = 0; i < 300; ++i) append("order-" + std::to_string(i % 7));
  Collector seen;
  Subscription subscription(*store_, {.batch = 64},
                            {.on_event = [&](const RecordedEvent& e) { return seen.add(e); },
                             .on_live =
                                 [&](std::uint64_t p) {
                                   std::lock_guard lock(seen.mutex);
                                   seen.live_at = p;
                                 }});
  subscription.start();
  ASSERT_TRUE(seen.wait_for_count(300));
  for (int i = 0; i < 200; ++i) append("order-" + std::to_string(i % 7));
  ASSERT_TRUE(seen.wait_for_count(500));
  subscription.stop();
  auto positions = seen.positions();
  ASSERT_EQ(positions.size(), 500u);
  for (std::uint64_t i = 0; i < positions.size(); ++i) ASSERT_EQ(positions[i], i);
  std::lock_guard lock(seen.mutex);
  ASSERT_TRUE(seen.live_at.has_value());
  EXPECT_GE(*seen.live_at, 300u);
}

TEST_F(SubscriptionTest, ManyAppendersDuringCatchUpLeaveNoGapAndNoDuplicate) {
  for (int i = 0; i < 2000; ++i) append(i % 2 ? "a-" + std::to_string(i % 13) : "b-1");
  Collector seen;
  Subscription subscription(*store_, {.filter = {.categories = {"a"}}, .batch = 100},
                            [&](const RecordedEvent& e) { return seen.add(e); });
  subscription.start();
  std::vector<std::thread> appenders;
  for (int t = 0; t < 4; ++t) {
    appenders.emplace_back([&, t] {
      Random random(100 + t);
      for (int i = 0; i < 500; ++i) {
        std::string stream = (i % 3 ? "a-" : "b-") + std::to_string(t * 1000 + i % 17);
        auto ok = store_->append(stream, ExpectedVersion::any(),
                                 {eventlog::testing::make_event(random, "T", "{}")});
        ASSERT_TRUE(ok.ok());
      }
    });
  }
  for (auto& thread : appenders) thread.join();
  // Every "a" event in the log, from the category index.
  std::vector<std::uint64_t> expected;
  auto all = store_->read_category("a", 0, 100000);
  ASSERT_TRUE(all.ok());
  for (const auto& e : *all) expected.push_back(e.position);
  ASSERT_TRUE(seen.wait_for_count(expected.size()));
  subscription.stop();
  EXPECT_EQ(seen.positions(), expected);
}

TEST_F(SubscriptionTest, StartsAtTheEndOrAtAPosition) {
  for (int i = 0; i < 10; ++i) append("order-1");
  Collector from_end, from_five;
  Subscription tail(*store_, {.from = StartFrom::end()},
                    [&](const RecordedEvent& e) { return from_end.add(e); });
  Subscription resume(*store_, {.from = StartFrom::at(5)},
                      [&](const RecordedEvent& e) { return from_five.add(e); });
  tail.start();
  resume.start();
  ASSERT_TRUE(from_five.wait_for_count(5));
  append("order-2");
  ASSERT_TRUE(from_end.wait_for_count(1));
  ASSERT_TRUE(from_five.wait_for_count(6));
  tail.stop();
  resume.stop();
  EXPECT_EQ(from_end.positions(), (std::vector<std::uint64_t>{10}));
  EXPECT_EQ(from_five.positions(), (std::vector<std::uint64_t>{5, 6, 7, 8, 9, 10}));
}

TEST_F(SubscriptionTest, AHandlerErrorDropsTheSubscriptionWhereItFailed) {
  for (int i = 0; i < 10; ++i) append("order-1");
  std::mutex mutex;
  std::condition_variable dropped_cv;
  std::optional<Error> dropped;
  Subscription subscription(*store_, {},
                            {.on_event = [&](const RecordedEvent& e) -> Status {
                               if (e.position == 4)
                                 return Error(errc::invalid_argument, "cannot handle 4");
                               return {};
                             },
                             .on_dropped =
                                 [&](const Error& error) {
                                   std::lock_guard lock(mutex);
                                   dropped = error;
                                   dropped_cv.notify_all();
                                 }});
  subscription.start();
  std::unique_lock lock(mutex);
  ASSERT_TRUE(
      dropped_cv.wait_for(lock, std::chrono::seconds(20), [&] { return dropped.has_value(); }));
  EXPECT_EQ(dropped->message(), "cannot handle 4");
  EXPECT_EQ(subscription.position(), 4u);  // resume here after fixing the handler
  ASSERT_TRUE(subscription.error().has_value());
}

TEST_F(SubscriptionTest, ARestartGoesOnFromWhereItStopped) {
  for (int i = 0; i < 5; ++i) append("order-1");
  Collector seen;
  Subscription subscription(*store_, {}, [&](const RecordedEvent& e) { return seen.add(e); });
  subscription.start();
  ASSERT_TRUE(seen.wait_for_count(5));
  subscription.stop();
  for (int i = 0; i < 3; ++i) append("order-1");
  subscription.start();
  ASSERT_TRUE(seen.wait_for_count(8));
  subscription.stop();
  EXPECT_EQ(seen.positions(), (std::vector<std::uint64_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST_F(SubscriptionTest, ASparseFilterStillReportsCheckpoints) {
  for (int i = 0; i < 250; ++i) append("noise-1");
  std::mutex mutex;
  std::condition_variable checkpointed;
  std::uint64_t last = 0;
  Subscription subscription(
      *store_, {.filter = {.categories = {"order"}}, .batch = 50, .checkpoint_every = 100},
      {.on_event = [](const RecordedEvent&) { return Status{}; },
       .on_checkpoint =
           [&](std::uint64_t position) {
             std::lock_guard lock(mutex);
             last = position;
             checkpointed.notify_all();
           }});
  subscription.start();
  std::unique_lock lock(mutex);
  ASSERT_TRUE(checkpointed.wait_for(lock, std::chrono::seconds(20), [&] { return last >= 200; }));
}

}  // namespace
}  // namespace keel::pubsub

#include "keel/resilience/sliding_window.h"

#include <gtest/gtest.h>

#include <deque>
#include <thread>
#include <vector>

#include "keel/core/random.h"

namespace keel::resilience {
namespace {

TEST(CountWindow, TotalsFollowTheLastCalls) {
  CountWindow window(3);
  EXPECT_EQ(window.record({true, false}).failures, 1);
  window.record({false, true});
  WindowTotals totals = window.record({true, true});
  EXPECT_EQ(totals.calls, 3);
  EXPECT_EQ(totals.failures, 2);
  EXPECT_EQ(totals.slow, 2);
  totals = window.record({false, false});  // evicts the first failure
  EXPECT_EQ(totals.calls, 3);
  EXPECT_EQ(totals.failures, 1);
  EXPECT_EQ(totals.slow, 2);
  window.reset();
  totals = window.totals();
  EXPECT_EQ(totals.calls, 0);
  EXPECT_EQ(totals.failures, 0);
  EXPECT_EQ(totals.slow, 0);
}

TEST(CountWindow, MatchesAModelOfTheLastNCallsUnderRandomBatches) {
  for (std::uint32_t size : {1u, 7u, 8u, 13u, 100u}) {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
      Random random(seed);
      CountWindow window(size);
      std::deque<CallRecord> model;
      WindowTotals totals;
      for (int step = 0; step < 300; ++step) {
        if (random.bernoulli(0.5)) {
          CallRecord call{random.bernoulli(0.5), random.bernoulli(0.3)};
          totals = window.record(call);
          model.push_back(call);
        } else {
          auto count = static_cast<std::uint32_t>(1 + random.uniform(40));
          totals = window.record_successes(count);
          for (std::uint32_t i = 0; i < count; ++i) model.push_back({false, false});
        }
        while (model.size() > size) model.pop_front();
        std::int64_t failures = 0, slow = 0;
        for (const auto& call : model) {
          failures += call.failed;
          slow += call.slow;
        }
        ASSERT_EQ(totals.calls, static_cast<std::int64_t>(model.size()))
            << "size " << size << " seed " << seed << " step " << step;
        ASSERT_EQ(totals.failures, failures) << "size " << size << " seed " << seed;
        ASSERT_EQ(totals.slow, slow) << "size " << size << " seed " << seed;
      }
    }
  }
}

TEST(CountWindow, LargestWindowDoesNotOverflowItsPackedCounters) {
  CountWindow window(CountWindow::kMaxSize);
  WindowTotals totals;
  for (std::uint32_t i = 0; i < CountWindow::kMaxSize + 10; ++i)
    totals = window.record({true, true});
  EXPECT_EQ(totals.calls, CountWindow::kMaxSize);
  EXPECT_EQ(totals.failures, CountWindow::kMaxSize);
  EXPECT_EQ(totals.slow, CountWindow::kMaxSize);
}

TEST(CountWindow, ConcurrentRecordsLeaveTotalsEqualToTheSlots) {
  CountWindow window(64);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&window, t] {
      for (int i = 0; i < 50000; ++i) window.record({(i + t) % 3 == 0, i % 5 == 0});
    });
  }
  for (auto& thread : threads) thread.join();
  // Once writers are done, record 64 known calls: they replace every slot.
  WindowTotals totals;
  for (int i = 0; i < 64; ++i) totals = window.record({i < 10, i < 20});
  EXPECT_EQ(totals.calls, 64);
  EXPECT_EQ(totals.failures, 10);
  EXPECT_EQ(totals.slow, 20);
}

TEST(TimeWindow, BucketsExpireSecondBySecond) {
  TimeWindow window(3);
  TimePoint t0(std::chrono::seconds(1000));
  window.record({true, false}, t0);
  window.record({false, false}, t0 + 1s);
  window.record({false, true}, t0 + 2s);
  WindowTotals totals = window.totals(t0 + 2s + 999ms);
  EXPECT_EQ(totals.calls, 3);
  totals = window.totals(t0 + 3s);  // second 1000 has left the window
  EXPECT_EQ(totals.calls, 2);
  EXPECT_EQ(totals.failures, 0);
  EXPECT_EQ(totals.slow, 1);
  totals = window.totals(t0 + 100s);
  EXPECT_EQ(totals.calls, 0);
  EXPECT_EQ(totals.slow, 0);
}

TEST(TimeWindow, CallOlderThanTheWindowIsDropped) {
  TimeWindow window(2);
  TimePoint t0(std::chrono::seconds(1000));
  window.record({false, false}, t0 + 5s);
  WindowTotals totals = window.record({true, false}, t0);  // arrived late
  EXPECT_EQ(totals.calls, 1);
  EXPECT_EQ(totals.failures, 0);
}

}  // namespace
}  // namespace keel::resilience

#include "keel/core/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

namespace keel {
namespace {

TEST(ManualClock, TimeMovesOnlyWhenAdvanced) {
  ManualClock clock;
  TimePoint start = clock.now();
  EXPECT_EQ(clock.now(), start);
  clock.advance(250ms);
  EXPECT_EQ(clock.now() - start, 250ms);
}

TEST(ManualClock, AdvanceFiresDueTimersInDeadlineThenScheduleOrder) {
  ManualClock clock;
  std::vector<int> fired;
  TimePoint start = clock.now();
  clock.schedule_after(30ms, [&] { fired.push_back(3); });
  clock.schedule_after(10ms, [&] { fired.push_back(1); });
  clock.schedule_after(10ms, [&] { fired.push_back(2); });
  clock.schedule_after(50ms, [&] { fired.push_back(5); });
  std::vector<Duration> seen_at;
  clock.schedule_after(30ms, [&] { seen_at.push_back(clock.now() - start); });

  clock.advance(40ms);
  EXPECT_EQ(fired, (std::vector<int>{1, 2, 3}));
  ASSERT_EQ(seen_at.size(), 1u);
  EXPECT_EQ(seen_at[0], 30ms) << "now() inside a callback is the timer's deadline";
  EXPECT_EQ(clock.now() - start, 40ms);
  EXPECT_EQ(clock.pending_timers(), 1u);
}

TEST(ManualClock, TimerScheduledByACallbackFiresInTheSameAdvanceWhenDue) {
  ManualClock clock;
  int fired = 0;
  clock.schedule_after(10ms, [&] { clock.schedule_after(10ms, [&] { ++fired; }); });
  clock.advance(25ms);
  EXPECT_EQ(fired, 1);
}

TEST(ManualClock, CancelledTimerNeverFires) {
  ManualClock clock;
  bool fired = false;
  TimerId id = clock.schedule_after(10ms, [&] { fired = true; });
  EXPECT_TRUE(clock.cancel(id));
  EXPECT_FALSE(clock.cancel(id));
  clock.advance(1s);
  EXPECT_FALSE(fired);
}

TEST(ManualClock, SleepUntilWakesWhenAnotherThreadAdvances) {
  ManualClock clock;
  TimePoint deadline = clock.now() + 5s;
  std::atomic<bool> woke{false};
  std::thread sleeper([&] {
    sleep_until(clock, deadline);
    woke = true;
  });
  while (clock.pending_timers() == 0) std::this_thread::yield();
  EXPECT_FALSE(woke.load());
  clock.advance(5s);
  sleeper.join();
  EXPECT_TRUE(woke.load());
}

TEST(SteadyClock, FiresTimersAndStopJoins) {
  SteadyClock clock;
  std::atomic<int> fired{0};
  std::mutex mutex;
  std::condition_variable done;
  clock.schedule_after(1ms, [&] {
    std::lock_guard lock(mutex);
    ++fired;
    done.notify_one();
  });
  TimerId never = clock.schedule_after(std::chrono::hours(1), [&] { fired += 100; });
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(done.wait_for(lock, 10s, [&] { return fired.load() == 1; }));
  }
  EXPECT_TRUE(clock.cancel(never));
  clock.stop();
  EXPECT_EQ(clock.schedule_after(1ms, [] {}), 0u) << "a stopped clock schedules nothing";
  EXPECT_EQ(fired.load(), 1);
}

}  // namespace
}  // namespace keel

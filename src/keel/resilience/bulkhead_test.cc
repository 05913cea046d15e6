#include "keel/resilience/bulkhead.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <latch>
#include <stdexcept>

namespace keel::resilience {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A ManualClock that lets a test wait until someone schedules a timer: a waiter schedules its
// time-out only once it is in the bulkhead's queue, so this is how a test knows that another
// thread is now waiting, without sleeping or polling.
class WatchedClock final : public Clock {
 public:
  TimePoint now() const override { return clock_.now(); }
  std::int64_t unix_now_ns() const override { return clock_.unix_now_ns(); }
  TimerId schedule_at(TimePoint deadline, std::function<void()> callback) override {
    TimerId id = clock_.schedule_at(deadline, std::move(callback));
    {
      std::lock_guard lock(mutex_);
      ++scheduled_;
    }
    changed_.notify_all();
    return id;
  }
  bool cancel(TimerId id) override { return clock_.cancel(id); }

  void advance(Duration delta) { clock_.advance(delta); }
  std::size_t pending_timers() const { return clock_.pending_timers(); }
  void wait_until_scheduled(int timers) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return scheduled_ >= timers; });
  }

 private:
  ManualClock clock_;
  std::mutex mutex_;
  std::condition_variable changed_;
  int scheduled_ = 0;
};

SemaphoreBulkhead::Config limit(std::uint32_t max_calls, Duration max_wait = Duration::zero(),
                                std::uint32_t max_waiting = 1000) {
  SemaphoreBulkhead::Config config;
  config.max_concurrent_calls = max_calls;
  config.max_wait = max_wait;
  config.max_waiting_calls = max_waiting;
  return config;
}

// Collects what acquire_async() hands back.
struct Slot {
  std::optional<Admission<BulkheadPermit>> admission;
  SemaphoreBulkhead::AcquireCallback callback() {
    return [this](Admission<BulkheadPermit> result) { admission.emplace(std::move(result)); };
  }
  bool admitted() const { return admission && admission->admitted(); }
  bool rejected_with(errc reason) const {
    return admission && !admission->admitted() && admission->rejection().reason == reason;
  }
};

// ---- configuration ----

TEST(SemaphoreBulkheadConfig, ReadsFieldsOverDefaults) {
  auto document = config::Document::parse(
      "bulkhead:\n  max_concurrent_calls: 10\n  max_wait_ms: 250\n", "bulkhead.yaml");
  ASSERT_TRUE(document.ok()) << document.error().message();
  auto config = SemaphoreBulkhead::read_config(document->root().child("bulkhead"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  EXPECT_EQ(config.max_concurrent_calls, 10u);
  EXPECT_EQ(config.max_wait, 250ms);
  EXPECT_EQ(config.max_waiting_calls, 1000u);
}

TEST(SemaphoreBulkheadConfig, BadFieldsAreReportedWithLineAndField) {
  auto document = config::Document::parse(
      "bulkhead:\n"
      "  max_concurrent_calls: 0\n"
      "  max_wait_ms: soon\n"
      "  max_waiting_call: 3\n",
      "bulkhead.yaml");
  ASSERT_TRUE(document.ok()) << document.error().message();
  auto config = SemaphoreBulkhead::read_config(document->root().child("bulkhead"));
  auto status = document->status();
  ASSERT_FALSE(status.ok());
  const std::string& message = status.error().message();
  EXPECT_THAT(message, HasSubstr("bulkhead.yaml:2:25: bulkhead.max_concurrent_calls: expected a "
                                 "whole number from 1 to 4294967295, got 0"));
  EXPECT_THAT(message,
              HasSubstr("bulkhead.yaml:3:16: bulkhead.max_wait_ms: expected a whole number"));
  EXPECT_THAT(message,
              HasSubstr("bulkhead.yaml:4:3: bulkhead.max_waiting_call: unknown field (did you "
                        "mean 'max_waiting_calls'?)"));
  EXPECT_EQ(config.max_concurrent_calls, 25u) << "a rejected value leaves the default";
}

TEST(ThreadPoolBulkheadConfig, ReadsFieldsAndReportsMistakes) {
  auto document = config::Document::parse("pool:\n  threads: 0\n  queue_capacity: 8\n  thread: 2\n",
                                          "pool.yaml");
  ASSERT_TRUE(document.ok()) << document.error().message();
  auto config = ThreadPoolBulkhead::read_config(document->root().child("pool"));
  EXPECT_EQ(config.queue_capacity, 8u);
  EXPECT_EQ(config.threads, 4u);
  auto status = document->status();
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(status.error().message(),
              HasSubstr("pool.yaml:2:12: pool.threads: expected a whole number from 1 to"));
  EXPECT_THAT(status.error().message(),
              HasSubstr("pool.yaml:4:3: pool.thread: unknown field (did you mean 'threads'?)"));
}

// ---- SemaphoreBulkhead: admission ----

TEST(SemaphoreBulkhead, AdmitsUpToMaxConcurrentCallsThenRejects) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(2), clock);
  auto first = bulkhead.try_acquire();
  auto second = bulkhead.try_acquire();
  auto third = bulkhead.try_acquire();
  EXPECT_TRUE(first.admitted());
  EXPECT_TRUE(second.admitted());
  ASSERT_FALSE(third.admitted());
  EXPECT_EQ(third.rejection().reason, errc::bulkhead_full);
  EXPECT_EQ(bulkhead.available_permits(), 0u);

  first.permit().release();
  EXPECT_EQ(bulkhead.available_permits(), 1u);
  EXPECT_TRUE(bulkhead.try_acquire().admitted());
  EXPECT_EQ(bulkhead.available_permits(), 1u) << "the temporary permit was released";
}

TEST(SemaphoreBulkhead, ExactlyMaxCallersAdmittedAmongManyConcurrentOnes) {
  constexpr int kThreads = 8;
  constexpr int kTriesPerThread = 50;
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(10), clock);
  std::latch start(kThreads);
  std::latch all_tried(kThreads);
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      std::vector<BulkheadPermit> held;
      start.arrive_and_wait();
      for (int i = 0; i < kTriesPerThread; ++i) {
        auto admission = bulkhead.try_acquire();
        if (admission) held.push_back(std::move(admission).permit());
      }
      admitted += static_cast<int>(held.size());
      all_tried.arrive_and_wait();  // keep the permits until everyone has tried
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(admitted.load(), 10);
  EXPECT_EQ(bulkhead.available_permits(), 10u);
}

TEST(SemaphoreBulkhead, ZeroMaxWaitNeverQueues) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1), clock);
  auto held = bulkhead.try_acquire();
  Slot slot;
  bulkhead.acquire_async(slot.callback());
  EXPECT_TRUE(slot.rejected_with(errc::bulkhead_full));
  auto blocking = bulkhead.acquire();
  ASSERT_FALSE(blocking.admitted());
  EXPECT_EQ(blocking.rejection().reason, errc::bulkhead_full);
  EXPECT_EQ(bulkhead.waiting_calls(), 0u);
  EXPECT_EQ(clock.pending_timers(), 0u);
}

TEST(SemaphoreBulkhead, AsyncAcquireIsAdmittedAtOnceWhenFree) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 100ms), clock);
  Slot slot;
  bulkhead.acquire_async(slot.callback());
  EXPECT_TRUE(slot.admitted());
  EXPECT_EQ(bulkhead.available_permits(), 0u);
  EXPECT_EQ(clock.pending_timers(), 0u);
}

// ---- SemaphoreBulkhead: waiting ----

TEST(SemaphoreBulkhead, WaitersAreServedInArrivalOrder) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 1s), clock);
  auto held = bulkhead.try_acquire();
  std::vector<int> served;
  std::vector<BulkheadPermit> permits(4);
  for (int i = 1; i <= 3; ++i) {
    bulkhead.acquire_async([&, i](Admission<BulkheadPermit> admission) {
      ASSERT_TRUE(admission.admitted());
      served.push_back(i);
      permits[i] = std::move(admission).permit();
    });
  }
  EXPECT_EQ(bulkhead.waiting_calls(), 3u);

  held.permit().release();
  EXPECT_THAT(served, ElementsAre(1));
  permits[1].release();
  EXPECT_THAT(served, ElementsAre(1, 2));
  permits[2].release();
  EXPECT_THAT(served, ElementsAre(1, 2, 3));
  EXPECT_EQ(bulkhead.waiting_calls(), 0u);
  permits[3].release();
  EXPECT_EQ(bulkhead.available_permits(), 1u);
}

TEST(SemaphoreBulkhead, NewCallersDoNotBargeAheadOfWaiters) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(2, 1s), clock);
  auto first = bulkhead.try_acquire();
  auto second = bulkhead.try_acquire();
  Slot early;
  bulkhead.acquire_async(early.callback());

  first.permit().release();  // handed to `early`, never free for a newcomer
  ASSERT_TRUE(early.admitted());
  EXPECT_EQ(bulkhead.available_permits(), 0u);

  Slot waiting;
  bulkhead.acquire_async(waiting.callback());
  ASSERT_EQ(bulkhead.waiting_calls(), 1u);
  early.admission->permit().release();
  ASSERT_TRUE(waiting.admitted());

  // With a waiter queued, even a free-looking moment must not let try_acquire() in.
  Slot last;
  bulkhead.acquire_async(last.callback());
  auto barger = bulkhead.try_acquire();
  ASSERT_FALSE(barger.admitted());
  EXPECT_EQ(barger.rejection().reason, errc::bulkhead_full);
  second.permit().release();
  EXPECT_TRUE(last.admitted());
}

TEST(SemaphoreBulkhead, ReleaseHandsTheSlotToTheOldestWaiterAndCancelsItsTimer) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 100ms), clock);
  auto held = bulkhead.try_acquire();
  Slot oldest;
  Slot younger;
  bulkhead.acquire_async(oldest.callback());
  clock.advance(10ms);
  bulkhead.acquire_async(younger.callback());
  EXPECT_EQ(clock.pending_timers(), 2u);

  held.permit().release();
  EXPECT_TRUE(oldest.admitted());
  EXPECT_FALSE(younger.admission.has_value());
  EXPECT_EQ(bulkhead.available_permits(), 0u) << "the slot went to the waiter, not the pool";
  EXPECT_EQ(clock.pending_timers(), 1u) << "the served waiter's time-out was cancelled";

  clock.advance(1s);  // the served waiter is not timed out later
  EXPECT_TRUE(oldest.admitted());
  EXPECT_TRUE(younger.rejected_with(errc::bulkhead_timeout));
}

TEST(SemaphoreBulkhead, WaiterTimesOutAfterMaxWait) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 100ms), clock);
  auto held = bulkhead.try_acquire();
  Slot slot;
  bulkhead.acquire_async(slot.callback());

  clock.advance(99ms);
  EXPECT_FALSE(slot.admission.has_value());
  clock.advance(1ms);
  EXPECT_TRUE(slot.rejected_with(errc::bulkhead_timeout));
  EXPECT_EQ(bulkhead.waiting_calls(), 0u);

  held.permit().release();
  EXPECT_EQ(bulkhead.available_permits(), 1u) << "nobody is left to hand the slot to";
}

TEST(SemaphoreBulkhead, TimedOutWaiterIsSkippedAndTheNextIsServed) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 100ms), clock);
  auto held = bulkhead.try_acquire();
  Slot first;
  Slot second;
  bulkhead.acquire_async(first.callback());
  clock.advance(50ms);
  bulkhead.acquire_async(second.callback());
  clock.advance(50ms);
  EXPECT_TRUE(first.rejected_with(errc::bulkhead_timeout));
  EXPECT_FALSE(second.admission.has_value());

  held.permit().release();
  EXPECT_TRUE(second.admitted());
}

TEST(SemaphoreBulkhead, RejectsAtOnceWhenTheWaitQueueIsFull) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 1s, 2), clock);
  auto held = bulkhead.try_acquire();
  Slot a;
  Slot b;
  Slot c;
  bulkhead.acquire_async(a.callback());
  bulkhead.acquire_async(b.callback());
  bulkhead.acquire_async(c.callback());
  EXPECT_FALSE(a.admission.has_value());
  EXPECT_FALSE(b.admission.has_value());
  EXPECT_TRUE(c.rejected_with(errc::bulkhead_full));
  EXPECT_EQ(bulkhead.waiting_calls(), 2u);
  EXPECT_EQ(clock.pending_timers(), 2u);
  clock.advance(1s);  // nobody may still wait when the bulkhead and the slots go away
  EXPECT_TRUE(a.rejected_with(errc::bulkhead_timeout));
  EXPECT_TRUE(b.rejected_with(errc::bulkhead_timeout));
}

TEST(SemaphoreBulkhead, PermitIsMoveOnlyAndReleasesExactlyOnce) {
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(2), clock);
  static_assert(!std::is_copy_constructible_v<BulkheadPermit>);
  static_assert(std::is_nothrow_move_constructible_v<BulkheadPermit>);

  BulkheadPermit empty;
  EXPECT_FALSE(empty.held());
  empty.release();  // releases nothing
  EXPECT_EQ(bulkhead.available_permits(), 2u);

  BulkheadPermit a = bulkhead.try_acquire().permit();
  BulkheadPermit b = std::move(a);
  EXPECT_FALSE(a.held());  // NOLINT(bugprone-use-after-move): moved-from state is the contract
  EXPECT_TRUE(b.held());
  EXPECT_EQ(bulkhead.available_permits(), 1u);

  BulkheadPermit c = bulkhead.try_acquire().permit();
  EXPECT_EQ(bulkhead.available_permits(), 0u);
  c = std::move(b);  // c's own slot is released, b's is taken over
  EXPECT_EQ(bulkhead.available_permits(), 1u);
  c.release();
  c.release();
  EXPECT_EQ(bulkhead.available_permits(), 2u);
  {
    BulkheadPermit scoped = bulkhead.try_acquire().permit();
    EXPECT_EQ(bulkhead.available_permits(), 1u);
  }
  EXPECT_EQ(bulkhead.available_permits(), 2u);
}

// ---- SemaphoreBulkhead: blocking acquire ----

TEST(SemaphoreBulkhead, BlockingAcquireIsWokenByARelease) {
  WatchedClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 1s), clock);
  auto held = bulkhead.try_acquire();
  std::promise<bool> result;
  std::thread caller([&] {
    auto admission = bulkhead.acquire();
    result.set_value(admission.admitted());
  });
  clock.wait_until_scheduled(1);  // the caller is queued
  EXPECT_EQ(bulkhead.waiting_calls(), 1u);
  held.permit().release();
  EXPECT_TRUE(result.get_future().get());
  caller.join();
  EXPECT_EQ(bulkhead.available_permits(), 1u);
}

TEST(SemaphoreBulkhead, BlockingAcquireTimesOutWhenTheClockPassesMaxWait) {
  WatchedClock clock;
  SemaphoreBulkhead bulkhead("db", limit(1, 100ms), clock);
  auto held = bulkhead.try_acquire();
  std::promise<std::optional<errc>> result;
  std::thread caller([&] {
    auto admission = bulkhead.acquire();
    result.set_value(admission ? std::nullopt : std::optional(admission.rejection().reason));
  });
  clock.wait_until_scheduled(1);
  clock.advance(100ms);
  EXPECT_EQ(result.get_future().get(), errc::bulkhead_timeout);
  caller.join();
  EXPECT_EQ(bulkhead.waiting_calls(), 0u);
}

// ---- SemaphoreBulkhead: under load ----

TEST(SemaphoreBulkhead, StressNeverAdmitsMoreThanMaxConcurrentCalls) {
  constexpr std::uint32_t kMax = 2;
  constexpr int kThreads = 6;
  constexpr int kIterations = 2000;
  ManualClock clock;
  SemaphoreBulkhead bulkhead("db", limit(kMax, 5ms, 4), clock);
  std::atomic<int> in_use{0};
  std::atomic<int> most_in_use{0};
  std::atomic<int> admitted{0};
  std::atomic<int> timed_out{0};
  std::atomic<bool> workers_done{false};

  auto use = [&](BulkheadPermit permit) {
    int now_in_use = in_use.fetch_add(1) + 1;
    int most = most_in_use.load();
    while (now_in_use > most && !most_in_use.compare_exchange_weak(most, now_in_use)) {
    }
    ++admitted;
    std::this_thread::yield();  // hold the slot a while, so that others queue up
    in_use.fetch_sub(1);
    permit.release();
  };

  std::latch start(kThreads + 1);
  // Advances time so that some blocked callers time out while others are served.
  std::thread ticker([&] {
    start.arrive_and_wait();
    while (!workers_done.load()) {
      clock.advance(1ms);
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      start.arrive_and_wait();
      for (int i = 0; i < kIterations; ++i) {
        auto admission = (t + i) % 3 == 0 ? bulkhead.try_acquire() : bulkhead.acquire();
        if (admission) {
          use(std::move(admission).permit());
        } else if (admission.rejection().reason == errc::bulkhead_timeout) {
          ++timed_out;
        }
      }
    });
  }
  for (auto& worker : workers) worker.join();
  workers_done = true;
  ticker.join();

  EXPECT_LE(most_in_use.load(), static_cast<int>(kMax));
  EXPECT_GT(admitted.load(), 0);
  EXPECT_EQ(bulkhead.available_permits(), kMax);
  EXPECT_EQ(bulkhead.waiting_calls(), 0u);
}

// ---- SemaphoreBulkhead: metrics ----

TEST(SemaphoreBulkhead, ExportsGaugesAndCountersThatVanishWithTheBulkhead) {
  ManualClock clock;
  metrics::Registry registry;
  {
    SemaphoreBulkhead bulkhead("db", limit(2, 10ms, 1), clock);
    bulkhead.bind_metrics(registry);
    auto a = bulkhead.try_acquire();
    auto b = bulkhead.try_acquire();
    auto c = bulkhead.try_acquire();  // rejected
    Slot waiting;
    bulkhead.acquire_async(waiting.callback());
    std::string text = registry.render_prometheus();
    EXPECT_THAT(text, HasSubstr("keel_bulkhead_available_permits{bulkhead=\"db\"} 0\n"));
    EXPECT_THAT(text, HasSubstr("keel_bulkhead_max_allowed{bulkhead=\"db\"} 2\n"));
    EXPECT_THAT(text, HasSubstr("keel_bulkhead_waiting_calls{bulkhead=\"db\"} 1\n"));
    clock.advance(10ms);
    text = registry.render_prometheus();
    EXPECT_THAT(text,
                HasSubstr("keel_bulkhead_calls_total{bulkhead=\"db\",result=\"permitted\"} 2\n"));
    EXPECT_THAT(text,
                HasSubstr("keel_bulkhead_calls_total{bulkhead=\"db\",result=\"rejected\"} 1\n"));
    EXPECT_THAT(text,
                HasSubstr("keel_bulkhead_calls_total{bulkhead=\"db\",result=\"timed_out\"} 1\n"));
  }
  EXPECT_THAT(registry.render_prometheus(),
              ::testing::Not(HasSubstr("keel_bulkhead_available_permits{")));
}

// ---- ThreadPoolBulkhead ----

ThreadPoolBulkhead::Config pool(std::uint32_t threads, std::uint32_t queue_capacity) {
  ThreadPoolBulkhead::Config config;
  config.threads = threads;
  config.queue_capacity = queue_capacity;
  return config;
}

// Holds the pool's only worker until opened, and tells the test when the worker has started.
// Declare it before the pool: the worker may be inside the gate until the pool has stopped.
struct Gate {
  std::promise<void> started;
  std::promise<void> open;
  std::shared_future<void> opened = open.get_future().share();
  std::function<void()> task() {
    return [this] {
      started.set_value();
      opened.wait();
    };
  }
};

TEST(ThreadPoolBulkhead, RunsTasksAndDeliversResults) {
  ThreadPoolBulkhead bulkhead("io", pool(2, 10));
  auto sum = bulkhead.submit([] { return 2 + 3; });
  auto text = bulkhead.submit([] { return std::string("done"); });
  ASSERT_TRUE(sum.admitted());
  ASSERT_TRUE(text.admitted());
  EXPECT_EQ(sum.permit().get(), 5);
  EXPECT_EQ(text.permit().get(), "done");
}

TEST(ThreadPoolBulkhead, RejectsWhenTheQueueIsFull) {
  Gate gate;
  ThreadPoolBulkhead bulkhead("io", pool(1, 2));
  auto running = bulkhead.submit(gate.task());
  gate.started.get_future().wait();
  auto queued1 = bulkhead.submit([] { return 1; });
  auto queued2 = bulkhead.submit([] { return 2; });
  auto overflow = bulkhead.submit([] { return 3; });
  ASSERT_TRUE(queued1.admitted());
  ASSERT_TRUE(queued2.admitted());
  ASSERT_FALSE(overflow.admitted());
  EXPECT_EQ(overflow.rejection().reason, errc::bulkhead_full);
  EXPECT_EQ(bulkhead.queue_depth(), 2u);
  EXPECT_EQ(bulkhead.remaining_queue_capacity(), 0u);
  EXPECT_EQ(bulkhead.active_threads(), 1u);

  gate.open.set_value();
  EXPECT_EQ(queued1.permit().get(), 1);
  EXPECT_EQ(queued2.permit().get(), 2);
}

TEST(ThreadPoolBulkhead, StopRunsQueuedTasksThenRejectsNewOnes) {
  Gate gate;
  ThreadPoolBulkhead bulkhead("io", pool(1, 2));
  auto running = bulkhead.submit(gate.task());
  gate.started.get_future().wait();
  auto queued1 = bulkhead.submit([] { return 1; });
  auto queued2 = bulkhead.submit([] { return 2; });
  ASSERT_TRUE(queued1.admitted() && queued2.admitted());

  // The queue is full, so submissions are refused as full until stop() begins and as stopped
  // after: the first `stopped` is the signal to let the worker go.
  std::thread opener([&] {
    while (bulkhead.submit([] { return 0; }).rejection().reason != errc::stopped) {
      std::this_thread::yield();
    }
    gate.open.set_value();
  });
  bulkhead.stop(/*run_queued=*/true);
  opener.join();

  EXPECT_EQ(queued1.permit().get(), 1);
  EXPECT_EQ(queued2.permit().get(), 2);
  auto late = bulkhead.submit([] { return 3; });
  ASSERT_FALSE(late.admitted());
  EXPECT_EQ(late.rejection().reason, errc::stopped);
  bulkhead.stop();  // idempotent
}

TEST(ThreadPoolBulkhead, StopWithoutRunningQueuedTasksBreaksTheirPromises) {
  Gate gate;
  ThreadPoolBulkhead bulkhead("io", pool(1, 2));
  auto running = bulkhead.submit(gate.task());
  gate.started.get_future().wait();
  auto queued1 = bulkhead.submit([] { return 1; });
  auto queued2 = bulkhead.submit([] { return 2; });
  ASSERT_TRUE(queued1.admitted() && queued2.admitted());

  // queued1 can only become ready by being dropped while the worker is held.
  std::thread opener([&] {
    queued1.permit().wait();
    gate.open.set_value();
  });
  bulkhead.stop(/*run_queued=*/false);
  opener.join();

  running.permit().get();  // the task already running finished normally
  for (auto* queued : {&queued1, &queued2}) {
    try {
      queued->permit().get();
      ADD_FAILURE() << "a dropped task ran";
    } catch (const std::future_error& error) {
      EXPECT_EQ(error.code(), std::future_errc::broken_promise);
    }
  }
  EXPECT_EQ(bulkhead.submit([] { return 3; }).rejection().reason, errc::stopped);
}

TEST(ThreadPoolBulkhead, ExceptionFromATaskLandsInItsFuture) {
  ThreadPoolBulkhead bulkhead("io", pool(1, 2));
  auto failing = bulkhead.submit([]() -> int { throw std::runtime_error("boom"); });
  auto after = bulkhead.submit([] { return 7; });
  ASSERT_TRUE(failing.admitted() && after.admitted());
  EXPECT_EQ(after.permit().get(), 7) << "the worker survived the exception";
  // Join the worker before touching the exception: the worker may drop the last reference to
  // the task's shared state, and TSan cannot see libstdc++'s exception_ptr reference counting
  // (it is not instrumented), so it would report a race that is not there.
  bulkhead.stop();
  EXPECT_THROW(
      {
        try {
          failing.permit().get();
        } catch (const std::runtime_error& error) {
          EXPECT_STREQ(error.what(), "boom");
          throw;
        }
      },
      std::runtime_error);
}

TEST(ThreadPoolBulkhead, AcceptsMoveOnlyTasks) {
  ThreadPoolBulkhead bulkhead("io", pool(1, 1));
  auto value = std::make_unique<int>(41);
  auto result = bulkhead.submit([value = std::move(value)] { return *value + 1; });
  EXPECT_EQ(result.permit().get(), 42);
}

TEST(ThreadPoolBulkhead, DestructorRunsQueuedTasks) {
  std::atomic<int> ran{0};
  {
    ThreadPoolBulkhead bulkhead("io", pool(2, 50));
    for (int i = 0; i < 50; ++i) {
      auto submitted = bulkhead.submit([&] { ++ran; });
      ASSERT_TRUE(submitted.admitted());
    }
  }
  EXPECT_EQ(ran.load(), 50);
}

TEST(ThreadPoolBulkhead, ExportsQueueAndThreadGauges) {
  metrics::Registry registry;
  {
    Gate gate;
    ThreadPoolBulkhead bulkhead("io", pool(1, 2));
    bulkhead.bind_metrics(registry);
    auto running = bulkhead.submit(gate.task());
    gate.started.get_future().wait();
    auto queued = bulkhead.submit([] {});
    std::string text = registry.render_prometheus();
    EXPECT_THAT(text, HasSubstr("keel_thread_pool_bulkhead_queue_depth{bulkhead=\"io\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_thread_pool_bulkhead_remaining_queue_capacity{bulkhead="
                                "\"io\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_thread_pool_bulkhead_active_threads{bulkhead=\"io\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_thread_pool_bulkhead_threads{bulkhead=\"io\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("keel_thread_pool_bulkhead_calls_total{bulkhead=\"io\",result="
                                "\"permitted\"} 2\n"));
    gate.open.set_value();
  }
  EXPECT_THAT(registry.render_prometheus(),
              ::testing::Not(HasSubstr("keel_thread_pool_bulkhead_queue_depth{")));
}

}  // namespace
}  // namespace keel::resilience

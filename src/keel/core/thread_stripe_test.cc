#include "keel/core/thread_stripe.h"

#include <gtest/gtest.h>

#include <latch>
#include <set>
#include <thread>
#include <vector>

namespace keel {
namespace {

TEST(ThreadSlot, LiveThreadsHaveDistinctIndicesAndExitedThreadsGiveTheirsBack) {
  constexpr int kThreads = 6;
  std::vector<std::size_t> seen(kThreads);
  {
    // All alive at once: no two may share an index.
    std::latch all_claimed(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        seen[t] = thread_slot_index();
        EXPECT_EQ(thread_slot_index(), seen[t]);  // fixed for the thread's life
        all_claimed.arrive_and_wait();
      });
    }
    for (auto& thread : threads) thread.join();
  }
  std::set<std::size_t> distinct(seen.begin(), seen.end());
  EXPECT_EQ(distinct.size(), seen.size());

  // Those threads have exited, so one started now gets the lowest of the indices they held (or
  // one below, freed by a thread of another test), not a fresh one past them all.
  std::size_t reused = 0;
  std::thread([&] { reused = thread_slot_index(); }).join();
  EXPECT_LE(reused, *distinct.begin());
  // And a thread started after it exited gets the same again.
  std::size_t again = 0;
  std::thread([&] { again = thread_slot_index(); }).join();
  EXPECT_EQ(again, reused);
}

TEST(ThreadSlot, StripeIndexIsTheSlotIndex) {
  EXPECT_EQ(thread_stripe_index(), thread_slot_index());
}

}  // namespace
}  // namespace keel

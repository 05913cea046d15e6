#include "keel/core/spsc_ring.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

namespace keel {
namespace {

TEST(SpscRing, IsFirstInFirstOutAndBounded) {
  SpscRing<int, 4> ring;
  EXPECT_FALSE(ring.pop());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(ring.push(i));
  EXPECT_FALSE(ring.push(4));  // full
  EXPECT_EQ(ring.pop(), 0);
  EXPECT_TRUE(ring.push(4));  // room again, wrapping around
  for (int i = 1; i <= 4; ++i) EXPECT_EQ(ring.pop(), i);
  EXPECT_FALSE(ring.pop());
}

TEST(SpscRing, HandsEveryValueAcrossThreadsInOrder) {
  SpscRing<std::uint64_t, 64> ring;
  constexpr std::uint64_t kCount = 200000;
  std::thread producer([&] {
    for (std::uint64_t i = 0; i < kCount;) {
      if (ring.push(i)) ++i;
    }
  });
  std::uint64_t expected = 0;
  while (expected < kCount) {
    if (auto value = ring.pop()) {
      ASSERT_EQ(*value, expected);
      ++expected;
    }
  }
  producer.join();
  EXPECT_FALSE(ring.pop());
}

}  // namespace
}  // namespace keel

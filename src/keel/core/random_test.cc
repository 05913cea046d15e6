#include "keel/core/random.h"

#include <gtest/gtest.h>

#include <vector>

namespace keel {
namespace {

TEST(Random, SameSeedGivesSameSequence) {
  Random a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    std::uint64_t x = a.next();
    EXPECT_EQ(x, b.next());
    differs |= x != c.next();
  }
  EXPECT_TRUE(differs);
}

TEST(Random, UniformStaysInRangeAndCoversIt) {
  Random random(7);
  std::vector<int> counts(10);
  for (int i = 0; i < 100000; ++i) {
    std::uint64_t x = random.uniform(10);
    ASSERT_LT(x, 10u);
    ++counts[x];
  }
  for (int count : counts) {
    EXPECT_GT(count, 9000);
    EXPECT_LT(count, 11000);
  }
  for (int i = 0; i < 1000; ++i) {
    double u = random.uniform01();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
  }
}

}  // namespace
}  // namespace keel

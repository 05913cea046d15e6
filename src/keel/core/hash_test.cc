#include "keel/core/hash.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "keel/core/random.h"

namespace keel {
namespace {

constexpr std::uint64_t kSeed = 20240601;
constexpr int kKeys = 1'000'000;

std::vector<std::uint64_t> random_keys(std::uint64_t seed, int count) {
  Random random(seed);
  std::vector<std::uint64_t> keys(static_cast<std::size_t>(count));
  for (auto& key : keys) key = random.next();
  return keys;
}

// Placements are stored (slot maps in etcd) and compared across machines, so these values must
// never change. The empty-string value is XXH3's own published test vector; the rest were
// computed once with it.
TEST(Hash64, GivesThePinnedValuesForStrings) {
  EXPECT_EQ(hash64(std::string_view("")), 0x2d06800538d394c2ULL);
  EXPECT_EQ(hash64(std::string_view("order-42")), 0x79cca5910b9ace3cULL);
  EXPECT_EQ(hash64(std::string_view("order-42"), 7), 0xedebcc5fcae78e3cULL);
}

TEST(Hash64, GivesThePinnedValuesForIntegers) {
  EXPECT_EQ(hash64(std::uint64_t{0}), 0xc77b3abb6f87acd9ULL);
  EXPECT_EQ(hash64(std::uint64_t{42}), 0xd5a6f8c838df27c8ULL);
  EXPECT_EQ(hash64(std::uint64_t{0x0123456789abcdefULL}, 1), 0xd95750386d2d6e1dULL);
}

TEST(Hash64, HashesAnIntegerAsItsLittleEndianBytes) {
  const std::uint64_t value = 0x0123456789abcdefULL;
  const char bytes[] = {'\xef', '\xcd', '\xab', '\x89', '\x67', '\x45', '\x23', '\x01'};
  EXPECT_EQ(hash64(value, 1), hash64(std::string_view(bytes, sizeof bytes), 1));
}

TEST(Hash64, SeedChangesTheHash) {
  EXPECT_NE(hash64(std::string_view("order-42"), 0), hash64(std::string_view("order-42"), 1));
}

// Known answers shared by the Go, Python, C and Elixir ports of Lamping & Veach's algorithm.
TEST(JumpConsistentHash, MatchesOtherImplementations) {
  struct Vector {
    std::uint64_t key;
    std::int32_t buckets;
    std::int32_t expected;
  };
  const Vector vectors[] = {
      {1, 1, 0},
      {42, 57, 43},
      {0xDEAD10CC, 1, 0},
      {0xDEAD10CC, 666, 361},
      {256, 1024, 520},
      {0, 1, 0},
      {4, 2, 1},
      {7, 2, 0},
      {1, 128, 55},
      {129, 128, 120},
      {128, 100000000, 38172097},
      {0xFFFFFFFFFFFFFFFFULL, 128, 92},
  };
  for (const auto& vector : vectors) {
    EXPECT_EQ(jump_consistent_hash(vector.key, vector.buckets), vector.expected)
        << "key " << vector.key << ", " << vector.buckets << " buckets";
  }
}

TEST(JumpConsistentHash, IsDeterministicAndInRange) {
  for (std::int32_t buckets : {1, 2, 7, 100, 65536, 1 << 30}) {
    for (std::uint64_t key : random_keys(kSeed, 10'000)) {
      std::int32_t bucket = jump_consistent_hash(key, buckets);
      ASSERT_GE(bucket, 0) << "seed " << kSeed << ", key " << key << ", buckets " << buckets;
      ASSERT_LT(bucket, buckets) << "seed " << kSeed << ", key " << key << ", buckets " << buckets;
      ASSERT_EQ(bucket, jump_consistent_hash(key, buckets)) << "key " << key;
    }
  }
}

TEST(JumpConsistentHash, SpreadsKeysEvenly) {
  // 1M keys over 10 buckets: 100,000 expected each, one standard deviation is 0.3%, so 1.5% is
  // five deviations; over 1000 buckets (1000 expected, 3.2% per deviation) 15% is almost five.
  for (auto [buckets, bound] : {std::pair{10, 1.015}, std::pair{1000, 1.15}}) {
    std::vector<int> counts(static_cast<std::size_t>(buckets), 0);
    for (std::uint64_t key : random_keys(kSeed, kKeys))
      ++counts[jump_consistent_hash(key, buckets)];
    double mean = static_cast<double>(kKeys) / buckets;
    double max = *std::max_element(counts.begin(), counts.end());
    double min = *std::min_element(counts.begin(), counts.end());
    EXPECT_LE(max / mean, bound) << "seed " << kSeed << ", " << buckets << " buckets";
    EXPECT_GE(min / mean, 2 - bound) << "seed " << kSeed << ", " << buckets << " buckets";
  }
}

TEST(JumpConsistentHash, GrowingByOneBucketMovesOnlyItsShareAndOnlyToTheNewBucket) {
  const std::vector<std::uint64_t> keys = random_keys(kSeed, kKeys);
  for (std::int32_t buckets : {1, 5, 10, 100}) {
    int moved = 0;
    for (std::uint64_t key : keys) {
      std::int32_t before = jump_consistent_hash(key, buckets);
      std::int32_t after = jump_consistent_hash(key, buckets + 1);
      if (before == after) continue;
      ++moved;
      ASSERT_EQ(after, buckets) << "seed " << kSeed << ", key " << key << " moved from bucket "
                                << before << " to " << after << " going to " << buckets + 1;
    }
    double fraction = static_cast<double>(moved) / kKeys;
    double ideal = 1.0 / (buckets + 1);
    // 100 -> 101 moves about 9,900 of the 1M keys, one standard deviation being 1% of that; the
    // 5% allowed is five deviations there and more for fewer buckets.
    EXPECT_NEAR(fraction, ideal, 0.05 * ideal)
        << "seed " << kSeed << ", " << buckets << " -> " << buckets + 1 << " buckets";
  }
}

}  // namespace
}  // namespace keel

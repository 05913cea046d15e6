// Randomness as a dependency: a seedable generator, so a test or a simulation that fails can
// be replayed from its seed.
#pragma once

#include <cstdint>
#include <limits>

namespace keel {

// xoshiro256** seeded through splitmix64. Fast, good statistical quality, not cryptographic.
// Not thread-safe: give each thread its own, or guard it.
class Random {
 public:
  using result_type = std::uint64_t;

  explicit Random(std::uint64_t seed);

  std::uint64_t next();
  // Uniform in [0, bound). `bound` must be positive.
  std::uint64_t uniform(std::uint64_t bound);
  // Uniform in [0, 1).
  double uniform01();
  // True with probability `p`.
  bool bernoulli(double p) { return uniform01() < p; }

  // UniformRandomBitGenerator, for <random> distributions and std::shuffle.
  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }
  result_type operator()() { return next(); }

 private:
  std::uint64_t state_[4];
};

// 64 bits from the operating system's entropy (std::random_device): a seed for a generator that
// must differ between processes. Code that takes a seed defaults to this; tests pass their own.
std::uint64_t random_seed();

}  // namespace keel

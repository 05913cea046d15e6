// Generic hashing: XXH3 for keys, and Google's jump consistent hash for numbered buckets.
#pragma once

#include <cstdint>
#include <string_view>

namespace keel {

// XXH3 64-bit of `data`. Stable across runs, processes and machines: placements computed from
// it can be stored and compared.
std::uint64_t hash64(std::string_view data, std::uint64_t seed = 0);
// XXH3 64-bit of the 8 bytes of `value` (little-endian).
std::uint64_t hash64(std::uint64_t value, std::uint64_t seed = 0);

// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014): a bucket in
// [0, buckets) for `key`, moving only 1/(n+1) of keys when going from n to n+1 buckets.
// `buckets` must be positive. Buckets can only be added or removed at the end.
std::int32_t jump_consistent_hash(std::uint64_t key, std::int32_t buckets);

}  // namespace keel

#include "keel/core/hash.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cassert>

namespace keel {

std::uint64_t hash64(std::string_view data, std::uint64_t seed) {
  return XXH3_64bits_withSeed(data.data(), data.size(), seed);
}

std::uint64_t hash64(std::uint64_t value, std::uint64_t seed) {
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(value >> (8 * i));
  return XXH3_64bits_withSeed(bytes, sizeof bytes, seed);
}

std::int32_t jump_consistent_hash(std::uint64_t key, std::int32_t buckets) {
  assert(buckets > 0);
  std::int64_t bucket = -1;
  std::int64_t next = 0;
  while (next < buckets) {
    bucket = next;
    key = key * 2862933555777941757ULL + 1;
    next = static_cast<std::int64_t>(
        static_cast<double>(bucket + 1) *
        (static_cast<double>(1LL << 31) / static_cast<double>((key >> 33) + 1)));
  }
  return static_cast<std::int32_t>(bucket);
}

}  // namespace keel

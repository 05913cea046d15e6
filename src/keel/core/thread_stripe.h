// Spreads threads over a fixed number of stripes (cache-line-padded slots), so counters that
// many threads update do not bounce one cache line between cores.
#pragma once

#include <atomic>
#include <cstddef>

namespace keel {

// Alignment that keeps two hot atomics from interfering: 128 bytes, not 64, because adjacent-line
// prefetchers pull cache lines in pairs (measured here: two threads on neighbouring 64-byte
// stripes ran at half speed).
inline constexpr std::size_t kNoFalseSharing = 128;

// A small per-thread number, assigned round-robin on a thread's first call and fixed after.
inline std::size_t thread_stripe_index() {
  static std::atomic<std::size_t> next_thread{0};
  thread_local const std::size_t index = next_thread.fetch_add(1, std::memory_order_relaxed);
  return index;
}

}  // namespace keel

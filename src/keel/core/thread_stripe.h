// Spreads threads over a fixed number of stripes (cache-line-padded slots), so counters that
// many threads update do not bounce one cache line between cores.
#pragma once

#include <atomic>
#include <cstddef>
#include <limits>

namespace keel {

// Alignment that keeps two hot atomics from interfering: 128 bytes, not 64, because adjacent-line
// prefetchers pull cache lines in pairs (measured here: two threads on neighbouring 64-byte
// stripes ran at half speed).
inline constexpr std::size_t kNoFalseSharing = 128;

namespace detail {
inline constexpr std::size_t kSlotUnclaimed = std::numeric_limits<std::size_t>::max();
// What a thread's index becomes once its slot has been given back at thread exit: larger than
// any table, so code running in later thread_local destructors uses a table's shared path.
inline constexpr std::size_t kSlotReleased = kSlotUnclaimed - 1;
// Constant-initialised, so reading it is a plain TLS load with no init guard.
inline thread_local std::size_t thread_slot = kSlotUnclaimed;
// Takes the lowest free index for this thread and arranges for it to be given back when the
// thread exits; returns it.
std::size_t claim_thread_slot();
}  // namespace detail

// A small number no other live thread has: the lowest free one, taken on a thread's first call
// and given back when the thread exits, after which a new thread may take it. Because no two live
// threads share an index, a table with one slot per index gives each of the first N threads a
// slot that only it writes, which it can update with a plain load and store instead of a
// read-modify-write. Everything the previous holder wrote happens-before the next holder's first
// call (the hand-over goes through a mutex). Because indices are reused, a process that starts
// and stops threads (a growing pool, a benchmark harness) keeps using the first few. In a
// thread_local destructor that runs after the index was given back, it returns a value above
// any table size (treat it as "no slot of your own").
inline std::size_t thread_slot_index() {
  std::size_t slot = detail::thread_slot;
  if (slot == detail::kSlotUnclaimed) [[unlikely]]
    slot = detail::claim_thread_slot();
  return slot;
}

// The stripe index for counters that take `% stripes`: the thread's slot index, so the first
// `stripes` live threads never share a stripe.
inline std::size_t thread_stripe_index() { return thread_slot_index(); }

}  // namespace keel

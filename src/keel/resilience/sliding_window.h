// The circuit breaker's sliding windows: counts of calls, failures and slow calls over the
// last N calls or the last N seconds, with O(1) totals and no locks.
//
// Every change to a slot or bucket is paired with the same change to the totals, so the totals
// always equal the sum of the slots once concurrent writers have finished. While writers race,
// a reader may see a total one or two calls off; a result that races with a reset may land in
// the fresh window. Neither can drift the counts over time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "keel/core/clock.h"
#include "keel/core/thread_stripe.h"

namespace keel::resilience {

struct WindowTotals {
  std::int64_t calls = 0;
  std::int64_t failures = 0;
  std::int64_t slow = 0;
};

// What one call contributes.
struct CallRecord {
  bool failed;
  bool slow;
};

// The last `size` calls, in a ring of one byte per call, eight to an atomic word. The three
// totals are packed in one 64-bit word (21 bits each), so a record costs one fetch_add on the
// ring index, one compare-and-swap on the slot's word and one fetch_add on the totals (the two
// counters share a cache line), and a batch of successes one compare-and-swap per eight calls.
class CountWindow {
 public:
  static constexpr std::uint32_t kMaxSize = (1u << 20) - 1;

  // `size` must be in [1, kMaxSize].
  explicit CountWindow(std::uint32_t size);

  // Adds a call, evicting the oldest once the window is full; returns the totals after it.
  WindowTotals record(CallRecord call);
  // Adds `count` successful, fast calls at once.
  WindowTotals record_successes(std::uint32_t count);
  WindowTotals totals() const;
  void reset();

 private:
  static std::uint64_t pack(std::int64_t calls, std::int64_t failures, std::int64_t slow);
  static WindowTotals unpack(std::uint64_t packed);
  // Writes `code` into `count` consecutive slots from `first`, all within one word; returns the
  // packed change to the totals.
  std::uint64_t replace_in_word(std::uint64_t first, std::uint32_t count, std::uint8_t code);

  std::uint32_t size_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> words_;
  alignas(kNoFalseSharing) std::atomic<std::uint64_t> next_slot_{0};
  std::atomic<std::uint64_t> packed_totals_{0};
};

// The calls of the last `seconds` whole seconds, one bucket per second. The first record of a
// new second clears the buckets of the seconds that passed, so totals never include calls older
// than the window even after a quiet period.
class TimeWindow {
 public:
  static constexpr std::uint32_t kMaxSeconds = 3600;

  // `seconds` must be in [1, kMaxSeconds].
  explicit TimeWindow(std::uint32_t seconds);

  WindowTotals record(CallRecord call, TimePoint now);
  WindowTotals record_successes(std::uint32_t count, TimePoint now);
  WindowTotals totals(TimePoint now);
  void reset();

 private:
  struct Bucket {
    std::atomic<std::int64_t> second{-1};
    std::atomic<std::int64_t> calls{0};
    std::atomic<std::int64_t> failures{0};
    std::atomic<std::int64_t> slow{0};
  };
  WindowTotals add(std::int64_t calls, bool failed, bool slow, TimePoint now);
  void advance_to(std::int64_t second);
  void clear(Bucket& bucket, std::int64_t new_second);
  WindowTotals load_totals() const;

  std::uint32_t seconds_;
  std::unique_ptr<Bucket[]> buckets_;
  alignas(kNoFalseSharing) std::atomic<std::int64_t> latest_second_{-1};
  std::atomic<std::int64_t> calls_{0};
  std::atomic<std::int64_t> failures_{0};
  std::atomic<std::int64_t> slow_{0};
};

}  // namespace keel::resilience

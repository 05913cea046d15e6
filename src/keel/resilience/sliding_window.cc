#include "keel/resilience/sliding_window.h"

#include <algorithm>
#include <bit>

#include "keel/core/check.h"

namespace keel::resilience {
namespace {

constexpr int kFieldBits = 21;
constexpr std::int64_t kFieldMask = (std::int64_t{1} << kFieldBits) - 1;

// Slot encoding: bit 0 = holds a call, bit 1 = failed, bit 2 = slow.
std::uint8_t encode(CallRecord call) {
  return static_cast<std::uint8_t>(1u | (call.failed ? 2u : 0u) | (call.slow ? 4u : 0u));
}

}  // namespace

CountWindow::CountWindow(std::uint32_t size)
    : size_(size), words_(new std::atomic<std::uint64_t>[(size + 7) / 8]) {
  KEEL_CHECK(size >= 1 && size <= kMaxSize, "count window size out of range");
  for (std::uint32_t i = 0; i < (size + 7) / 8; ++i) words_[i].store(0, std::memory_order_relaxed);
}

std::uint64_t CountWindow::pack(std::int64_t calls, std::int64_t failures, std::int64_t slow) {
  // Fields may be negative (a removal); two's complement addition of the packed word still
  // adds each field exactly, and unpack() reads fields back as signed.
  return static_cast<std::uint64_t>(calls) + (static_cast<std::uint64_t>(failures) << kFieldBits) +
         (static_cast<std::uint64_t>(slow) << (2 * kFieldBits));
}

WindowTotals CountWindow::unpack(std::uint64_t packed) {
  auto rest = static_cast<std::int64_t>(packed);
  auto take = [&rest] {
    std::int64_t field = rest & kFieldMask;
    if (field > (kFieldMask >> 1)) field -= kFieldMask + 1;  // sign-extend
    rest = (rest - field) >> kFieldBits;
    return field;
  };
  WindowTotals totals;
  totals.calls = take();
  totals.failures = take();
  totals.slow = take();
  return totals;
}

std::uint64_t CountWindow::replace_in_word(std::uint64_t first, std::uint32_t count,
                                           std::uint8_t code) {
  constexpr std::uint64_t kBit0 = 0x0101010101010101ULL;
  const int shift = static_cast<int>(first % 8) * 8;
  const std::uint64_t mask = (count == 8 ? ~0ULL : ((1ULL << (count * 8)) - 1)) << shift;
  const std::uint64_t fill = (kBit0 * code) & mask;
  std::atomic<std::uint64_t>& word = words_[first / 8];
  std::uint64_t old = word.load(std::memory_order_relaxed);
  // When the slots already hold these calls (successes replacing successes, the steady state of
  // a healthy dependency) the write would change nothing: skipping it keeps the cache line
  // shared between the cores instead of pulling it over to this one on every batch.
  if ((old & mask) == fill) return 0;
  while (!word.compare_exchange_weak(old, (old & ~mask) | fill, std::memory_order_relaxed)) {
  }
  const std::uint64_t removed = old & mask;
  auto count_bit = [](std::uint64_t bytes, int bit) {
    return static_cast<std::int64_t>(std::popcount(bytes & (kBit0 << bit)));
  };
  return pack(count_bit(fill, 0) - count_bit(removed, 0),
              count_bit(fill, 1) - count_bit(removed, 1),
              count_bit(fill, 2) - count_bit(removed, 2));
}

WindowTotals CountWindow::record(CallRecord call) {
  std::uint64_t index = next_slot_.fetch_add(1, std::memory_order_relaxed) % size_;
  std::uint64_t delta = replace_in_word(index, 1, encode(call));
  return unpack(packed_totals_.fetch_add(delta, std::memory_order_relaxed) + delta);
}

WindowTotals CountWindow::record_successes(std::uint32_t count) {
  std::uint64_t first = next_slot_.fetch_add(count, std::memory_order_relaxed);
  // A batch longer than the window would only overwrite itself: its last `size_` calls remain.
  if (count > size_) {
    first += count - size_;
    count = size_;
  }
  std::uint64_t index = first % size_;
  std::uint64_t delta = 0;
  while (count > 0) {
    // The run that stays within one word and does not wrap around the ring.
    auto run =
        static_cast<std::uint32_t>(std::min<std::uint64_t>({count, 8 - index % 8, size_ - index}));
    delta += replace_in_word(index, run, encode({false, false}));
    count -= run;
    index = (index + run) % size_;
  }
  // Likewise a batch that changed no slot leaves the totals as they are.
  if (delta == 0) return unpack(packed_totals_.load(std::memory_order_relaxed));
  return unpack(packed_totals_.fetch_add(delta, std::memory_order_relaxed) + delta);
}

WindowTotals CountWindow::totals() const {
  return unpack(packed_totals_.load(std::memory_order_relaxed));
}

void CountWindow::reset() {
  for (std::uint32_t i = 0; i < (size_ + 7) / 8; ++i) {
    std::uint64_t removed = words_[i].exchange(0, std::memory_order_relaxed);
    if (removed == 0) continue;
    constexpr std::uint64_t kBit0 = 0x0101010101010101ULL;
    packed_totals_.fetch_sub(
        pack(std::popcount(removed & kBit0), std::popcount(removed & (kBit0 << 1)),
             std::popcount(removed & (kBit0 << 2))),
        std::memory_order_relaxed);
  }
}

TimeWindow::TimeWindow(std::uint32_t seconds) : seconds_(seconds), buckets_(new Bucket[seconds]) {
  KEEL_CHECK(seconds >= 1 && seconds <= kMaxSeconds, "time window length out of range");
}

void TimeWindow::clear(Bucket& bucket, std::int64_t new_second) {
  calls_.fetch_sub(bucket.calls.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
  failures_.fetch_sub(bucket.failures.exchange(0, std::memory_order_relaxed),
                      std::memory_order_relaxed);
  slow_.fetch_sub(bucket.slow.exchange(0, std::memory_order_relaxed), std::memory_order_relaxed);
  bucket.second.store(new_second, std::memory_order_release);
}

void TimeWindow::advance_to(std::int64_t second) {
  std::int64_t latest = latest_second_.load(std::memory_order_acquire);
  while (second > latest) {
    if (latest_second_.compare_exchange_weak(latest, second, std::memory_order_acq_rel)) {
      // This thread alone moved the window from `latest` to `second`: it recycles the buckets
      // of the seconds in between (at most one lap of the ring).
      std::int64_t first = std::max(latest + 1, second - static_cast<std::int64_t>(seconds_) + 1);
      for (std::int64_t s = first; s <= second; ++s) clear(buckets_[s % seconds_], s);
      return;
    }
  }
}

WindowTotals TimeWindow::record(CallRecord call, TimePoint now) {
  return add(1, call.failed, call.slow, now);
}

WindowTotals TimeWindow::record_successes(std::uint32_t count, TimePoint now) {
  return add(count, false, false, now);
}

WindowTotals TimeWindow::add(std::int64_t calls, bool failed, bool slow, TimePoint now) {
  std::int64_t second =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  advance_to(second);
  Bucket& bucket = buckets_[second % seconds_];
  // A bucket still labelled with another second is either being recycled right now or this
  // call is older than the window; either way it does not belong in the totals.
  if (bucket.second.load(std::memory_order_acquire) == second) {
    bucket.calls.fetch_add(calls, std::memory_order_relaxed);
    calls_.fetch_add(calls, std::memory_order_relaxed);
    if (failed) {
      bucket.failures.fetch_add(1, std::memory_order_relaxed);
      failures_.fetch_add(1, std::memory_order_relaxed);
    }
    if (slow) {
      bucket.slow.fetch_add(1, std::memory_order_relaxed);
      slow_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return load_totals();
}

WindowTotals TimeWindow::totals(TimePoint now) {
  advance_to(std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count());
  return load_totals();
}

WindowTotals TimeWindow::load_totals() const {
  return {calls_.load(std::memory_order_relaxed), failures_.load(std::memory_order_relaxed),
          slow_.load(std::memory_order_relaxed)};
}

void TimeWindow::reset() {
  for (std::uint32_t i = 0; i < seconds_; ++i) {
    clear(buckets_[i], buckets_[i].second.load(std::memory_order_relaxed));
  }
}

}  // namespace keel::resilience

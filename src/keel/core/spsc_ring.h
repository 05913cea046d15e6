// A bounded queue between exactly one producer thread and one consumer thread, without locks:
// push() and pop() are a few atomic loads and stores and never block, allocate or make a system
// call. For handing work to a thread that must never hold anything the producer could wait on
// (the proxy's shadow copies go to a SCHED_IDLE thread this way: a mutex it held while
// preempted would stall the client path behind any other runnable thread).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <optional>

namespace keel {

template <typename T, std::size_t N>
class SpscRing {
  static_assert(N > 0 && (N & (N - 1)) == 0, "N must be a power of two");

 public:
  // Producer only. False when the ring is full (the value is not taken).
  bool push(const T& value) {
    const std::size_t tail = tail_.load(std::memory_order_relaxed);
    if (tail - head_.load(std::memory_order_acquire) == N) return false;
    slots_[tail & (N - 1)] = value;
    tail_.store(tail + 1, std::memory_order_release);
    return true;
  }

  // Consumer only. The oldest value, or nullopt when the ring is empty.
  std::optional<T> pop() {
    const std::size_t head = head_.load(std::memory_order_relaxed);
    if (head == tail_.load(std::memory_order_acquire)) return std::nullopt;
    T value = slots_[head & (N - 1)];
    head_.store(head + 1, std::memory_order_release);
    return value;
  }

  static constexpr std::size_t capacity() { return N; }

 private:
  std::array<T, N> slots_{};
  alignas(64) std::atomic<std::size_t> head_{0};  // next to pop; written by the consumer
  alignas(64) std::atomic<std::size_t> tail_{0};  // next to push; written by the producer
};

}  // namespace keel

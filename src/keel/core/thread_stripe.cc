#include "keel/core/thread_stripe.h"

#include <mutex>
#include <set>

namespace keel::detail {
namespace {

// The indices in use are [0, next) minus `free`; a thread takes the lowest free one so that the
// live threads stay packed at the bottom of the range and fit small tables.
struct SlotAllocator {
  std::mutex mutex;
  std::set<std::size_t> free;
  std::size_t next = 0;

  std::size_t take() {
    std::lock_guard lock(mutex);
    if (free.empty()) return next++;
    std::size_t slot = *free.begin();
    free.erase(free.begin());
    return slot;
  }
  void give_back(std::size_t slot) {
    std::lock_guard lock(mutex);
    free.insert(slot);
  }
};

SlotAllocator& allocator() {
  // Never destroyed: threads (and the main thread's thread_local destructors) may give their
  // index back after static destructors have run.
  static auto* instance = new SlotAllocator;
  return *instance;
}

struct SlotReleaser {
  std::size_t slot = kSlotUnclaimed;
  ~SlotReleaser() {
    if (slot == kSlotUnclaimed) return;
    thread_slot = kSlotReleased;
    allocator().give_back(slot);
  }
};

}  // namespace

std::size_t claim_thread_slot() {
  // Touching the releaser registers its destructor for this thread.
  thread_local SlotReleaser releaser;
  releaser.slot = allocator().take();
  thread_slot = releaser.slot;
  return releaser.slot;
}

}  // namespace keel::detail

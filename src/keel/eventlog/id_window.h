// The idempotency window (internal to the store): the last `capacity` event ids appended, each
// with its position, oldest first.
//
// Every append looks its ids up and adds them, and once the window is full it also drops the
// oldest, so this is on the commit path. A node-based map pays a malloc, a free and several
// cache misses per id there (a sixth of the node's CPU at batch 100). Here the ids live in a
// ring in append order and a flat open-addressed table (linear probing, deletion by backward
// shift, no tombstones) maps each to its ring slot: a lookup touches one or two cache lines, an
// insert allocates nothing once the window has grown, and memory is 24 B per id plus 8 B per
// table slot (at most 16 B per id at the lowest load).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "keel/core/uuid.h"

namespace keel::eventlog {

class IdWindow {
 public:
  explicit IdWindow(std::size_t capacity);  // 0: remembers nothing

  std::optional<std::uint64_t> find(const Uuid& id) const;
  bool contains(const Uuid& id) const { return find(id).has_value(); }
  // Adds `id` at `position`; an id already there takes the new position and keeps its place in
  // the order. When the window is full, the oldest id leaves first.
  void insert_or_assign(const Uuid& id, std::uint64_t position);
  void clear();
  std::size_t size() const { return entries_.size(); }

  template <typename F>  // f(const Uuid&, std::uint64_t position), oldest first
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const Entry& entry = entries_[(head_ + i) % entries_.size()];
      f(entry.id, entry.position);
    }
  }

 private:
  struct Entry {
    Uuid id;
    std::uint64_t position = 0;
  };
  // A table slot: 0 is empty; otherwise the low 32 bits are the ring index + 1 and the high 32
  // bits the low 32 bits of the id's hash (its home slot, and a fingerprint that spares most
  // probes a look into the ring).
  static std::uint64_t slot_of(std::uint32_t hash, std::size_t index) {
    return (std::uint64_t{hash} << 32) | (index + 1);
  }
  static std::uint32_t hash_of(const Uuid& id);

  std::size_t probe(const Uuid& id, std::uint32_t hash) const;  // its slot, or an empty one
  void erase_slot(std::size_t slot);
  void grow_table();

  std::size_t capacity_;
  std::vector<Entry> entries_;  // grows to capacity_, then a ring starting at head_
  std::size_t head_ = 0;
  std::vector<std::uint64_t> table_;  // a power of two, at most half full
};

}  // namespace keel::eventlog

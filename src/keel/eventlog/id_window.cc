#include "keel/eventlog/id_window.h"

#include <algorithm>
#include <limits>

namespace keel::eventlog {

IdWindow::IdWindow(std::size_t capacity)
    // A slot keeps the ring index + 1 in 32 bits.
    : capacity_(std::min<std::size_t>(capacity, std::numeric_limits<std::uint32_t>::max() - 1)) {}

std::uint32_t IdWindow::hash_of(const Uuid& id) {
  return static_cast<std::uint32_t>(UuidHash{}(id));
}

std::size_t IdWindow::probe(const Uuid& id, std::uint32_t hash) const {
  const std::size_t mask = table_.size() - 1;
  for (std::size_t slot = hash & mask;; slot = (slot + 1) & mask) {
    const std::uint64_t value = table_[slot];
    if (value == 0) return slot;
    if (static_cast<std::uint32_t>(value >> 32) == hash &&
        entries_[(value & 0xffffffffU) - 1].id == id)
      return slot;
  }
}

std::optional<std::uint64_t> IdWindow::find(const Uuid& id) const {
  if (table_.empty()) return std::nullopt;
  const std::uint64_t value = table_[probe(id, hash_of(id))];
  if (value == 0) return std::nullopt;
  return entries_[(value & 0xffffffffU) - 1].position;
}

void IdWindow::insert_or_assign(const Uuid& id, std::uint64_t position) {
  if (capacity_ == 0) return;
  const std::uint32_t hash = hash_of(id);
  if (!table_.empty()) {
    if (const std::uint64_t value = table_[probe(id, hash)]; value != 0) {
      entries_[(value & 0xffffffffU) - 1].position = position;
      return;
    }
  }
  std::size_t index = entries_.size();
  if (index < capacity_) {
    entries_.push_back({id, position});
    if (entries_.size() * 2 > table_.size()) {
      grow_table();  // places every entry, the new one too
      return;
    }
  } else {
    // Full: the oldest id leaves and the new one takes its place in the ring.
    index = head_;
    erase_slot(probe(entries_[index].id, hash_of(entries_[index].id)));
    entries_[index] = {id, position};
    head_ = (head_ + 1) % entries_.size();
  }
  table_[probe(id, hash)] = slot_of(hash, index);
}

void IdWindow::erase_slot(std::size_t slot) {
  // Backward shift: later entries of the probe run move up into the hole, unless their home
  // slot lies (cyclically) after the hole, where a lookup would no longer pass over it.
  const std::size_t mask = table_.size() - 1;
  std::size_t hole = slot;
  for (std::size_t next = (hole + 1) & mask; table_[next] != 0; next = (next + 1) & mask) {
    const std::size_t home = (table_[next] >> 32) & mask;
    const bool stays = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next);
    if (!stays) {
      table_[hole] = table_[next];
      hole = next;
    }
  }
  table_[hole] = 0;
}

void IdWindow::grow_table() {
  std::size_t size = std::max<std::size_t>(table_.size(), 16);
  while (entries_.size() * 2 > size) size *= 2;
  table_.assign(size, 0);
  const std::size_t mask = size - 1;
  for (std::size_t index = 0; index < entries_.size(); ++index) {
    const std::uint32_t hash = hash_of(entries_[index].id);
    std::size_t slot = hash & mask;
    while (table_[slot] != 0) slot = (slot + 1) & mask;
    table_[slot] = slot_of(hash, index);
  }
}

void IdWindow::clear() {
  entries_.clear();
  head_ = 0;
  std::fill(table_.begin(), table_.end(), 0);
}

}  // namespace keel::eventlog

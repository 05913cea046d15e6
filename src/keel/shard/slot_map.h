// The cluster's shard map: a fixed number of slots, each owned by one node, stamped with an
// epoch. A stream lives in slot hash64(stream) % slot_count, so all of its events stay on one
// node; the controller writes the map to etcd (see docs/formats/slot_map.md) and every node
// routes by it.
//
// A SlotMap is an immutable value: create() makes the first one, rebalance() derives the next
// one (epoch + 1) for a new membership, moving as few slots as possible, and diff() lists what
// changed so the slots can be migrated. Const methods may be called from any number of threads.
//
//   auto map = SlotMap::create({"node-a", "node-b", "node-c"}, {});
//   if (!map) return map.error();
//   auto next = map->rebalance({"node-a", "node-b", "node-c", "node-d"});
//   auto moves = SlotMap::diff(*map, *next);  // node-d takes 1024 slots, in a few ranges
//   etcd.compare_and_swap(key, map->to_json(), next->to_json());
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/core/result.h"
#include "keel/shard/errc.h"

namespace keel::shard {

// Slots [first_slot, last_slot] (inclusive) moving from one node to another.
struct SlotMove {
  std::uint32_t first_slot;
  std::uint32_t last_slot;
  std::string from;
  std::string to;

  bool operator==(const SlotMove&) const = default;
};

class SlotMap {
 public:
  static constexpr std::uint32_t kDefaultSlots = 4096;
  // Bounds the memory a stored map can make a reader allocate (4 bytes per slot).
  static constexpr std::uint32_t kMaxSlots = 1u << 20;

  // The first map (epoch 1): each node gets one contiguous range of slots, in the order given,
  // sized by its capacity's share of the total (all equal when `capacities` is empty), rounded
  // by largest remainder with ties going to the smaller id. Fails with errc::invalid_argument
  // when `nodes` is empty, an id is empty or repeated, `capacities` is neither empty nor one
  // per node, a capacity is not positive and finite, `slot_count` is 0 or above kMaxSlots, or
  // there are more nodes than slots, or an id is not valid UTF-8 (it must round-trip through
  // JSON). A node whose share rounds to zero owns no slots.
  static Result<SlotMap> create(std::vector<std::string> nodes, std::vector<double> capacities,
                                std::uint32_t slot_count = kDefaultSlots);

  std::uint64_t epoch() const { return epoch_; }
  std::uint32_t slot_count() const { return static_cast<std::uint32_t>(owners_.size()); }
  // The nodes as given to create / rebalance, including any that own no slots.
  const std::vector<std::string>& nodes() const { return nodes_; }
  // Owner of `slot`, which must be below slot_count() (checked: a violation aborts).
  const std::string& owner(std::uint32_t slot) const;
  // hash64(key) % slot_count(): the slot a stream named `key` lives in.
  std::uint32_t slot_for(std::string_view key) const;
  // Every node, with how many slots it owns (0 for a node that owns none).
  std::map<std::string, std::uint32_t> slots_per_node() const;

  // The next map (epoch + 1) for the membership `nodes` with `capacities` (empty = equal),
  // moving the fewest slots that give every node its target count. Targets are each node's
  // share of slot_count() by capacity, rounded by largest remainder, ties to the smaller id.
  // Slots that move: every slot of a node not in `nodes`, and the highest-numbered slots of a
  // node above its target; they go, lowest slot first, to the nodes below target, the largest
  // deficit first (ties to the smaller id), each taking all it needs before the next. So the
  // number moved is exactly (slots of removed nodes) + sum over nodes of max(0, owned - target),
  // and the result depends only on the nodes and capacities, not on the order they are listed.
  // Fails as create() does.
  Result<SlotMap> rebalance(std::vector<std::string> nodes,
                            std::vector<double> capacities = {}) const;

  // The next map (epoch + 1) with slots first..last (inclusive) owned by `node`, which joins
  // the node list when it is not in it. Fails with errc::invalid_argument for a range outside
  // the map or an id create() would refuse.
  Result<SlotMap> assign(std::uint32_t first, std::uint32_t last, const std::string& node) const;

  // Moved slots as maximal runs of consecutive slots with the same old and new owner, in slot
  // order. Fails with errc::invalid_argument when the maps have different slot counts.
  static Result<std::vector<SlotMove>> diff(const SlotMap& before, const SlotMap& after);

  // The stored form (docs/formats/slot_map.md): one line of JSON with runs of slots owned by
  // the same node written as one range.
  std::string to_json() const;
  // Reads the stored form back. Fails with errc::invalid_slot_map and a message naming what is
  // wrong and where (the parser's 1-based byte position for malformed JSON, the field or range
  // index otherwise) when the text breaks any rule of the format. Never throws on bad input.
  static Result<SlotMap> from_json(std::string_view text);

  // Same epoch, same node list in the same order, same owner for every slot.
  bool operator==(const SlotMap&) const = default;

 private:
  SlotMap(std::uint64_t epoch, std::vector<std::string> nodes, std::vector<std::uint32_t> owners)
      : epoch_(epoch), nodes_(std::move(nodes)), owners_(std::move(owners)) {}

  std::uint64_t epoch_;
  std::vector<std::string> nodes_;
  std::vector<std::uint32_t> owners_;  // per slot, an index into nodes_
};

}  // namespace keel::shard

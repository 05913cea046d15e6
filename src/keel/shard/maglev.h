// Maglev hashing (Eisenbud et al., NSDI 2016): a lookup table of a prime size M in which every
// node fills slots along its own permutation, in turn, so each node owns close to M/n slots and
// a lookup is one array read. Removing a node moves little more than its own slots.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "keel/core/result.h"
#include "keel/shard/hash_ring.h"

namespace keel::shard {

class MaglevTable {
 public:
  static constexpr std::uint64_t kDefaultSize = 65537;

  // Fails when `table_size` is not a prime, or is smaller than the number of nodes, or when
  // `nodes` is empty. Weights are honoured as in Envoy's weighted Maglev: a node takes its turn
  // only while its filled share stays at or below its weight's share.
  static Result<MaglevTable> build(std::span<const WeightedNode> nodes,
                                   std::uint64_t table_size = kDefaultSize);

  // Index (into `nodes` as given to build) of the node owning `hash`.
  std::size_t lookup(std::uint64_t hash) const { return table_[hash % table_.size()]; }
  std::size_t size() const { return table_.size(); }

 private:
  std::vector<std::uint32_t> table_;
};

bool is_prime(std::uint64_t n);

}  // namespace keel::shard

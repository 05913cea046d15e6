// Weighted rendezvous (highest random weight) hashing. Every node scores every key and the
// highest score wins, so removing a node moves only the keys it owned, adding one moves only
// the keys it now wins, and the result does not depend on the order nodes are listed in.
//
// The score is Schindelhauer & Schomaker's weighted form ("Weighted Distributed Hash Tables",
// SPAA 2005), score = -weight / ln(u) with u uniform in (0, 1) from hash64(key, hash64(id)):
// a node's share of keys is exactly its share of the total weight, unlike scaling a plain hash
// by the weight. Each call costs one hash of every node id plus one log per node, so it suits
// tens of nodes; use a HashRing or MaglevTable for hundreds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "keel/shard/hash_ring.h"

namespace keel::shard {

// Index (into `nodes`) of the node that owns `key`. `nodes` must not be empty and every weight
// must be positive and finite (checked: a violation aborts). Equal scores, which need a 64-bit
// hash collision, go to the smaller id.
std::size_t rendezvous_pick(std::uint64_t key, std::span<const WeightedNode> nodes);

// The `count` highest-scoring nodes for `key`, best first (fewer when there are fewer nodes):
// replica placement. The first is rendezvous_pick's answer, and removing any node keeps the
// others in the same relative order. Same preconditions as rendezvous_pick.
std::vector<std::size_t> rendezvous_rank(std::uint64_t key, std::span<const WeightedNode> nodes,
                                         std::size_t count);

}  // namespace keel::shard

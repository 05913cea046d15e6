// A Ketama-style consistent-hash ring: each node owns points on a 64-bit circle, as many as its
// weight's share of the ring, and a key belongs to the first point at or after its hash.
// Adding or removing a node moves only the keys of the points it gains or loses.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace keel::shard {

struct WeightedNode {
  std::string id;
  double weight = 1.0;  // > 0
};

class HashRing {
 public:
  // Points per node are proportional to weight — weight x a power of two chosen so the ring
  // has at least `min_points` points, and at most `max_points` (every node keeps at least one).
  // Point hashes are XXH3 of "<id>_<n>", so the same nodes give the same ring everywhere, and a
  // node joining or leaving moves only its own keys — unless the change crosses a doubling of
  // the points per weight, when the nodes that stayed also gain or lose points (each keeps its
  // old ones). An empty `nodes` gives an empty ring.
  static HashRing build(std::span<const WeightedNode> nodes, std::size_t min_points = 1024,
                        std::size_t max_points = 8 * 1024 * 1024);

  bool empty() const { return points_.empty(); }
  std::size_t point_count() const { return points_.size(); }

  // Index (into `nodes` as given to build) of the node owning `hash`. The ring must not be empty.
  std::size_t lookup(std::uint64_t hash) const { return points_[point_for(hash)].node; }

  // For bounded-load walks: the point owning `hash`, the point after `point` (wrapping), and the
  // node of a point.
  std::size_t point_for(std::uint64_t hash) const;
  std::size_t next_point(std::size_t point) const {
    return point + 1 == points_.size() ? 0 : point + 1;
  }
  std::size_t node_of(std::size_t point) const { return points_[point].node; }

 private:
  struct Point {
    std::uint64_t hash;
    std::size_t node;
  };
  std::vector<Point> points_;  // sorted by hash
};

}  // namespace keel::shard

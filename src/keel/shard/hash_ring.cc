#include "keel/shard/hash_ring.h"

#include <algorithm>
#include <cmath>

#include "keel/core/check.h"
#include "keel/core/hash.h"

namespace keel::shard {

HashRing HashRing::build(std::span<const WeightedNode> nodes, std::size_t min_points,
                         std::size_t max_points) {
  HashRing ring;
  if (nodes.empty()) return ring;
  KEEL_CHECK(min_points >= 1 && min_points <= max_points, "ring size bounds out of order");
  double total = 0;
  for (const auto& node : nodes) {
    KEEL_CHECK(node.weight > 0, "node weight must be positive");
    total += node.weight;
  }
  // Points per unit of weight: a power of two, the smallest that gives the ring min_points,
  // then halved until it fits max_points. Being a power of two, it stays the same when a node
  // joins or leaves (unless the ring crosses a doubling), so only that node's keys move; and
  // when it does double, every old point is kept ("<id>_<n>" for the lower n).
  double per_weight = 1;
  while (per_weight * total < static_cast<double>(min_points)) per_weight *= 2;
  while (per_weight * total > static_cast<double>(max_points) && per_weight > 1e-9) per_weight /= 2;
  std::string key;
  for (std::size_t index = 0; index < nodes.size(); ++index) {
    auto points =
        static_cast<std::size_t>(std::max(1.0, std::floor(nodes[index].weight * per_weight)));
    for (std::size_t n = 0; n < points; ++n) {
      key = nodes[index].id;
      key += '_';
      key += std::to_string(n);
      ring.points_.push_back({hash64(key), index});
    }
  }
  std::sort(ring.points_.begin(), ring.points_.end(), [](const Point& a, const Point& b) {
    return a.hash != b.hash ? a.hash < b.hash : a.node < b.node;
  });
  return ring;
}

std::size_t HashRing::point_for(std::uint64_t hash) const {
  auto it = std::lower_bound(points_.begin(), points_.end(), hash,
                             [](const Point& point, std::uint64_t h) { return point.hash < h; });
  return it == points_.end() ? 0 : static_cast<std::size_t>(it - points_.begin());
}

}  // namespace keel::shard

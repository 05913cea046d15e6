#include "keel/shard/rendezvous.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "keel/core/check.h"
#include "keel/core/hash.h"

namespace keel::shard {
namespace {

double score(std::uint64_t key, const WeightedNode& node) {
  KEEL_CHECK(node.weight > 0 && std::isfinite(node.weight),
             "rendezvous node weight must be positive and finite");
  std::uint64_t hash = hash64(key, hash64(node.id));
  // The top 53 bits, centred in their interval: strictly inside (0, 1), so ln(u) < 0.
  double u = (static_cast<double>(hash >> 11) + 0.5) * 0x1.0p-53;
  return -node.weight / std::log(u);
}

bool beats(double score_a, const WeightedNode& a, double score_b, const WeightedNode& b) {
  return score_a != score_b ? score_a > score_b : a.id < b.id;
}

}  // namespace

std::size_t rendezvous_pick(std::uint64_t key, std::span<const WeightedNode> nodes) {
  KEEL_CHECK(!nodes.empty(), "rendezvous_pick needs at least one node");
  std::size_t best = 0;
  double best_score = score(key, nodes[0]);
  for (std::size_t index = 1; index < nodes.size(); ++index) {
    double candidate = score(key, nodes[index]);
    if (beats(candidate, nodes[index], best_score, nodes[best])) {
      best = index;
      best_score = candidate;
    }
  }
  return best;
}

std::vector<std::size_t> rendezvous_rank(std::uint64_t key, std::span<const WeightedNode> nodes,
                                         std::size_t count) {
  KEEL_CHECK(!nodes.empty(), "rendezvous_rank needs at least one node");
  std::vector<double> scores(nodes.size());
  for (std::size_t index = 0; index < nodes.size(); ++index) {
    scores[index] = score(key, nodes[index]);
  }
  std::vector<std::size_t> order(nodes.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  count = std::min(count, nodes.size());
  std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(count), order.end(),
                    [&](std::size_t a, std::size_t b) {
                      return beats(scores[a], nodes[a], scores[b], nodes[b]);
                    });
  order.resize(count);
  return order;
}

}  // namespace keel::shard

#include "keel/shard/maglev.h"

#include <algorithm>
#include <limits>

#include "keel/core/hash.h"

namespace keel::shard {

bool is_prime(std::uint64_t n) {
  if (n < 2) return false;
  for (std::uint64_t d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

Result<MaglevTable> MaglevTable::build(std::span<const WeightedNode> nodes,
                                       std::uint64_t table_size) {
  if (nodes.empty()) return Error(keel::errc::invalid_argument, "maglev: no nodes to place");
  if (!is_prime(table_size)) {
    return Error(keel::errc::invalid_argument,
                 "maglev: table size " + std::to_string(table_size) + " is not a prime");
  }
  if (table_size < nodes.size() || table_size > std::numeric_limits<std::uint32_t>::max()) {
    return Error(keel::errc::invalid_argument,
                 "maglev: table size " + std::to_string(table_size) + " must be at least the " +
                     std::to_string(nodes.size()) + " nodes and fit in 32 bits");
  }
  const std::size_t n = nodes.size();
  std::vector<std::uint64_t> offset(n), skip(n), next(n, 0), taken(n, 0);
  std::vector<double> weight(n);
  double max_weight = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (!(nodes[i].weight > 0)) {
      return Error(keel::errc::invalid_argument,
                   "maglev: node '" + nodes[i].id + "' has a weight that is not positive");
    }
    offset[i] = hash64(nodes[i].id, 0) % table_size;
    skip[i] = hash64(nodes[i].id, 1) % (table_size - 1) + 1;
    weight[i] = nodes[i].weight;
    max_weight = std::max(max_weight, weight[i]);
  }
  constexpr std::uint32_t kEmpty = std::numeric_limits<std::uint32_t>::max();
  MaglevTable result;
  result.table_.assign(table_size, kEmpty);
  std::uint64_t filled = 0;
  for (std::uint64_t iteration = 1; filled < table_size; ++iteration) {
    for (std::size_t i = 0; i < n && filled < table_size; ++i) {
      // A lighter node takes a turn only on the iterations where its weight has accrued.
      if (weight[i] * static_cast<double>(iteration) <
          max_weight * static_cast<double>(taken[i] + 1) - 1e-9 * max_weight) {
        continue;
      }
      std::uint64_t slot;
      do {
        slot = (offset[i] + next[i] * skip[i]) % table_size;
        ++next[i];
      } while (result.table_[slot] != kEmpty);
      result.table_[slot] = static_cast<std::uint32_t>(i);
      ++taken[i];
      ++filled;
    }
  }
  return result;
}

}  // namespace keel::shard

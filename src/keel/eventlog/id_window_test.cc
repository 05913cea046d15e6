#include "keel/eventlog/id_window.h"

#include <gtest/gtest.h>

#include <deque>
#include <unordered_map>
#include <vector>

#include "keel/core/random.h"

namespace keel::eventlog {
namespace {

// The window against the obvious model (a map and a queue of ids in insertion order) over
// random inserts, re-inserts, lookups and clears, at capacities small enough that the ring wraps
// and the table's probe runs collide and shift many times.
class Model {
 public:
  explicit Model(std::size_t capacity) : capacity_(capacity) {}
  void insert_or_assign(const Uuid& id, std::uint64_t position) {
    if (capacity_ == 0) return;
    if (ids_.insert_or_assign(id, position).second) order_.push_back(id);
    while (order_.size() > capacity_) {
      ids_.erase(order_.front());
      order_.pop_front();
    }
  }
  std::optional<std::uint64_t> find(const Uuid& id) const {
    auto it = ids_.find(id);
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  }
  void clear() {
    ids_.clear();
    order_.clear();
  }
  std::vector<std::pair<Uuid, std::uint64_t>> all() const {
    std::vector<std::pair<Uuid, std::uint64_t>> out;
    for (const Uuid& id : order_) out.emplace_back(id, ids_.at(id));
    return out;
  }

 private:
  std::size_t capacity_;
  std::unordered_map<Uuid, std::uint64_t, UuidHash> ids_;
  std::deque<Uuid> order_;
};

std::vector<std::pair<Uuid, std::uint64_t>> all(const IdWindow& window) {
  std::vector<std::pair<Uuid, std::uint64_t>> out;
  window.for_each([&](const Uuid& id, std::uint64_t position) { out.emplace_back(id, position); });
  return out;
}

TEST(IdWindowTest, MatchesAMapAndAQueueUnderRandomOperations) {
  for (std::size_t capacity : {0, 1, 2, 7, 8, 9, 100, 1000}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    Random random(capacity + 1);
    IdWindow window(capacity);
    Model model(capacity);
    std::vector<Uuid> seen;
    for (std::uint64_t step = 0; step < 20000; ++step) {
      const std::uint64_t dice = random.next() % 100;
      if (dice < 60 || seen.empty()) {
        const Uuid id = Uuid::random_v4(random);
        seen.push_back(id);
        window.insert_or_assign(id, step);
        model.insert_or_assign(id, step);
      } else if (dice < 70) {  // an id seen before: still in the window or gone from it
        const Uuid& id = seen[random.next() % seen.size()];
        window.insert_or_assign(id, step);
        model.insert_or_assign(id, step);
      } else if (dice < 99) {
        const Uuid& id = seen[random.next() % seen.size()];
        ASSERT_EQ(window.find(id), model.find(id)) << "step " << step;
      } else if (random.next() % 20 == 0) {
        window.clear();
        model.clear();
      }
      ASSERT_EQ(window.size(), model.all().size()) << "step " << step;
    }
    EXPECT_EQ(all(window), model.all());
    for (const Uuid& id : seen) ASSERT_EQ(window.find(id), model.find(id));
  }
}

TEST(IdWindowTest, TheOldestIdLeavesFirstAndAReassignedIdKeepsItsPlace) {
  Random random(7);
  const Uuid a = Uuid::random_v4(random), b = Uuid::random_v4(random), c = Uuid::random_v4(random),
             d = Uuid::random_v4(random);
  IdWindow window(3);
  window.insert_or_assign(a, 1);
  window.insert_or_assign(b, 2);
  window.insert_or_assign(c, 3);
  window.insert_or_assign(a, 10);  // a moves, but stays the oldest
  EXPECT_EQ(window.find(a), 10u);
  window.insert_or_assign(d, 4);
  EXPECT_FALSE(window.contains(a));
  EXPECT_EQ(all(window), (std::vector<std::pair<Uuid, std::uint64_t>>{{b, 2}, {c, 3}, {d, 4}}));
}

}  // namespace
}  // namespace keel::eventlog

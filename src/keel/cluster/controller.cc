#include "keel/cluster/controller.h"

#include <algorithm>

namespace keel::cluster {
namespace {

using coord::Compare;
using coord::Operation;

Operation put(std::string key, std::string value) {
  return {Operation::Kind::kPut, std::move(key), std::move(value), 0, false};
}
Operation erase(std::string key) {
  return {Operation::Kind::kDelete, std::move(key), "", 0, false};
}

// The key's mod revision is what was read (0: it was absent).
Compare unchanged(std::string key, coord::Revision revision) {
  return {std::move(key), Compare::Target::kModRevision, Compare::Op::kEqual, revision, ""};
}

}  // namespace

const char* step_name(Controller::Step step) {
  switch (step) {
    case Controller::Step::kIdle:
      return "idle";
    case Controller::Step::kWaiting:
      return "waiting";
    case Controller::Step::kCreatedMap:
      return "created the map";
    case Controller::Step::kStarted:
      return "started a move";
    case Controller::Step::kFenced:
      return "fenced";
    case Controller::Step::kFlipped:
      return "flipped";
    case Controller::Step::kAborted:
      return "aborted a move";
  }
  return "?";
}

Controller::Controller(coord::Coordinator& coordinator, const coord::Leadership& leadership,
                       MoveDriver& driver, Keys keys, ControllerOptions options)
    : coordinator_(coordinator),
      leadership_(leadership),
      driver_(driver),
      keys_(std::move(keys)),
      options_(options) {
  options_.max_slots_per_move = std::max<std::uint32_t>(1, options_.max_slots_per_move);
}

Result<coord::TransactionResult> Controller::write(const ClusterState& state,
                                                   std::vector<Operation> operations) {
  const Duration time_left = leadership_.time_left();
  if (time_left <= Duration::zero()) {
    return Error(coord::errc::not_leader, "the controller's leadership is lost; nothing written");
  }
  coord::Transaction transaction = coord::fenced_transaction(leadership_, std::move(operations));
  // What this step decided from: the map, the goal and the move as read.
  transaction.compare.push_back(unchanged(keys_.map(), state.map_revision));
  transaction.compare.push_back(unchanged(keys_.goal(), state.goal_revision));
  transaction.compare.push_back(unchanged(keys_.move(), state.move_revision));
  transaction.failure.push_back({Operation::Kind::kGet, leadership_.key(), "", 0, false});
  transaction.timeout = time_left;
  auto result = coordinator_.transact(transaction);
  if (!result) return result.error();
  if (!result->succeeded) {
    const auto& leader = result->kvs.empty() ? std::vector<coord::KeyValue>{} : result->kvs[0];
    if (leader.empty() || leader[0].create_revision != leadership_.token()) {
      return Error(coord::errc::not_leader, "the controller was deposed; nothing written");
    }
    return Error(errc::invalid_argument,
                 "the cluster state changed while the controller decided; it will read it again");
  }
  return result;
}

Result<Controller::Step> Controller::step() {
  auto state = read_state(coordinator_, keys_);
  if (!state) return state.error();
  if (!state->map) return create_map(*state);
  if (state->move) return advance(*state);
  return start_next(*state);
}

Result<Controller::Step> Controller::create_map(const ClusterState& state) {
  if (state.members.size() < std::max<std::uint32_t>(1, options_.initial_nodes)) {
    waiting_for_ = std::to_string(state.members.size()) + " of " +
                   std::to_string(options_.initial_nodes) + " nodes have joined";
    return Step::kIdle;
  }
  std::vector<std::string> ids;
  for (const NodeInfo& member : state.members) ids.push_back(member.id);
  auto map = shard::SlotMap::create(std::move(ids), {}, options_.slot_count);
  if (!map) return map.error();
  auto written = write(state, {put(keys_.map(), map->to_json())});
  if (!written) return written.error();
  return Step::kCreatedMap;
}

Result<Controller::Step> Controller::advance(const ClusterState& state) {
  const Move& move = *state.move;
  const shard::SlotMap& map = *state.map;
  const shard::SlotMap& goal = state.goal ? *state.goal : map;
  bool wanted = move.epoch == map.epoch() && move.last < map.slot_count() &&
                goal.slot_count() == map.slot_count();
  for (std::uint32_t slot = move.first; wanted && slot <= move.last; ++slot) {
    wanted = map.owner(slot) == move.from && goal.owner(slot) == move.to;
  }
  if (!wanted) {
    auto written = write(state, {erase(keys_.move())});
    if (!written) return written.error();
    return Step::kAborted;
  }
  const NodeInfo* source = state.member(move.from);
  const NodeInfo* target = state.member(move.to);
  if (source == nullptr || target == nullptr) {
    waiting_for_ = "moving " + slot_span(move.first, move.last) + " waits for node " +
                   (source == nullptr ? move.from : move.to) + " to be a member";
    return Step::kWaiting;
  }
  if (move.phase == Move::Phase::kCopying) {
    if (auto copied = driver_.copy(move, *source, *target, false); !copied) {
      return copied.error();
    }
    Move fenced = move;
    fenced.phase = Move::Phase::kFenced;
    auto written = write(state, {put(keys_.move(), fenced.to_json())});
    if (!written) return written.error();
    return Step::kFenced;
  }
  if (auto copied = driver_.copy(move, *source, *target, true); !copied) {
    // The source must not stay fenced while this is retried: back to copying.
    Move copying = move;
    copying.phase = Move::Phase::kCopying;
    (void)write(state, {put(keys_.move(), copying.to_json())});
    return copied.error();
  }
  auto next = map.assign(move.first, move.last, move.to);
  if (!next) return next.error();
  auto written = write(state, {put(keys_.map(), next->to_json()), erase(keys_.move())});
  if (!written) return written.error();
  return Step::kFlipped;
}

Result<Controller::Step> Controller::start_next(const ClusterState& state) {
  if (!state.goal) return Step::kIdle;
  auto moves = shard::SlotMap::diff(*state.map, *state.goal);
  if (!moves) return moves.error();
  if (moves->empty()) return Step::kIdle;
  // The first move whose nodes are both members; the others wait.
  for (const shard::SlotMove& next : *moves) {
    if (state.member(next.from) == nullptr || state.member(next.to) == nullptr) continue;
    Move move;
    move.epoch = state.map->epoch();
    move.first = next.first_slot;
    move.last = std::min(next.last_slot, next.first_slot + options_.max_slots_per_move - 1);
    move.from = next.from;
    move.to = next.to;
    auto written = write(state, {put(keys_.move(), move.to_json())});
    if (!written) return written.error();
    return Step::kStarted;
  }
  const shard::SlotMove& first = moves->front();
  waiting_for_ = "moving " + slot_span(first.first_slot, first.last_slot) + " from " + first.from +
                 " to " + first.to + " waits for both to be members";
  return Step::kWaiting;
}

}  // namespace keel::cluster

// The cluster's controller: the one node (elected on etcd) that writes the slot map. It makes
// the first map once enough nodes have joined, and converges the map to the goal operators set
// (`keel ctl cluster move | rebalance | drain`) one move at a time, each of at most
// max_slots_per_move slots:
//
//   start   write <prefix>/move {epoch, slots, from, to, phase: copying}
//   copy    the target copies the slots' events from the source (MoveDriver::copy, unfenced),
//           repeated until it has caught up
//   fence   phase: fenced — the source refuses writes to the slots from now on
//   drain   the target copies what is left, up to the source's fence position
//   flip    one transaction: the map of epoch + 1 with the slots on the target, the move deleted
//
// Every write is fenced by the controller's leadership (coord::fenced_transact) and compares
// the revisions it read, so a deposed controller or a stale read changes nothing. Each step
// reads the state from etcd afresh, so a new controller takes over a move at whatever step the
// old one (or a crash of the source or the target) left it: copying is idempotent. A move whose
// slots the goal no longer sends to its target is aborted (the move deleted; the source serves
// on), which is how a move is reversed before its flip; after the flip, moving back is a move
// of its own.
//
// Thread-safety: one thread calls step().
#pragma once

#include <cstdint>
#include <string>

#include "keel/cluster/state.h"
#include "keel/coord/coordinator.h"
#include "keel/coord/election.h"
#include "keel/core/result.h"

namespace keel::cluster {

// How the controller makes a target copy a move's slots; `until_fenced` asks for everything up
// to the source's fence position (the source has seen phase kFenced), otherwise the target
// copies until it has caught up with the source's log. Errors (a node down, a timeout) leave
// the move where it is, to be tried again.
class MoveDriver {
 public:
  virtual ~MoveDriver() = default;
  virtual Status copy(const Move& move, const NodeInfo& source, const NodeInfo& target,
                      bool until_fenced) = 0;
};

struct ControllerOptions {
  std::uint32_t slot_count = shard::SlotMap::kDefaultSlots;
  std::uint32_t initial_nodes = 1;  // the first map waits for this many members
  std::uint32_t max_slots_per_move = 64;
};

class Controller {
 public:
  enum class Step {
    kIdle,        // nothing to do: no map yet (too few members) or map == goal
    kWaiting,     // a move is due but its source or target is not a member now
    kCreatedMap,  // wrote the first map
    kStarted,     // wrote a new move
    kFenced,      // the target caught up; the move is fenced
    kFlipped,     // the slots are the target's: map of epoch + 1
    kAborted,     // the goal changed its mind (or the move was stale): the move is gone
  };

  Controller(coord::Coordinator& coordinator, const coord::Leadership& leadership,
             MoveDriver& driver, Keys keys, ControllerOptions options = {});

  // One step towards the goal, from the state in etcd now. An error leaves everything as it
  // was (or, for a failed drain after the fence, puts the move back to copying so the source
  // takes writes again); calling step() again retries.
  Result<Step> step();

  // Why the last kWaiting was waiting, for the status page.
  const std::string& waiting_for() const { return waiting_for_; }

 private:
  Result<Step> create_map(const ClusterState& state);
  Result<Step> advance(const ClusterState& state);
  Result<Step> start_next(const ClusterState& state);
  Result<coord::TransactionResult> write(const ClusterState& state,
                                         std::vector<coord::Operation> operations);

  coord::Coordinator& coordinator_;
  const coord::Leadership& leadership_;
  MoveDriver& driver_;
  Keys keys_;
  ControllerOptions options_;
  std::string waiting_for_;
};

const char* step_name(Controller::Step step);

}  // namespace keel::cluster

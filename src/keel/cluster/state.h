// What a Keel cluster keeps in etcd, under one prefix (default "keel/cluster"), and the JSON of
// each value (docs/formats/slot_map.md, "The cluster in etcd"):
//
//   <prefix>/members/<id>      a node, under its lease: {"id","api","kafka","admin"}
//   <prefix>/controller/<lease> the controller election (coord::Elector)
//   <prefix>/map               the slot map: who owns each slot now, and the epoch
//   <prefix>/goal              the slot map operators asked for (move, rebalance, drain)
//   <prefix>/move              the one move in progress: slots, from, to, phase
//
// The controller converges map to goal one move at a time; every write it makes is fenced by
// its leadership, so a deposed controller's write fails.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/coord/coordinator.h"
#include "keel/core/result.h"
#include "keel/shard/slot_map.h"

namespace keel::cluster {

struct Keys {
  std::string prefix = "keel/cluster";
  std::string members() const { return prefix + "/members"; }
  std::string controller() const { return prefix + "/controller"; }
  std::string map() const { return prefix + "/map"; }
  std::string goal() const { return prefix + "/goal"; }
  std::string move() const { return prefix + "/move"; }
};

// A node as the others reach it: its id and base URLs ("http://host:port"; kafka "host:port").
struct NodeInfo {
  std::string id;
  std::string api;
  std::string kafka;  // empty: no Kafka listener
  std::string admin;  // empty: no admin listener
  std::string to_json() const;
  static Result<NodeInfo> from_json(std::string_view text);
  bool operator==(const NodeInfo&) const = default;
};

// Slots first..last moving from one node to another. A move belongs to the map of `epoch`: it
// ends by writing the map of epoch + 1 (the flip) or by being deleted (an abort).
//   kCopying: the target copies the slots' events from the source; the source serves as usual.
//   kFenced:  the source refuses writes to the slots; the target copies the rest, then the
//             controller flips ownership.
struct Move {
  enum class Phase { kCopying, kFenced };
  std::uint64_t epoch = 0;
  std::uint32_t first = 0;
  std::uint32_t last = 0;
  std::string from;
  std::string to;
  Phase phase = Phase::kCopying;

  bool covers(std::uint32_t slot) const { return slot >= first && slot <= last; }
  std::string to_json() const;
  static Result<Move> from_json(std::string_view text);
  bool operator==(const Move&) const = default;
};
const char* phase_name(Move::Phase phase);
// "slot 7" or "slots 0-15", for messages.
std::string slot_span(std::uint32_t first, std::uint32_t last);

// Everything under the prefix, read at one revision.
struct ClusterState {
  coord::Revision revision = 0;
  std::vector<NodeInfo> members;  // live nodes, by id
  std::optional<shard::SlotMap> map;
  coord::Revision map_revision = 0;  // its mod revision (0: absent)
  std::optional<shard::SlotMap> goal;
  coord::Revision goal_revision = 0;
  std::optional<Move> move;
  coord::Revision move_revision = 0;

  const NodeInfo* member(std::string_view id) const;
};

// Reads the whole state. A value that does not parse is an error naming its key.
Result<ClusterState> read_state(coord::Coordinator& coordinator, const Keys& keys);

}  // namespace keel::cluster

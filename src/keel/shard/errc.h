// Error codes of the shard area. Placement functions whose inputs are the caller's own
// (rendezvous, Maglev) treat bad input as a bug or use core's codes; these are for the slot
// map, whose inputs come from operators and from etcd.
#pragma once

#include <system_error>

namespace keel::shard {

enum class errc {
  // Arguments to SlotMap::create / rebalance / diff that cannot describe a cluster: no nodes,
  // duplicate or empty ids, capacities that are not positive, more nodes than slots.
  invalid_argument = 1,
  // A stored slot map (SlotMap::from_json) that is not valid JSON or breaks a rule of the
  // format in docs/formats/slot_map.md.
  invalid_slot_map,
};

const std::error_category& shard_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), shard_category()}; }

}  // namespace keel::shard

template <>
struct std::is_error_code_enum<keel::shard::errc> : std::true_type {};

#include "keel/cluster/state.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <tuple>

namespace keel::cluster {
namespace {

using nlohmann::json;

Error bad(std::string_view what, const std::string& message) {
  return Error(errc::invalid_argument, std::string(what) + ": " + message);
}

Result<json> parse_object(std::string_view what, std::string_view text) {
  json document = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded() || !document.is_object()) {
    return bad(what, "not a JSON object: " + std::string(text.substr(0, 200)));
  }
  return document;
}

Result<std::string> string_field(std::string_view what, const json& document, const char* name,
                                 bool required) {
  auto it = document.find(name);
  if (it == document.end()) {
    if (required) return bad(what, std::string("missing field \"") + name + "\"");
    return std::string();
  }
  if (!it->is_string()) return bad(what, std::string("field \"") + name + "\" must be a string");
  return it->get<std::string>();
}

Result<std::uint64_t> number_field(std::string_view what, const json& document, const char* name) {
  auto it = document.find(name);
  if (it == document.end() || !it->is_number_unsigned()) {
    return bad(what, std::string("field \"") + name + "\" must be a non-negative integer");
  }
  return it->get<std::uint64_t>();
}

}  // namespace

std::string NodeInfo::to_json() const {
  nlohmann::ordered_json document{{"id", id}, {"api", api}};
  if (!kafka.empty()) document["kafka"] = kafka;
  if (!admin.empty()) document["admin"] = admin;
  return document.dump();
}

Result<NodeInfo> NodeInfo::from_json(std::string_view text) {
  auto document = parse_object("node", text);
  if (!document) return document.error();
  NodeInfo info;
  for (auto [field, name, required] :
       {std::tuple{&info.id, "id", true}, std::tuple{&info.api, "api", true},
        std::tuple{&info.kafka, "kafka", false}, std::tuple{&info.admin, "admin", false}}) {
    auto value = string_field("node", *document, name, required);
    if (!value) return value.error();
    *field = std::move(*value);
  }
  if (info.id.empty()) return bad("node", "empty id");
  return info;
}

std::string slot_span(std::uint32_t first, std::uint32_t last) {
  return first == last ? "slot " + std::to_string(first)
                       : "slots " + std::to_string(first) + "-" + std::to_string(last);
}

const char* phase_name(Move::Phase phase) {
  return phase == Move::Phase::kCopying ? "copying" : "fenced";
}

std::string Move::to_json() const {
  return nlohmann::ordered_json{{"epoch", epoch}, {"first", first}, {"last", last},
                                {"from", from},   {"to", to},       {"phase", phase_name(phase)}}
      .dump();
}

Result<Move> Move::from_json(std::string_view text) {
  auto document = parse_object("move", text);
  if (!document) return document.error();
  Move move;
  auto epoch = number_field("move", *document, "epoch");
  if (!epoch) return epoch.error();
  auto first = number_field("move", *document, "first");
  if (!first) return first.error();
  auto last = number_field("move", *document, "last");
  if (!last) return last.error();
  if (*last < *first || *last >= shard::SlotMap::kMaxSlots) {
    return bad("move", "slots " + std::to_string(*first) + "-" + std::to_string(*last) +
                           " are not a range of slots");
  }
  auto from = string_field("move", *document, "from", true);
  if (!from) return from.error();
  auto to = string_field("move", *document, "to", true);
  if (!to) return to.error();
  auto phase = string_field("move", *document, "phase", true);
  if (!phase) return phase.error();
  if (*phase != "copying" && *phase != "fenced") {
    return bad("move", "phase \"" + *phase + "\" is neither \"copying\" nor \"fenced\"");
  }
  move.epoch = *epoch;
  move.first = static_cast<std::uint32_t>(*first);
  move.last = static_cast<std::uint32_t>(*last);
  move.from = std::move(*from);
  move.to = std::move(*to);
  move.phase = *phase == "copying" ? Move::Phase::kCopying : Move::Phase::kFenced;
  return move;
}

const NodeInfo* ClusterState::member(std::string_view id) const {
  for (const NodeInfo& info : members) {
    if (info.id == id) return &info;
  }
  return nullptr;
}

Result<ClusterState> read_state(coord::Coordinator& coordinator, const Keys& keys) {
  auto all = coordinator.range(keys.prefix + "/", /*prefix=*/true);
  if (!all) return all.error();
  ClusterState state;
  state.revision = all->second;
  const std::string members = keys.members() + "/";
  for (const coord::KeyValue& kv : all->first) {
    auto where = [&](const Error& error) {
      return Error(error.code(), "etcd key " + kv.key + ": " + error.message());
    };
    if (kv.key.starts_with(members)) {
      // Membership keeps a node's info as the metadata of its entry.
      auto entry = json::parse(kv.value, nullptr, false);
      if (entry.is_object() && entry.contains("metadata") && entry["metadata"].is_string()) {
        auto info = NodeInfo::from_json(entry["metadata"].get<std::string>());
        if (!info) return where(info.error());
        state.members.push_back(std::move(*info));
      }
    } else if (kv.key == keys.map() || kv.key == keys.goal()) {
      auto map = shard::SlotMap::from_json(kv.value);
      if (!map) return where(map.error());
      (kv.key == keys.map() ? state.map : state.goal) = std::move(*map);
      (kv.key == keys.map() ? state.map_revision : state.goal_revision) = kv.mod_revision;
    } else if (kv.key == keys.move()) {
      auto move = Move::from_json(kv.value);
      if (!move) return where(move.error());
      state.move = std::move(*move);
      state.move_revision = kv.mod_revision;
    }
  }
  std::sort(state.members.begin(), state.members.end(),
            [](const NodeInfo& a, const NodeInfo& b) { return a.id < b.id; });
  return state;
}

}  // namespace keel::cluster

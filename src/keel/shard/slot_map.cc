#include "keel/shard/slot_map.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <unordered_map>

#include "keel/core/check.h"
#include "keel/core/hash.h"

namespace keel::shard {
namespace {

using nlohmann::json;

constexpr std::uint32_t kNoOwner = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint64_t kFormatVersion = 1;

Error invalid(const std::string& message) {
  return Error(errc::invalid_argument, "slot map: " + message);
}

Error corrupt(const std::string& message) {
  return Error(errc::invalid_slot_map, "slot map: " + message);
}

std::string in_quotes(std::string_view text) { return "\"" + std::string(text) + "\""; }

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

std::string slot_span(std::uint64_t first, std::uint64_t last) {
  return first == last ? "slot " + std::to_string(first)
                       : "slots " + std::to_string(first) + "-" + std::to_string(last);
}

// JSON strings must be UTF-8, so an id that is not could be stored but never read back.
bool is_valid_utf8(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<unsigned char>(text[i]);
    std::size_t length;
    std::uint32_t code_point;
    if (byte < 0x80) {
      ++i;
      continue;
    } else if ((byte & 0xE0) == 0xC0) {
      length = 2;
      code_point = byte & 0x1Fu;
    } else if ((byte & 0xF0) == 0xE0) {
      length = 3;
      code_point = byte & 0x0Fu;
    } else if ((byte & 0xF8) == 0xF0) {
      length = 4;
      code_point = byte & 0x07u;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (std::size_t k = 1; k < length; ++k) {
      auto next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3Fu);
    }
    static constexpr std::uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code_point < kSmallest[length] || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

Status validate(const std::vector<std::string>& nodes, const std::vector<double>& capacities,
                std::uint32_t slot_count) {
  if (slot_count == 0 || slot_count > SlotMap::kMaxSlots) {
    return invalid("slot_count " + std::to_string(slot_count) + " is outside 1-" +
                   std::to_string(SlotMap::kMaxSlots));
  }
  if (nodes.empty()) return invalid("no nodes given; a slot map needs at least one");
  if (nodes.size() > slot_count) {
    return invalid(std::to_string(nodes.size()) + " nodes but only " + std::to_string(slot_count) +
                   " slots; there cannot be more nodes than slots");
  }
  if (!capacities.empty() && capacities.size() != nodes.size()) {
    return invalid(std::to_string(capacities.size()) + " capacities given for " +
                   std::to_string(nodes.size()) + " nodes; give one per node, or none for equal");
  }
  std::unordered_map<std::string_view, std::size_t> seen;
  for (std::size_t index = 0; index < nodes.size(); ++index) {
    const std::string& id = nodes[index];
    if (id.empty()) return invalid("node " + std::to_string(index) + " has an empty id");
    if (!is_valid_utf8(id)) {
      return invalid("node " + std::to_string(index) + " has an id that is not valid UTF-8");
    }
    auto [it, inserted] = seen.emplace(id, index);
    if (!inserted) {
      return invalid("node " + in_quotes(id) + " is listed twice (positions " +
                     std::to_string(it->second) + " and " + std::to_string(index) + ")");
    }
  }
  double total = 0;
  for (std::size_t index = 0; index < capacities.size(); ++index) {
    double capacity = capacities[index];
    if (!(capacity > 0) || !std::isfinite(capacity)) {
      return invalid("capacity of node " + in_quotes(nodes[index]) + " is " + number(capacity) +
                     "; capacities must be positive and finite");
    }
    total += capacity;
  }
  if (!std::isfinite(total)) return invalid("capacities add up to more than a double can hold");
  return ok_status();
}

// Each node's share of `slot_count` by capacity, by largest remainder: every node gets the floor
// of its exact share, and the slots left over go one each to the largest fractional parts, ties
// to the smaller id. The adjustment loops only absorb floating-point error in the floors.
std::vector<std::uint32_t> targets(const std::vector<std::string>& nodes,
                                   const std::vector<double>& capacities,
                                   std::uint32_t slot_count) {
  const std::size_t n = nodes.size();
  double total = capacities.empty() ? static_cast<double>(n)
                                    : std::accumulate(capacities.begin(), capacities.end(), 0.0);
  std::vector<std::uint32_t> result(n);
  std::vector<double> remainder(n);
  std::uint64_t assigned = 0;
  for (std::size_t i = 0; i < n; ++i) {
    double capacity = capacities.empty() ? 1.0 : capacities[i];
    double quota = static_cast<double>(slot_count) * (capacity / total);
    double floor = std::min(std::floor(quota), static_cast<double>(slot_count));
    result[i] = static_cast<std::uint32_t>(floor);
    remainder[i] = quota - floor;
    assigned += result[i];
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return remainder[a] != remainder[b] ? remainder[a] > remainder[b] : nodes[a] < nodes[b];
  });
  for (std::size_t k = 0; assigned < slot_count; k = (k + 1) % n) {
    ++result[order[k]];
    ++assigned;
  }
  for (std::size_t k = n - 1; assigned > slot_count; k = (k + n - 1) % n) {
    if (result[order[k]] > 0) {
      --result[order[k]];
      --assigned;
    }
  }
  return result;
}

// A JSON value as a message shows it: numbers and literals as written, others by type.
std::string describe(const json& value) {
  if (value.is_number() || value.is_boolean() || value.is_null()) return value.dump();
  return std::string("a JSON ") + value.type_name();
}

// Finds the byte offset and the parser's reason for text that json::parse discarded, without
// exceptions: a SAX pass that accepts everything and stops at the first error.
class ParseErrorFinder final : public nlohmann::json_sax<json> {
 public:
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const json::exception& error) override {
    std::string what = error.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " tag; the rest is for people.
    if (auto end = what.find("] "); what.starts_with("[json.exception.") && end != what.npos) {
      what.erase(0, end + 2);
    }
    message_ = "invalid JSON at byte " + std::to_string(position) + ": " + what;
    return false;
  }
  const std::string& message() const { return message_; }

 private:
  std::string message_ = "invalid JSON";
};

std::string parse_error_message(std::string_view text) {
  ParseErrorFinder finder;
  json::sax_parse(text.begin(), text.end(), &finder);
  return finder.message();
}

// The member `name` of `object` as an unsigned integer in [min, max]; `what` names it in
// messages.
Result<std::uint64_t> read_unsigned(const json& object, const char* name, const std::string& what,
                                    std::uint64_t min, std::uint64_t max) {
  auto it = object.find(name);
  if (it == object.end()) return corrupt(what + " is missing field \"" + name + "\"");
  if (!it->is_number_unsigned() || it->get<std::uint64_t>() < min ||
      it->get<std::uint64_t>() > max) {
    return corrupt(what + " field \"" + name + "\" must be an integer in " + std::to_string(min) +
                   "-" + std::to_string(max) + ", found " + describe(*it));
  }
  return it->get<std::uint64_t>();
}

Status expect_only(const json& object, std::initializer_list<std::string_view> known,
                   const std::string& what) {
  for (const auto& [key, value] : object.items()) {
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string names;
      for (std::string_view name : known) names += (names.empty() ? "" : ", ") + std::string(name);
      return corrupt(what + " has unknown field " + in_quotes(key) + " (expected " + names + ")");
    }
  }
  return ok_status();
}

}  // namespace

Result<SlotMap> SlotMap::create(std::vector<std::string> nodes, std::vector<double> capacities,
                                std::uint32_t slot_count) {
  if (auto status = validate(nodes, capacities, slot_count); !status) return status.error();
  std::vector<std::uint32_t> counts = targets(nodes, capacities, slot_count);
  std::vector<std::uint32_t> owners;
  owners.reserve(slot_count);
  for (std::uint32_t index = 0; index < nodes.size(); ++index) {
    owners.insert(owners.end(), counts[index], index);
  }
  return SlotMap(1, std::move(nodes), std::move(owners));
}

const std::string& SlotMap::owner(std::uint32_t slot) const {
  KEEL_CHECK(slot < owners_.size(), "slot out of range");
  return nodes_[owners_[slot]];
}

std::uint32_t SlotMap::slot_for(std::string_view key) const {
  return static_cast<std::uint32_t>(hash64(key) % owners_.size());
}

std::map<std::string, std::uint32_t> SlotMap::slots_per_node() const {
  std::vector<std::uint32_t> counts(nodes_.size(), 0);
  for (std::uint32_t owner : owners_) ++counts[owner];
  std::map<std::string, std::uint32_t> result;
  for (std::size_t index = 0; index < nodes_.size(); ++index) {
    result.emplace(nodes_[index], counts[index]);
  }
  return result;
}

Result<SlotMap> SlotMap::rebalance(std::vector<std::string> nodes,
                                   std::vector<double> capacities) const {
  const std::uint32_t slot_count = this->slot_count();
  if (auto status = validate(nodes, capacities, slot_count); !status) return status.error();
  KEEL_CHECK(epoch_ < std::numeric_limits<std::uint64_t>::max(), "slot map epoch overflow");
  std::vector<std::uint32_t> target = targets(nodes, capacities, slot_count);

  std::unordered_map<std::string_view, std::uint32_t> new_index;
  for (std::uint32_t index = 0; index < nodes.size(); ++index)
    new_index.emplace(nodes[index], index);
  std::vector<std::uint32_t> old_to_new(nodes_.size(), kNoOwner);
  for (std::size_t index = 0; index < nodes_.size(); ++index) {
    if (auto it = new_index.find(nodes_[index]); it != new_index.end()) {
      old_to_new[index] = it->second;
    }
  }

  // Keep every slot whose owner stays, then hand back each node's surplus from the top down.
  std::vector<std::uint32_t> owners(slot_count);
  std::vector<std::uint32_t> owned(nodes.size(), 0);
  for (std::uint32_t slot = 0; slot < slot_count; ++slot) {
    owners[slot] = old_to_new[owners_[slot]];
    if (owners[slot] != kNoOwner) ++owned[owners[slot]];
  }
  std::vector<std::uint32_t> surplus(nodes.size(), 0);
  for (std::size_t index = 0; index < nodes.size(); ++index) {
    if (owned[index] > target[index]) surplus[index] = owned[index] - target[index];
  }
  for (std::uint32_t slot = slot_count; slot-- > 0;) {
    std::uint32_t owner = owners[slot];
    if (owner != kNoOwner && surplus[owner] > 0) {
      --surplus[owner];
      --owned[owner];
      owners[slot] = kNoOwner;
    }
  }

  // Fill deficits, largest first, each node taking the lowest free slots it needs in one go so
  // that what moves stays in few contiguous ranges.
  std::vector<std::uint32_t> needy;
  for (std::uint32_t index = 0; index < nodes.size(); ++index) {
    if (owned[index] < target[index]) needy.push_back(index);
  }
  std::sort(needy.begin(), needy.end(), [&](std::uint32_t a, std::uint32_t b) {
    std::uint32_t deficit_a = target[a] - owned[a];
    std::uint32_t deficit_b = target[b] - owned[b];
    return deficit_a != deficit_b ? deficit_a > deficit_b : nodes[a] < nodes[b];
  });
  std::uint32_t slot = 0;
  for (std::uint32_t index : needy) {
    for (std::uint32_t deficit = target[index] - owned[index]; deficit > 0; --deficit) {
      while (owners[slot] != kNoOwner) ++slot;
      owners[slot] = index;
    }
  }
  KEEL_CHECK(std::find(owners.begin(), owners.end(), kNoOwner) == owners.end(),
             "rebalance left a slot without an owner");
  return SlotMap(epoch_ + 1, std::move(nodes), std::move(owners));
}

Result<SlotMap> SlotMap::assign(std::uint32_t first, std::uint32_t last,
                                const std::string& node) const {
  if (first > last || last >= slot_count()) {
    return invalid(slot_span(first, last) + " is not a range of slots 0-" +
                   std::to_string(slot_count() - 1));
  }
  std::vector<std::string> nodes = nodes_;
  auto it = std::find(nodes.begin(), nodes.end(), node);
  const auto index = static_cast<std::uint32_t>(it - nodes.begin());
  if (it == nodes.end()) {
    nodes.push_back(node);
    if (auto status = validate(nodes, {}, slot_count()); !status) return status.error();
  }
  KEEL_CHECK(epoch_ < std::numeric_limits<std::uint64_t>::max(), "slot map epoch overflow");
  std::vector<std::uint32_t> owners = owners_;
  std::fill(owners.begin() + first, owners.begin() + last + 1, index);
  return SlotMap(epoch_ + 1, std::move(nodes), std::move(owners));
}

Result<std::vector<SlotMove>> SlotMap::diff(const SlotMap& before, const SlotMap& after) {
  if (before.slot_count() != after.slot_count()) {
    return invalid("cannot diff maps of " + std::to_string(before.slot_count()) + " and " +
                   std::to_string(after.slot_count()) + " slots");
  }
  std::vector<SlotMove> moves;
  for (std::uint32_t slot = 0; slot < before.slot_count(); ++slot) {
    const std::string& from = before.owner(slot);
    const std::string& to = after.owner(slot);
    if (from == to) continue;
    if (!moves.empty() && moves.back().last_slot + 1 == slot && moves.back().from == from &&
        moves.back().to == to) {
      moves.back().last_slot = slot;
    } else {
      moves.push_back({slot, slot, from, to});
    }
  }
  return moves;
}

std::string SlotMap::to_json() const {
  nlohmann::ordered_json document;
  document["version"] = kFormatVersion;
  document["epoch"] = epoch_;
  document["slot_count"] = slot_count();
  document["nodes"] = nodes_;
  auto ranges = nlohmann::ordered_json::array();
  for (std::uint32_t first = 0; first < owners_.size();) {
    std::uint32_t last = first;
    while (last + 1 < owners_.size() && owners_[last + 1] == owners_[first]) ++last;
    ranges.push_back({{"first", first}, {"last", last}, {"node", nodes_[owners_[first]]}});
    first = last + 1;
  }
  document["ranges"] = std::move(ranges);
  return document.dump();
}

Result<SlotMap> SlotMap::from_json(std::string_view text) {
  // Everything below checks types before reading, so nothing should throw; the catch keeps the
  // no-throw promise if a check is ever missed.
  try {
    json document = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (document.is_discarded()) return corrupt(parse_error_message(text));
    if (!document.is_object()) {
      return corrupt("the document must be a JSON object, found " + describe(document));
    }
    // The version decides which other fields exist, so it is read first.
    auto version = read_unsigned(document, "version", "the document", 0,
                                 std::numeric_limits<std::uint64_t>::max());
    if (!version) return version.error();
    if (*version != kFormatVersion) {
      return corrupt("unsupported version " + std::to_string(*version) + "; this build reads " +
                     std::to_string(kFormatVersion));
    }
    if (auto status = expect_only(document, {"version", "epoch", "slot_count", "nodes", "ranges"},
                                  "the document");
        !status) {
      return status.error();
    }
    auto epoch = read_unsigned(document, "epoch", "the document", 1,
                               std::numeric_limits<std::uint64_t>::max());
    if (!epoch) return epoch.error();
    auto slot_count = read_unsigned(document, "slot_count", "the document", 1, kMaxSlots);
    if (!slot_count) return slot_count.error();

    auto nodes_it = document.find("nodes");
    if (nodes_it == document.end()) return corrupt("the document is missing field \"nodes\"");
    if (!nodes_it->is_array() || nodes_it->empty()) {
      return corrupt("field \"nodes\" must be a non-empty array of node ids, found " +
                     describe(*nodes_it));
    }
    if (nodes_it->size() > *slot_count) {
      return corrupt(std::to_string(nodes_it->size()) + " nodes but slot_count is only " +
                     std::to_string(*slot_count));
    }
    std::vector<std::string> nodes;
    std::unordered_map<std::string, std::uint32_t> node_index;
    for (std::size_t index = 0; index < nodes_it->size(); ++index) {
      const json& id = (*nodes_it)[index];
      std::string where = "nodes[" + std::to_string(index) + "]";
      if (!id.is_string()) return corrupt(where + " must be a string, found " + describe(id));
      const auto& name = id.get_ref<const std::string&>();
      if (name.empty()) return corrupt(where + " is an empty string");
      auto [it, inserted] = node_index.emplace(name, static_cast<std::uint32_t>(index));
      if (!inserted) {
        return corrupt(where + " " + in_quotes(name) + " repeats nodes[" +
                       std::to_string(it->second) + "]");
      }
      nodes.push_back(name);
    }

    auto ranges_it = document.find("ranges");
    if (ranges_it == document.end()) return corrupt("the document is missing field \"ranges\"");
    if (!ranges_it->is_array()) {
      return corrupt("field \"ranges\" must be an array, found " + describe(*ranges_it));
    }
    const auto slots = static_cast<std::uint32_t>(*slot_count);
    std::vector<std::uint32_t> owners(slots, kNoOwner);
    std::vector<std::uint32_t> range_of(slots, kNoOwner);  // which range claimed each slot
    std::vector<std::pair<std::uint32_t, std::uint32_t>> spans;
    for (std::size_t index = 0; index < ranges_it->size(); ++index) {
      const json& range = (*ranges_it)[index];
      std::string where = "range " + std::to_string(index);
      if (!range.is_object()) {
        return corrupt(where + " must be an object with first, last and node, found " +
                       describe(range));
      }
      if (auto status = expect_only(range, {"first", "last", "node", "replicas"}, where); !status) {
        return status.error();
      }
      auto first =
          read_unsigned(range, "first", where, 0, std::numeric_limits<std::uint64_t>::max());
      if (!first) return first.error();
      auto last = read_unsigned(range, "last", where, 0, std::numeric_limits<std::uint64_t>::max());
      if (!last) return last.error();
      auto node_it = range.find("node");
      if (node_it == range.end()) return corrupt(where + " is missing field \"node\"");
      if (!node_it->is_string()) {
        return corrupt(where + " field \"node\" must be a string, found " + describe(*node_it));
      }
      if (*last < *first) {
        return corrupt(where + " has last " + std::to_string(*last) + " before first " +
                       std::to_string(*first));
      }
      if (*last >= slots) {
        return corrupt(where + " (" + slot_span(*first, *last) +
                       ") goes past the last slot: " + "slot_count is " + std::to_string(slots) +
                       ", so slots are 0-" + std::to_string(slots - 1));
      }
      const auto& name = node_it->get_ref<const std::string&>();
      auto owner = node_index.find(name);
      if (owner == node_index.end()) {
        return corrupt(where + " names unknown node " + in_quotes(name) +
                       " (not listed in \"nodes\")");
      }
      // Reserved for per-slot replication: read and checked, not kept (routing goes to `node`,
      // the slot's leader), so a map with replicas stays readable here.
      if (auto replicas = range.find("replicas"); replicas != range.end()) {
        if (!replicas->is_array()) {
          return corrupt(where + " field \"replicas\" must be an array of node ids, found " +
                         describe(*replicas));
        }
        for (std::size_t r = 0; r < replicas->size(); ++r) {
          const json& replica = (*replicas)[r];
          std::string at = where + " replicas[" + std::to_string(r) + "]";
          if (!replica.is_string())
            return corrupt(at + " must be a string, found " + describe(replica));
          const auto& id = replica.get_ref<const std::string&>();
          if (!node_index.contains(id)) {
            return corrupt(at + " names unknown node " + in_quotes(id) +
                           " (not listed in \"nodes\")");
          }
          if (id == name) return corrupt(at + " is the range's own node " + in_quotes(id));
        }
      }
      spans.emplace_back(static_cast<std::uint32_t>(*first), static_cast<std::uint32_t>(*last));
      for (auto slot = static_cast<std::uint32_t>(*first); slot <= *last; ++slot) {
        if (range_of[slot] != kNoOwner) {
          auto [other_first, other_last] = spans[range_of[slot]];
          return corrupt(where + " (" + slot_span(*first, *last) + ") overlaps range " +
                         std::to_string(range_of[slot]) + " (" +
                         slot_span(other_first, other_last) + ") at slot " + std::to_string(slot));
        }
        range_of[slot] = static_cast<std::uint32_t>(index);
        owners[slot] = owner->second;
      }
    }
    std::uint32_t covered = 0;
    for (std::uint32_t owner : owners) covered += owner != kNoOwner ? 1 : 0;
    if (covered != slots) {
      auto gap = static_cast<std::uint32_t>(std::find(owners.begin(), owners.end(), kNoOwner) -
                                            owners.begin());
      std::uint32_t gap_end = gap;
      while (gap_end + 1 < slots && owners[gap_end + 1] == kNoOwner) ++gap_end;
      return corrupt(slot_span(gap, gap_end) + (gap == gap_end ? " is" : " are") +
                     " not owned by any node: slot_count is " + std::to_string(slots) +
                     " but ranges cover " + std::to_string(covered) + " slots");
    }
    return SlotMap(*epoch, std::move(nodes), std::move(owners));
  } catch (const json::exception& error) {
    return corrupt(std::string("unreadable document: ") + error.what());
  }
}

}  // namespace keel::shard

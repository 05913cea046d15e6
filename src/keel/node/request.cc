#include "keel/node/request.h"

#include <algorithm>
#include <charconv>

#include "keel/core/text.h"
#include "keel/node/text_codec.h"
#include "keel/pubsub/parking.h"

namespace keel::node::detail {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string join(std::span<const std::string_view> names) {
  std::string out;
  for (auto name : names) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

std::string hex_code_point(char32_t c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "U+";
  for (int shift = c > 0xffff ? 20 : 12; shift >= 0; shift -= 4)
    out.push_back(kHex[(c >> shift) & 0xf]);
  return out;
}

// Shared by names and labels: the first byte that is not UTF-8 or is a control character.
std::optional<std::string> bad_text(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    auto point = decode_utf8(text, i);
    if (!point) return "is not UTF-8 at byte " + std::to_string(i);
    if (is_control(point->value)) {
      return "has a control character (" + hex_code_point(point->value) + ") at byte " +
             std::to_string(i);
    }
    i += point->length;
  }
  return std::nullopt;
}

}  // namespace

Error invalid(std::string message) { return Error(errc::invalid_argument, std::move(message)); }

// ---- The query string ----

Result<Query> Query::parse(std::string_view query) {
  Query out;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (piece.empty()) continue;
    const std::size_t eq = piece.find('=');
    const std::string_view raw_key = piece.substr(0, eq);
    const std::string_view raw_value =
        eq == std::string_view::npos ? std::string_view() : piece.substr(eq + 1);
    std::string key, value;
    if (auto bad = percent_decode(raw_key, true, key)) {
      return invalid("the query parameter " + quote_for_message(raw_key) +
                     " has a bad percent escape at byte " + std::to_string(*bad) +
                     ": '%' must be followed by two hex digits");
    }
    if (auto bad = percent_decode(raw_value, true, value)) {
      return invalid("the value of ?" + key + " has a bad percent escape at byte " +
                     std::to_string(*bad) + ": '%' must be followed by two hex digits");
    }
    out.params_.emplace_back(std::move(key), std::move(value));
  }
  return out;
}

Status Query::expect(std::initializer_list<std::string_view> single,
                     std::initializer_list<std::string_view> lists) const {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const std::string& key = params_[i].first;
    const bool is_single = std::find(single.begin(), single.end(), key) != single.end();
    const bool is_list = std::find(lists.begin(), lists.end(), key) != lists.end();
    if (!is_single && !is_list) {
      std::vector<std::string_view> known(single);
      known.insert(known.end(), lists.begin(), lists.end());
      return invalid("unknown query parameter " + quote_for_message(key) + "; this route takes " +
                     (known.empty() ? std::string("none") : join(known)));
    }
    if (is_single) {
      for (std::size_t j = 0; j < i; ++j) {
        if (params_[j].first == key)
          return invalid("the query parameter ?" + key + " is given twice");
      }
    }
  }
  return {};
}

const std::string* Query::get(std::string_view key) const {
  for (const auto& [k, v] : params_) {
    if (k == key) return &v;
  }
  return nullptr;
}

std::vector<const std::string*> Query::all(std::string_view key) const {
  std::vector<const std::string*> out;
  for (const auto& [k, v] : params_) {
    if (k == key) out.push_back(&v);
  }
  return out;
}

Result<std::uint64_t> parse_decimal(std::string_view text, std::string_view what) {
  std::uint64_t value = 0;
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(),
                                                   [](char c) { return c >= '0' && c <= '9'; });
  if (!digits) {
    return invalid(std::string(what) + " must be a decimal number from 0 to 2^64-1, not " +
                   quote_for_message(text));
  }
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return invalid(std::string(what) + " is out of range: " + quote_for_message(text) +
                   " is over 2^64-1");
  }
  return value;
}

Result<bool> parse_bool(std::string_view text, std::string_view what) {
  if (text == "true") return true;
  if (text == "false") return false;
  return invalid(std::string(what) + " must be true or false, not " + quote_for_message(text));
}

Result<ExpectedVersion> parse_expected_version(std::string_view text, std::string_view what) {
  if (text == "any") return ExpectedVersion::any();
  if (text == "no_stream") return ExpectedVersion::no_stream();
  if (text == "stream_exists") return ExpectedVersion::stream_exists();
  if (!text.empty() && text[0] >= '0' && text[0] <= '9') {
    auto version = parse_decimal(text, what);
    if (!version) return version.error();
    return ExpectedVersion::exact(*version);
  }
  return invalid(std::string(what) +
                 " must be any, no_stream, stream_exists or the version of the stream's last "
                 "event (from 0), not " +
                 quote_for_message(text));
}

Result<pubsub::StartFrom> parse_start_from(std::string_view text, std::string_view what) {
  if (text == "start") return pubsub::StartFrom::start();
  if (text == "end") return pubsub::StartFrom::end();
  if (!text.empty() && text[0] >= '0' && text[0] <= '9') {
    auto at = parse_decimal(text, what);
    if (!at) return at.error();
    return pubsub::StartFrom::at(*at);
  }
  return invalid(std::string(what) + " must be start, end or a number, not " +
                 quote_for_message(text));
}

Result<Direction> parse_direction(std::string_view text, std::string_view what) {
  if (text == "forwards") return Direction::kForward;
  if (text == "backwards") return Direction::kBackward;
  return invalid(std::string(what) + " must be forwards or backwards, not " +
                 quote_for_message(text));
}

// ---- Names ----

Status check_stream_name(std::string_view name) {
  if (name.empty()) return Error(errc::invalid_stream_name, "the stream name is empty");
  if (name.size() > kMaxStreamNameBytes) {
    return Error(errc::invalid_stream_name, "the stream name is " + std::to_string(name.size()) +
                                                " bytes; the limit is " +
                                                std::to_string(kMaxStreamNameBytes));
  }
  if (auto bad = bad_text(name)) {
    return Error(errc::invalid_stream_name,
                 "the stream name " + quote_for_message(name) + " " + *bad);
  }
  return {};
}

Status check_writable_stream(std::string_view name) {
  if (name.starts_with('$')) {
    return Error(errc::system_stream,
                 "the stream " + quote_for_message(name) +
                     " is a system stream: names starting with '$' hold the node's own "
                     "bookkeeping and cannot be appended to, deleted or given metadata");
  }
  return {};
}

Status check_group_name(std::string_view name, std::string_view what) {
  if (pubsub::valid_name(name)) return {};
  return invalid(std::string(what) + " " + quote_for_message(name) +
                 " is not a valid name: use 1 to 200 letters, digits, '_', '-' or '.'");
}

Status check_label(std::string_view text, std::size_t limit, std::string_view what) {
  if (text.empty()) return invalid(std::string(what) + " is empty");
  if (text.size() > limit) {
    return invalid(std::string(what) + " is " + std::to_string(text.size()) +
                   " bytes; the limit is " + std::to_string(limit));
  }
  if (auto bad = bad_text(text)) {
    return invalid(std::string(what) + " " + quote_for_message(text) + " " + *bad);
  }
  return {};
}

// ---- Bodies ----

Status check_json_content_type(std::string_view content_type) {
  auto refuse = [&](const std::string& why) {
    return Error(errc::unsupported_media_type,
                 "this route takes a JSON body: send Content-Type: application/json (" + why + ")");
  };
  std::string_view rest = content_type;
  const std::size_t semicolon = rest.find(';');
  const std::string media = ascii_lower(trim(rest.substr(0, semicolon)));
  if (media.empty()) return refuse("there is no Content-Type");
  const bool json = media == "application/json" ||
                    (media.starts_with("application/") && media.ends_with("+json"));
  if (!json) return refuse("not " + quote_for_message(content_type));
  rest = semicolon == std::string_view::npos ? std::string_view() : rest.substr(semicolon + 1);
  // Parameters: only a charset matters, and JSON is UTF-8 (RFC 8259 8.1).
  while (!rest.empty()) {
    const std::size_t next = rest.find(';');
    const std::string_view parameter = trim(rest.substr(0, next));
    rest = next == std::string_view::npos ? std::string_view() : rest.substr(next + 1);
    const std::size_t eq = parameter.find('=');
    if (eq == std::string_view::npos) continue;
    if (ascii_lower(trim(parameter.substr(0, eq))) != "charset") continue;
    std::string_view value = trim(parameter.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (ascii_lower(value) != "utf-8") {
      return refuse("the charset must be utf-8, not " + quote_for_message(value));
    }
  }
  return {};
}

Result<Members> Members::read(const Json& value, std::string_view where,
                              std::span<const std::string_view> names) {
  if (!value.is_object()) {
    return invalid(std::string(where) + " must be a JSON object, not " + describe_json(value));
  }
  Members out;
  out.names_ = names;
  for (const auto& [key, member] : value.get_ref<const Json::object_t&>()) {
    auto it = std::find(names.begin(), names.end(), key);
    if (it == names.end()) {
      return invalid("unknown field " + quote_for_message(key) + " in " + std::string(where) +
                     "; it takes " + join(names));
    }
    out.values_[static_cast<std::size_t>(it - names.begin())] = &member;
  }
  return out;
}

const Json* Members::get(std::string_view name) const {
  auto it = std::find(names_.begin(), names_.end(), name);
  return it == names_.end() ? nullptr : values_[static_cast<std::size_t>(it - names_.begin())];
}

Result<std::optional<std::uint64_t>> read_uint(const Json* value, std::string_view name,
                                               std::uint64_t min, std::uint64_t max) {
  if (value == nullptr || value->is_null()) return std::optional<std::uint64_t>();
  const bool in_range = value->is_number_unsigned() && value->get<std::uint64_t>() >= min &&
                        value->get<std::uint64_t>() <= max;
  if (!in_range) {
    return invalid(std::string(name) + " must be an integer from " + std::to_string(min) + " to " +
                   std::to_string(max) + ", not " + describe_json(*value));
  }
  return std::optional<std::uint64_t>(value->get<std::uint64_t>());
}

Result<std::optional<std::string>> read_string(const Json* value, std::string_view name) {
  if (value == nullptr || value->is_null()) return std::optional<std::string>();
  if (!value->is_string()) {
    return invalid(std::string(name) + " must be a string, not " + describe_json(*value));
  }
  return std::optional<std::string>(value->get_ref<const std::string&>());
}

Result<std::vector<std::string>> read_labels(const Json* value, std::string_view name) {
  std::vector<std::string> out;
  if (value == nullptr || value->is_null()) return out;
  if (!value->is_array()) {
    return invalid(std::string(name) + " must be an array of strings, not " +
                   describe_json(*value));
  }
  if (value->size() > kMaxFilterEntries) {
    return invalid(std::string(name) + " has " + std::to_string(value->size()) +
                   " entries; the limit is " + std::to_string(kMaxFilterEntries));
  }
  for (std::size_t i = 0; i < value->size(); ++i) {
    const Json& entry = (*value)[i];
    const std::string what = std::string(name) + "[" + std::to_string(i) + "]";
    if (!entry.is_string()) {
      return invalid(what + " must be a string, not " + describe_json(entry));
    }
    const auto& text = entry.get_ref<const std::string&>();
    if (auto ok = check_label(text, kMaxFilterEntryBytes, what); !ok) return ok.error();
    out.push_back(text);
  }
  return out;
}

Result<std::vector<std::uint64_t>> read_ids(const Json* value, std::string_view name) {
  if (value == nullptr || value->is_null()) {
    return invalid(std::string(name) + " is required: the delivery ids to settle");
  }
  if (!value->is_array() || value->empty() || value->size() > kMaxSettleIds) {
    return invalid(std::string(name) + " must be an array of 1 to " +
                   std::to_string(kMaxSettleIds) + " delivery ids, not " + describe_json(*value));
  }
  std::vector<std::uint64_t> out;
  out.reserve(value->size());
  for (std::size_t i = 0; i < value->size(); ++i) {
    const Json& id = (*value)[i];
    if (!id.is_number_unsigned()) {
      return invalid(std::string(name) + "[" + std::to_string(i) +
                     "] must be a delivery id (an integer from 0), not " + describe_json(id));
    }
    out.push_back(id.get<std::uint64_t>());
  }
  return out;
}

Result<std::optional<ExpectedVersion>> read_expected_version(const Json* value,
                                                             std::string_view name) {
  if (value == nullptr || value->is_null()) return std::optional<ExpectedVersion>();
  if (value->is_number_unsigned()) {
    return std::optional<ExpectedVersion>(ExpectedVersion::exact(value->get<std::uint64_t>()));
  }
  if (value->is_string()) {
    const auto& text = value->get_ref<const std::string&>();
    if (text == "any" || text == "no_stream" || text == "stream_exists") {
      auto parsed = parse_expected_version(text, name);
      if (!parsed) return parsed.error();
      return std::optional<ExpectedVersion>(*parsed);
    }
  }
  return invalid(std::string(name) +
                 " must be \"any\", \"no_stream\", \"stream_exists\" or the version of the "
                 "stream's last event (an integer from 0), not " +
                 describe_json(*value));
}

Result<std::optional<pubsub::StartFrom>> read_start_from(const Json* value, std::string_view name) {
  if (value == nullptr || value->is_null()) return std::optional<pubsub::StartFrom>();
  if (value->is_number_unsigned()) {
    return std::optional<pubsub::StartFrom>(pubsub::StartFrom::at(value->get<std::uint64_t>()));
  }
  if (value->is_string() && value->get_ref<const std::string&>() == "start") {
    return std::optional<pubsub::StartFrom>(pubsub::StartFrom::start());
  }
  if (value->is_string() && value->get_ref<const std::string&>() == "end") {
    return std::optional<pubsub::StartFrom>(pubsub::StartFrom::end());
  }
  return invalid(std::string(name) +
                 " must be \"start\", \"end\" or a position (an integer from 0), not " +
                 describe_json(*value));
}

Result<std::size_t> read_limit(const Query& query) {
  const std::string* text = query.get("limit");
  if (text == nullptr) return kDefaultReadLimit;
  auto limit = parse_decimal(*text, "?limit");
  if (!limit) return limit.error();
  if (*limit < 1 || *limit > kMaxReadLimit) {
    return invalid("?limit must be from 1 to " + std::to_string(kMaxReadLimit) + ", not " +
                   std::to_string(*limit));
  }
  return static_cast<std::size_t>(*limit);
}

Result<Json> json_body(const ApiRequest& request) {
  if (auto ok = check_json_content_type(request.content_type); !ok) return ok.error();
  if (request.body.empty()) {
    return Error(errc::bad_json, "the body is empty; this route takes a JSON object");
  }
  return parse_json_body(request.body);
}

}  // namespace keel::node::detail

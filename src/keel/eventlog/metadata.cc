// Stream metadata: its JSON form in metadata records and index.chk, and the appends that change
// it (set_metadata(), delete_stream()).
#include <nlohmann/json.hpp>

#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {
namespace {

using nlohmann::json;

void rules_to(json& j, const StreamMetadata& m) {
  if (m.max_count) j["max_count"] = *m.max_count;
  if (m.max_age)
    j["max_age_ms"] = std::chrono::duration_cast<std::chrono::milliseconds>(*m.max_age).count();
  if (m.truncate_before) j["truncate_before"] = *m.truncate_before;
}

Result<StreamMetadata> rules_from(const json& j) {
  StreamMetadata m;
  auto unsigned_field = [&](const char* name) -> Result<std::optional<std::uint64_t>> {
    if (!j.contains(name)) return std::optional<std::uint64_t>();
    if (!j[name].is_number_unsigned()) {
      return Error(errc::invalid_argument,
                   std::string("stream metadata: ") + name + " must be a non-negative integer");
    }
    return std::optional<std::uint64_t>(j[name].get<std::uint64_t>());
  };
  auto max_count = unsigned_field("max_count");
  if (!max_count) return max_count.error();
  auto max_age = unsigned_field("max_age_ms");
  if (!max_age) return max_age.error();
  auto truncate_before = unsigned_field("truncate_before");
  if (!truncate_before) return truncate_before.error();
  m.max_count = *max_count;
  // What a Duration (signed nanoseconds) can hold: larger would overflow converting to it.
  constexpr std::uint64_t kMaxAgeMs =
      std::chrono::duration_cast<std::chrono::milliseconds>(Duration::max()).count();
  if (*max_age && **max_age > kMaxAgeMs) {
    return Error(errc::invalid_argument, "stream metadata: max_age_ms must be at most " +
                                             std::to_string(kMaxAgeMs) + " (292 years)");
  }
  if (*max_age) m.max_age = std::chrono::milliseconds(**max_age);
  m.truncate_before = *truncate_before;
  return m;
}

}  // namespace

std::string ExpectedVersion::to_string() const {
  switch (kind_) {
    case Kind::kAny:
      return "any";
    case Kind::kNoStream:
      return "no stream";
    case Kind::kStreamExists:
      return "an existing stream";
    case Kind::kExact:
      return "version " + std::to_string(version_);
  }
  return "?";
}

std::string StreamMetadata::to_json() const {
  json j = json::object();
  rules_to(j, *this);
  return j.dump();
}

Result<StreamMetadata> StreamMetadata::from_json(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(errc::invalid_argument, "stream metadata: not a JSON object");
  }
  return rules_from(j);
}

std::string StoredMetadata::to_json() const {
  json j = json::object();
  rules_to(j, rules);
  if (soft_deleted) j["soft_deleted"] = true;
  if (tombstone) j["tombstone"] = true;
  return j.dump();
}

Result<StoredMetadata> StoredMetadata::from_json(std::string_view text) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Error(errc::corrupt, "stream metadata record is not a JSON object");
  }
  auto rules = rules_from(j);
  if (!rules) return rules.error();
  StoredMetadata stored;
  stored.rules = *rules;
  auto flag = [&](const char* name) {
    return j.contains(name) && j[name].is_boolean() && j[name].get<bool>();
  };
  stored.soft_deleted = flag("soft_deleted");
  stored.tombstone = flag("tombstone");
  return stored;
}

Status EventStore::Impl::set_metadata(std::string_view stream, const StreamMetadata& metadata) {
  auto result = append(stream, ExpectedVersion::any(), {}, [&](const StreamWriterState& state) {
    StoredMetadata stored = state.metadata;
    stored.rules = metadata;
    return std::optional<StoredMetadata>(stored);
  });
  if (!result) return result.error();
  return {};
}

Status EventStore::Impl::delete_stream(std::string_view stream, ExpectedVersion expected,
                                       bool hard) {
  auto result = append(stream, expected, {}, [&](const StreamWriterState& state) {
    StoredMetadata stored = state.metadata;
    if (hard) {
      stored.tombstone = true;
    } else {
      stored.soft_deleted = true;
      // Everything up to now (appends not yet durable included) stays hidden, even after the
      // stream is recreated.
      stored.rules.truncate_before = state.next_version;
    }
    return std::optional<StoredMetadata>(stored);
  });
  if (!result) return result.error();
  return {};
}

}  // namespace keel::eventlog

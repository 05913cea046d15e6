// The pieces every route's decoder uses (internal to the codec): query parameters, the members
// of a strict JSON object, typed fields with their limits, names and the content type. Every
// error names what it is about ("events[2].type", "?limit") and what was wrong with it.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keel/node/api.h"
#include "keel/node/json_body.h"

namespace keel::node::detail {

Error invalid(std::string message);

// ---- The query string ----

// The decoded parameters of a query string, in order. Only the parameters a route names are
// accepted, each once unless it is a list (given again for each entry).
class Query {
 public:
  // "a=1&b=x%20y": '+' is a space, empty pieces ("a=1&&b=2", a trailing '&') are skipped, a
  // piece without '=' has an empty value.
  static Result<Query> parse(std::string_view query);

  // Refuses a parameter not in `single` or `lists`, and one of `single` given twice.
  Status expect(std::initializer_list<std::string_view> single,
                std::initializer_list<std::string_view> lists = {}) const;
  // The value of a single parameter, or null.
  const std::string* get(std::string_view key) const;
  // Every value of a list parameter, in order.
  std::vector<const std::string*> all(std::string_view key) const;

 private:
  std::vector<std::pair<std::string, std::string>> params_;
};

// Unsigned decimal (no sign, no spaces), up to 2^64-1. `what` names it in the error.
Result<std::uint64_t> parse_decimal(std::string_view text, std::string_view what);
// "true" or "false".
Result<bool> parse_bool(std::string_view text, std::string_view what);
// "any", "no_stream", "stream_exists" or a version.
Result<ExpectedVersion> parse_expected_version(std::string_view text, std::string_view what);
// "start", "end" or a decimal position (or version).
Result<pubsub::StartFrom> parse_start_from(std::string_view text, std::string_view what);
// "forwards" or "backwards".
Result<Direction> parse_direction(std::string_view text, std::string_view what);

// ---- Names ----

// 1 to kMaxStreamNameBytes of UTF-8 without control characters (errc::invalid_stream_name).
Status check_stream_name(std::string_view name);
// Appends, deletes and metadata changes refuse '$' names (errc::system_stream).
Status check_writable_stream(std::string_view name);
// A consumer group's or member's name: pubsub::valid_name() (errc::invalid_argument).
Status check_group_name(std::string_view name, std::string_view what);
// An event type, a category, a stream prefix: 1 to `limit` bytes, UTF-8, no control chars.
Status check_label(std::string_view text, std::size_t limit, std::string_view what);

// ---- Bodies ----

// application/json or application/*+json, with no charset but UTF-8 (errc::unsupported_media_type).
Status check_json_content_type(std::string_view content_type);

// The members of a JSON object by name: a member not in `names` is refused, so a misspelt
// option is an error rather than a silent default. `where` names the object in errors.
class Members {
 public:
  static Result<Members> read(const Json& value, std::string_view where,
                              std::span<const std::string_view> names);
  // The member's value, or null when absent. A JSON null is returned as is.
  const Json* get(std::string_view name) const;

 private:
  static constexpr std::size_t kMaxNames = 16;
  std::span<const std::string_view> names_;
  std::array<const Json*, kMaxNames> values_{};
};

// Typed members. Absent and null read as nullopt; `name` is the member's full name in errors.
Result<std::optional<std::uint64_t>> read_uint(const Json* value, std::string_view name,
                                               std::uint64_t min, std::uint64_t max);
Result<std::optional<std::string>> read_string(const Json* value, std::string_view name);
// A list of labels (check_label), at most kMaxFilterEntries.
Result<std::vector<std::string>> read_labels(const Json* value, std::string_view name);
// A list of delivery ids, 1 to kMaxSettleIds.
Result<std::vector<std::uint64_t>> read_ids(const Json* value, std::string_view name);
// "any", "no_stream", "stream_exists" or a version number.
Result<std::optional<ExpectedVersion>> read_expected_version(const Json* value,
                                                             std::string_view name);
// "start", "end" or a position number.
Result<std::optional<pubsub::StartFrom>> read_start_from(const Json* value, std::string_view name);

// ---- The consumer group routes (decode_groups.cc) ----

// PUT /v1/groups/{group}
Result<Command> decode_create_group(std::string group, const ApiRequest& request,
                                    const Query& query);
// POST /v1/groups/{group}/poll
Result<Command> decode_poll(std::string group, const ApiRequest& request, const Query& query);
// POST /v1/groups/{group}/ack and …/nack
Result<Command> decode_settle(std::string group, bool ack, const ApiRequest& request,
                              const Query& query);
// GET /v1/groups/{group}/parked
Result<Command> decode_list_parked(std::string group, const Query& query);

// PUT /v1/projections/{name} (decode_projections.cc)
Result<Command> decode_report_projection(std::string name, const ApiRequest& request,
                                         const Query& query);

// Shared with the stream routes: ?limit (1 to kMaxReadLimit, kDefaultReadLimit when absent)
// and a route's JSON body (the content type checked, then parsed).
Result<std::size_t> read_limit(const Query& query);
Result<Json> json_body(const ApiRequest& request);

}  // namespace keel::node::detail

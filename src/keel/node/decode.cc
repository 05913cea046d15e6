// decode_request(): the route table, then one decoder per route. Checks go from the outside in
// — route (404), method (405), names in the path (400, 403), content type (415), query and
// body (400) — so a client is told about the first thing it must change.
#include <algorithm>
#include <exception>

#include "keel/node/api.h"
#include "keel/node/request.h"
#include "keel/node/text_codec.h"

namespace keel::node {
namespace {

using detail::invalid;
using detail::Json;
using detail::Members;
using detail::Query;

enum class Route {
  kStream,
  kStreamMetadata,
  kStreamSubscribe,
  kAll,
  kAllSubscribe,
  kGroups,
  kGroup,
  kGroupPoll,
  kGroupAck,
  kGroupNack,
  kGroupParked,
  kGroupParkedReplay,
  kProjections,
  kProjection,
  kMetrics,
  kHealthz,
  kReady,
};

struct Match {
  Route route;
  MethodSet allowed;
  std::string_view name;  // the raw {stream}, {group} or {projection}; empty for routes without one
};

// The literal segments are compared as sent; only {stream} and {group} are percent-decoded
// (after the split, so "%2F" is a '/' inside a name, not a separator).
std::optional<Match> match_route(std::string_view path) {
  constexpr std::size_t kMaxSegments = 5;  // the longest route, /v1/groups/{g}/parked/replay
  if (path.empty() || path[0] != '/') return std::nullopt;
  std::array<std::string_view, kMaxSegments> s;
  std::size_t n = 0;
  std::string_view rest = path.substr(1);
  for (;;) {
    if (n == kMaxSegments) return std::nullopt;
    const std::size_t slash = rest.find('/');
    s[n++] = rest.substr(0, slash);
    if (s[n - 1].empty()) return std::nullopt;  // "//", a trailing '/', or just "/"
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  constexpr MethodSet get = kMethodGet, post = kMethodPost;
  if (n == 1) {
    if (s[0] == "metrics") return Match{Route::kMetrics, get, {}};
    if (s[0] == "healthz") return Match{Route::kHealthz, get, {}};
    if (s[0] == "ready") return Match{Route::kReady, get, {}};
    return std::nullopt;
  }
  if (s[0] != "v1") return std::nullopt;
  if (s[1] == "streams" && n >= 3) {
    if (n == 3) return Match{Route::kStream, get | post | kMethodDelete, s[2]};
    if (n == 4 && s[3] == "metadata") return Match{Route::kStreamMetadata, get | kMethodPut, s[2]};
    if (n == 4 && s[3] == "subscribe") return Match{Route::kStreamSubscribe, get, s[2]};
    return std::nullopt;
  }
  if (s[1] == "all") {
    if (n == 2) return Match{Route::kAll, get, {}};
    if (n == 3 && s[2] == "subscribe") return Match{Route::kAllSubscribe, get, {}};
    return std::nullopt;
  }
  if (s[1] == "groups") {
    if (n == 2) return Match{Route::kGroups, get, {}};
    if (n == 3) return Match{Route::kGroup, get | kMethodPut | kMethodDelete, s[2]};
    if (n == 4 && s[3] == "poll") return Match{Route::kGroupPoll, post, s[2]};
    if (n == 4 && s[3] == "ack") return Match{Route::kGroupAck, post, s[2]};
    if (n == 4 && s[3] == "nack") return Match{Route::kGroupNack, post, s[2]};
    if (n == 4 && s[3] == "parked") return Match{Route::kGroupParked, get, s[2]};
    if (n == 5 && s[3] == "parked" && s[4] == "replay") {
      return Match{Route::kGroupParkedReplay, post, s[2]};
    }
    return std::nullopt;
  }
  if (s[1] == "projections") {
    if (n == 2) return Match{Route::kProjections, get, {}};
    if (n == 3) return Match{Route::kProjection, get | kMethodPut | kMethodDelete, s[2]};
  }
  return std::nullopt;
}

MethodSet method_bit(std::string_view method) {
  if (method == "GET") return kMethodGet;
  if (method == "POST") return kMethodPost;
  if (method == "PUT") return kMethodPut;
  if (method == "DELETE") return kMethodDelete;
  return 0;
}

// Everything one decoder needs: the request, its route, the decoded name and the query.
struct Context {
  const ApiRequest& request;
  const IdGenerator& new_id;
  MethodSet method;
  std::string name;  // the decoded {stream} or {group}
  Query query;
};

Result<std::string> decode_stream_segment(std::string_view raw) {
  std::string name;
  if (auto bad = detail::percent_decode(raw, false, name)) {
    return Error(errc::invalid_stream_name,
                 "the stream name in the path " + detail::quote_for_message(raw) +
                     " has a bad percent escape at byte " + std::to_string(*bad) +
                     ": '%' must be followed by two hex digits");
  }
  if (auto ok = detail::check_stream_name(name); !ok) return ok.error();
  return name;
}

// A group's or a projection's name (`what`: "group", "projection"): the same rules.
Result<std::string> decode_name_segment(std::string_view raw, std::string_view what) {
  std::string name;
  if (auto bad = detail::percent_decode(raw, false, name)) {
    return invalid("the " + std::string(what) + " name in the path " +
                   detail::quote_for_message(raw) + " has a bad percent escape at byte " +
                   std::to_string(*bad) + ": '%' must be followed by two hex digits");
  }
  if (auto ok = detail::check_group_name(name, "the " + std::string(what) + " name"); !ok) {
    return ok.error();
  }
  return name;
}

// ---- Streams ----

constexpr std::array<std::string_view, 4> kEventFields{"id", "type", "data", "metadata"};
constexpr std::array<std::string_view, 2> kBatchFields{"expected_version", "events"};

// One event of an append; `prefix` is "" for a lone event, "events[2]." in a batch.
Result<EventData> decode_event(const Json& value, const std::string& prefix,
                               const IdGenerator& new_id) {
  const std::string where = prefix.empty() ? "the event" : prefix.substr(0, prefix.size() - 1);
  auto members = Members::read(value, where, kEventFields);
  if (!members) return members.error();
  EventData event;

  auto type = detail::read_string(members->get("type"), prefix + "type");
  if (!type) return type.error();
  if (!*type) return invalid(prefix + "type is required: the event's type, a string");
  if (auto ok = detail::check_label(**type, kMaxEventTypeBytes, prefix + "type"); !ok) {
    return ok.error();
  }
  event.type = std::move(**type);

  auto id = detail::read_string(members->get("id"), prefix + "id");
  if (!id) return id.error();
  if (*id) {
    auto parsed = Uuid::parse(**id);
    if (!parsed) return invalid(prefix + "id: " + parsed.error().message());
    if (parsed->is_nil()) {
      return invalid(prefix + "id is the nil UUID; send a unique one, or none to get one");
    }
    event.id = *parsed;
  } else {
    event.id = new_id ? new_id() : Uuid::random_v4();
  }

  // Stored as compact JSON: the same value whatever the client's spacing, in its key order.
  const Json* data = members->get("data");
  if (data == nullptr) {
    return invalid(prefix + "data is required: any JSON value (null too)");
  }
  event.data = data->dump();

  const Json* metadata = members->get("metadata");
  if (metadata != nullptr && !metadata->is_null()) {
    if (!metadata->is_object()) {
      return invalid(prefix + "metadata must be a JSON object, not " +
                     detail::describe_json(*metadata));
    }
    event.metadata = metadata->dump();
  }
  return event;
}

Result<Command> decode_append(Context& c) {
  if (auto ok = detail::check_writable_stream(c.name); !ok) return ok.error();
  if (auto ok = c.query.expect({"expected_version"}); !ok) return ok.error();
  std::optional<ExpectedVersion> from_query;
  if (const std::string* text = c.query.get("expected_version")) {
    auto parsed = detail::parse_expected_version(*text, "?expected_version");
    if (!parsed) return parsed.error();
    from_query = *parsed;
  }
  auto body = detail::json_body(c.request);
  if (!body) return body.error();
  if (!body->is_object()) {
    return invalid(
        "the body must be a JSON object: one event {\"type\", \"data\", …} or a batch "
        "{\"events\": [...]}, not " +
        detail::describe_json(*body));
  }
  AppendCommand command;
  command.stream = std::move(c.name);
  command.expected = from_query.value_or(ExpectedVersion::any());

  const auto& object = body->get_ref<const Json::object_t&>();
  command.batch = std::any_of(object.begin(), object.end(),
                              [](const auto& member) { return member.first == "events"; });
  if (!command.batch) {
    auto event = decode_event(*body, "", c.new_id);
    if (!event) return event.error();
    command.events.push_back(std::move(*event));
    return Command(std::move(command));
  }

  auto members = Members::read(*body, "the batch body", kBatchFields);
  if (!members) return members.error();
  auto expected =
      detail::read_expected_version(members->get("expected_version"), "expected_version");
  if (!expected) return expected.error();
  if (*expected) {
    if (from_query) {
      return invalid("expected_version is given both in the query and in the body; give it once");
    }
    command.expected = **expected;
  }
  const Json& events = *members->get("events");
  if (!events.is_array() || events.empty() || events.size() > kMaxEventsPerAppend) {
    return invalid("events must be an array of 1 to " + std::to_string(kMaxEventsPerAppend) +
                   " events, not " + detail::describe_json(events));
  }
  command.events.reserve(events.size());
  for (std::size_t i = 0; i < events.size(); ++i) {
    auto event = decode_event(events[i], "events[" + std::to_string(i) + "].", c.new_id);
    if (!event) return event.error();
    command.events.push_back(std::move(*event));
  }
  // One id twice in a batch is the client's mistake, not a conflict with the store.
  std::vector<std::pair<Uuid, std::size_t>> ids;
  ids.reserve(command.events.size());
  for (std::size_t i = 0; i < command.events.size(); ++i) ids.emplace_back(command.events[i].id, i);
  std::sort(ids.begin(), ids.end());
  for (std::size_t i = 1; i < ids.size(); ++i) {
    if (ids[i].first == ids[i - 1].first) {
      const auto [first, second] = std::minmax(ids[i].second, ids[i - 1].second);
      return invalid("events[" + std::to_string(second) + "].id repeats events[" +
                     std::to_string(first) + "].id (" + ids[i].first.to_string() +
                     "): the ids of one append must differ");
    }
  }
  return Command(std::move(command));
}

// ?direction and ?from of a read: forwards from the start unless told otherwise; backwards
// from the end.
Status read_range(const Query& query, Direction& direction, std::uint64_t& from) {
  direction = Direction::kForward;
  if (const std::string* text = query.get("direction")) {
    auto parsed = detail::parse_direction(*text, "?direction");
    if (!parsed) return parsed.error();
    direction = *parsed;
  }
  from = direction == Direction::kForward ? 0 : kEnd;
  if (const std::string* text = query.get("from")) {
    auto parsed = detail::parse_start_from(*text, "?from");
    if (!parsed) return parsed.error();
    switch (parsed->kind) {
      case pubsub::StartFrom::Kind::kStart:
        from = 0;
        break;
      case pubsub::StartFrom::Kind::kEnd:
        if (direction == Direction::kForward) {
          return invalid(
              "?from=end reads nothing forwards: read backwards from the end, or subscribe to "
              "follow new events");
        }
        from = kEnd;
        break;
      case pubsub::StartFrom::Kind::kPosition:
        from = parsed->position;
        break;
    }
  }
  return {};
}

Result<Command> decode_read_stream(Context& c) {
  if (auto ok = c.query.expect({"from", "direction", "limit"}); !ok) return ok.error();
  ReadStreamCommand command;
  command.stream = std::move(c.name);
  if (auto ok = read_range(c.query, command.direction, command.from); !ok) return ok.error();
  auto limit = detail::read_limit(c.query);
  if (!limit) return limit.error();
  command.limit = *limit;
  return Command(std::move(command));
}

// ?category, ?type, ?prefix (each repeatable: entries of one kind are ORed, kinds ANDed) and
// ?system, shared by GET /v1/all and its subscription.
Result<pubsub::Filter> read_filter(const Query& query) {
  pubsub::Filter filter;
  auto list = [&](std::string_view key, std::vector<std::string>& out) -> Status {
    const auto values = query.all(key);
    if (values.size() > kMaxFilterEntries) {
      return invalid("?" + std::string(key) + " is given " + std::to_string(values.size()) +
                     " times; the limit is " + std::to_string(kMaxFilterEntries));
    }
    for (const std::string* value : values) {
      if (auto ok = detail::check_label(*value, kMaxFilterEntryBytes, "?" + std::string(key));
          !ok) {
        return ok.error();
      }
      out.push_back(*value);
    }
    return {};
  };
  if (auto ok = list("category", filter.categories); !ok) return ok.error();
  if (auto ok = list("type", filter.event_types); !ok) return ok.error();
  if (auto ok = list("prefix", filter.stream_prefixes); !ok) return ok.error();
  if (const std::string* text = query.get("system")) {
    auto system = detail::parse_bool(*text, "?system");
    if (!system) return system.error();
    filter.include_system = *system;
  }
  return filter;
}

Result<Command> decode_read_all(Context& c) {
  if (auto ok =
          c.query.expect({"from", "direction", "limit", "system"}, {"category", "type", "prefix"});
      !ok) {
    return ok.error();
  }
  ReadAllCommand command;
  if (auto ok = read_range(c.query, command.direction, command.from); !ok) return ok.error();
  auto limit = detail::read_limit(c.query);
  if (!limit) return limit.error();
  command.limit = *limit;
  auto filter = read_filter(c.query);
  if (!filter) return filter.error();
  command.filter = std::move(*filter);
  return Command(std::move(command));
}

Result<Command> decode_set_metadata(Context& c) {
  if (auto ok = detail::check_writable_stream(c.name); !ok) return ok.error();
  if (auto ok = c.query.expect({}); !ok) return ok.error();
  auto body = detail::json_body(c.request);
  if (!body) return body.error();
  static constexpr std::array<std::string_view, 3> kFields{"max_count", "max_age_ms",
                                                           "truncate_before"};
  auto members = Members::read(*body, "the metadata", kFields);
  if (!members) return members.error();
  // What a Duration (signed nanoseconds) can hold, as the store checks too.
  constexpr std::uint64_t kMaxAgeMs =
      std::chrono::duration_cast<std::chrono::milliseconds>(Duration::max()).count();
  auto max_count = detail::read_uint(members->get("max_count"), "max_count", 0, UINT64_MAX);
  if (!max_count) return max_count.error();
  auto max_age = detail::read_uint(members->get("max_age_ms"), "max_age_ms", 0, kMaxAgeMs);
  if (!max_age) return max_age.error();
  auto truncate_before =
      detail::read_uint(members->get("truncate_before"), "truncate_before", 0, UINT64_MAX);
  if (!truncate_before) return truncate_before.error();
  SetMetadataCommand command;
  command.stream = std::move(c.name);
  command.metadata.max_count = *max_count;
  if (*max_age) command.metadata.max_age = std::chrono::milliseconds(**max_age);
  command.metadata.truncate_before = *truncate_before;
  return Command(std::move(command));
}

Result<Command> decode_delete_stream(Context& c) {
  if (auto ok = detail::check_writable_stream(c.name); !ok) return ok.error();
  if (auto ok = c.query.expect({"expected_version", "hard"}); !ok) return ok.error();
  DeleteStreamCommand command;
  command.stream = std::move(c.name);
  if (const std::string* text = c.query.get("expected_version")) {
    auto parsed = detail::parse_expected_version(*text, "?expected_version");
    if (!parsed) return parsed.error();
    command.expected = *parsed;
  }
  if (const std::string* text = c.query.get("hard")) {
    auto hard = detail::parse_bool(*text, "?hard");
    if (!hard) return hard.error();
    command.hard = *hard;
  }
  return Command(std::move(command));
}

// ?from and Last-Event-ID of a subscription. The header wins: it is where the client's
// EventSource got to before the connection dropped.
Status subscribe_from(const Context& c, pubsub::StartFrom& from, bool& resumed) {
  from = pubsub::StartFrom::start();
  resumed = false;
  if (const std::string* text = c.query.get("from")) {
    auto parsed = detail::parse_start_from(*text, "?from");
    if (!parsed) return parsed.error();
    from = *parsed;
  }
  if (!c.request.last_event_id.empty()) {
    auto last = detail::parse_decimal(c.request.last_event_id, "the Last-Event-ID header");
    if (!last) return last.error();
    if (*last == UINT64_MAX) return invalid("the Last-Event-ID header is 2^64-1: nothing follows");
    from = pubsub::StartFrom::at(*last + 1);
    resumed = true;
  }
  return {};
}

Result<Command> decode_subscribe_stream(Context& c) {
  if (auto ok = c.query.expect({"from"}); !ok) return ok.error();
  SubscribeStreamCommand command;
  command.stream = std::move(c.name);
  if (auto ok = subscribe_from(c, command.from, command.resumed); !ok) return ok.error();
  return Command(std::move(command));
}

Result<Command> decode_subscribe_all(Context& c) {
  if (auto ok = c.query.expect({"from", "system"}, {"category", "type", "prefix"}); !ok) {
    return ok.error();
  }
  SubscribeAllCommand command;
  if (auto ok = subscribe_from(c, command.from, command.resumed); !ok) return ok.error();
  auto filter = read_filter(c.query);
  if (!filter) return filter.error();
  command.filter = std::move(*filter);
  return Command(std::move(command));
}

Result<Command> decode_stream_route(Route route, Context& c) {
  const bool get = c.method == kMethodGet;
  switch (route) {
    case Route::kStream:
      if (get) return decode_read_stream(c);
      return c.method == kMethodPost ? decode_append(c) : decode_delete_stream(c);
    case Route::kStreamMetadata:
      if (!get) return decode_set_metadata(c);
      if (auto ok = c.query.expect({}); !ok) return ok.error();
      return Command(GetMetadataCommand{std::move(c.name)});
    case Route::kStreamSubscribe:
      return decode_subscribe_stream(c);
    case Route::kAll:
      return decode_read_all(c);
    case Route::kAllSubscribe:
      return decode_subscribe_all(c);
    default:
      break;
  }
  return Error(errc::internal, "no stream decoder for this route");
}

Result<Command> decode_group_route(Route route, Context& c) {
  std::string group = std::move(c.name);
  switch (route) {
    case Route::kGroups:
      if (auto ok = c.query.expect({}); !ok) return ok.error();
      return Command(ListGroupsCommand{});
    case Route::kGroup:
      if (c.method == kMethodPut)
        return detail::decode_create_group(std::move(group), c.request, c.query);
      if (auto ok = c.query.expect({}); !ok) return ok.error();
      if (c.method == kMethodGet) return Command(GetGroupCommand{std::move(group)});
      return Command(DeleteGroupCommand{std::move(group)});
    case Route::kGroupPoll:
      return detail::decode_poll(std::move(group), c.request, c.query);
    case Route::kGroupAck:
      return detail::decode_settle(std::move(group), true, c.request, c.query);
    case Route::kGroupNack:
      return detail::decode_settle(std::move(group), false, c.request, c.query);
    case Route::kGroupParked:
      return detail::decode_list_parked(std::move(group), c.query);
    case Route::kGroupParkedReplay:
      if (auto ok = c.query.expect({}); !ok) return ok.error();
      return Command(ReplayParkedCommand{std::move(group)});
    default:
      break;
  }
  return Error(errc::internal, "no group decoder for this route");
}

Result<Command> decode_projection_route(Route route, Context& c) {
  if (route == Route::kProjection && c.method == kMethodPut) {
    return detail::decode_report_projection(std::move(c.name), c.request, c.query);
  }
  if (auto ok = c.query.expect({}); !ok) return ok.error();
  if (route == Route::kProjections) return Command(ListProjectionsCommand{});
  if (c.method == kMethodGet) return Command(GetProjectionCommand{std::move(c.name)});
  return Command(DeleteProjectionCommand{std::move(c.name)});
}

Result<Command> decode(const ApiRequest& request, const IdGenerator& new_id) {
  const std::size_t question = request.target.find('?');
  const std::string_view path = request.target.substr(0, question);
  const std::string_view query_text =
      question == std::string_view::npos ? std::string_view() : request.target.substr(question + 1);
  auto match = match_route(path);
  if (!match) {
    return Error(errc::not_found, "no route for " + detail::quote_for_message(path, 200) +
                                      "; the API's routes are under /v1 (docs/api.md)");
  }
  const MethodSet method = method_bit(request.method);
  if ((match->allowed & method) == 0) {
    return Error(errc::method_not_allowed, detail::quote_for_message(request.method, 20) +
                                               " is not allowed on " +
                                               detail::quote_for_message(path, 200) +
                                               "; it takes " + allow_header(match->allowed))
        .with_detail(match->allowed);
  }
  // The operational routes ignore their query: probes and scrapers add their own parameters.
  switch (match->route) {
    case Route::kMetrics:
      return Command(MetricsCommand{});
    case Route::kHealthz:
      return Command(HealthzCommand{});
    case Route::kReady:
      return Command(ReadyCommand{});
    default:
      break;
  }

  Context c{request, new_id, method, {}, {}};
  const bool stream_route = match->route == Route::kStream ||
                            match->route == Route::kStreamMetadata ||
                            match->route == Route::kStreamSubscribe;
  if (stream_route) {
    auto name = decode_stream_segment(match->name);
    if (!name) return name.error();
    c.name = std::move(*name);
  } else if (!match->name.empty()) {
    const bool projection = match->route == Route::kProjection;
    auto name = decode_name_segment(match->name, projection ? "projection" : "group");
    if (!name) return name.error();
    c.name = std::move(*name);
  }
  auto query = Query::parse(query_text);
  if (!query) return query.error();
  c.query = std::move(*query);

  switch (match->route) {
    case Route::kStream:
    case Route::kStreamMetadata:
    case Route::kStreamSubscribe:
    case Route::kAll:
    case Route::kAllSubscribe:
      return decode_stream_route(match->route, c);
    case Route::kProjections:
    case Route::kProjection:
      return decode_projection_route(match->route, c);
    default:
      return decode_group_route(match->route, c);
  }
}

}  // namespace

Result<Command> decode_request(const ApiRequest& request, const IdGenerator& new_id) {
  // Every access to the parsed JSON is type-checked first, so nothing below should throw; if
  // something does (a bug, or memory running out), the client gets a 500 and the server goes on.
  try {
    return decode(request, new_id);
  } catch (const std::exception& e) {
    return Error(errc::internal, std::string("decoding the request failed: ") + e.what());
  }
}

std::string_view command_name(const Command& command) {
  static constexpr std::array<std::string_view, std::variant_size_v<Command>> kNames{
      "append",
      "read_stream",
      "read_all",
      "get_metadata",
      "set_metadata",
      "delete_stream",
      "subscribe_stream",
      "subscribe_all",
      "create_group",
      "list_groups",
      "get_group",
      "delete_group",
      "poll",
      "ack",
      "nack",
      "list_parked",
      "replay_parked",
      "report_projection",
      "list_projections",
      "get_projection",
      "delete_projection",
      "metrics",
      "healthz",
      "ready"};
  return kNames[command.index()];
}

}  // namespace keel::node

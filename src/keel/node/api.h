// The request/response codec of `keel node`'s HTTP/JSON API, version 1 (docs/api.md): an HTTP
// request (method, target, body and two header values) becomes a typed Command, and what the
// library returns becomes JSON or a Server-Sent Events frame. No sockets and no store: the
// server decodes, calls eventlog and pubsub, and encodes.
//
//   auto command = node::decode_request({.method = head.method, .target = head.target,
//                                        .body = body, .content_type = head.find("content-type"),
//                                        .last_event_id = head.find("last-event-id")});
//   if (!command) {
//     const node::ApiError error = node::api_error(command.error());
//     return respond(error.status, node::error_json(error), error.allow);
//   }
//   if (auto* append = std::get_if<node::AppendCommand>(&*command)) {
//     auto appended = store.append(append->stream, append->expected, append->events);
//     if (!appended) { ... node::api_error(appended.error()) ... }
//     return respond(200, node::append_result_json(*appended));
//   }
//
// Decoding is bounded: one pass over the target and the body, JSON nesting at most
// kMaxJsonDepth, every list and number checked against the limits below. Nothing here throws.
//
// Thread-safety: free functions over their arguments; call them from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/core/uuid.h"
#include "keel/eventlog/event.h"
#include "keel/eventlog/event_store.h"
#include "keel/pubsub/consumer_group.h"
#include "keel/pubsub/reader.h"

namespace keel::node {

using eventlog::Direction;
using eventlog::EventData;
using eventlog::ExpectedVersion;
using eventlog::RecordedEvent;

// ---- Limits (each is in docs/api.md) ----

inline constexpr std::size_t kMaxStreamNameBytes = 1024;
inline constexpr std::size_t kMaxEventTypeBytes = 1024;
inline constexpr std::size_t kMaxEventsPerAppend = 10000;  // the store's max_append_events
inline constexpr std::size_t kDefaultReadLimit = 100;
inline constexpr std::size_t kMaxReadLimit = 1000;
inline constexpr std::size_t kMaxFilterEntries = 100;  // per kind (category, type, prefix)
inline constexpr std::size_t kMaxFilterEntryBytes = 1024;
inline constexpr std::size_t kDefaultPollMax = 10;
inline constexpr std::size_t kMaxPollMax = 1000;
inline constexpr std::uint64_t kMaxWaitMs = 60000;
inline constexpr std::size_t kMaxSettleIds = 1000;  // ids in one ack or nack
inline constexpr std::size_t kMaxReasonBytes = 1024;
inline constexpr std::size_t kMaxJsonDepth = 64;
// Consumer group settings: upper bounds that keep one group's memory and timers sane.
inline constexpr std::uint64_t kMaxGroupInFlight = 10000;
inline constexpr std::uint64_t kMaxGroupDeliveries = 1000;
inline constexpr std::uint64_t kMaxGroupBufferEvents = 100000;
inline constexpr std::uint64_t kMaxGroupCheckpointAfterAcks = 1000000;
inline constexpr std::uint64_t kMaxGroupDurationMs = 86400000;  // one day
// Projection reports: how many projections the node keeps, and the size of what each reports.
inline constexpr std::size_t kMaxProjections = 256;
inline constexpr std::size_t kMaxProjectionStateBytes = 4096;  // the state, as compact JSON
inline constexpr std::size_t kMaxProjectionErrorBytes = 1024;

// `from` of a backward read that starts at the last event (the store's convention).
inline constexpr std::uint64_t kEnd = UINT64_MAX;

// ---- Requests and commands ----

// What the server hands over. Every view must outlive the call only; commands own their data.
struct ApiRequest {
  std::string_view method;  // "GET", "POST", "PUT", "DELETE" (case-sensitive, RFC 9110)
  std::string_view target;  // origin form: the path and an optional "?query", percent-encoded
  std::string_view body;
  std::string_view content_type;   // the Content-Type field's value, empty when absent
  std::string_view last_event_id;  // the Last-Event-ID field's value, empty when absent
};

// POST /v1/streams/{stream}
struct AppendCommand {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::any();
  std::vector<EventData> events;  // data and metadata as compact JSON text; metadata may be ""
  bool batch = false;             // the body was {"events": [...]}, not one event
};

// GET /v1/streams/{stream}: pass straight to EventStore::read_stream().
struct ReadStreamCommand {
  std::string stream;
  std::uint64_t from = 0;  // a version, or kEnd (backwards only)
  Direction direction = Direction::kForward;
  std::size_t limit = kDefaultReadLimit;
};

// GET /v1/all. The filter always applies, system streams ('$…') being left out unless
// filter.include_system: read_all() pages through Filter::matches(), or a pubsub::Reader.
struct ReadAllCommand {
  std::uint64_t from = 0;  // a position, or kEnd (backwards only)
  Direction direction = Direction::kForward;
  std::size_t limit = kDefaultReadLimit;
  pubsub::Filter filter;
};

// GET and PUT /v1/streams/{stream}/metadata
struct GetMetadataCommand {
  std::string stream;
};
struct SetMetadataCommand {
  std::string stream;
  eventlog::StreamMetadata metadata;  // replaces the stream's metadata whole
};

// DELETE /v1/streams/{stream}
struct DeleteStreamCommand {
  std::string stream;
  ExpectedVersion expected = ExpectedVersion::any();
  bool hard = false;
};

// GET /v1/streams/{stream}/subscribe. For a stream, `from.position` is a version. Last-Event-ID
// wins over ?from=: it names the last event the client had, so `from` is the one after it.
struct SubscribeStreamCommand {
  std::string stream;
  pubsub::StartFrom from = pubsub::StartFrom::start();
  bool resumed = false;  // `from` came from Last-Event-ID
};

// GET /v1/all/subscribe: `from` is a position; frames carry positions as ids.
struct SubscribeAllCommand {
  pubsub::StartFrom from = pubsub::StartFrom::start();
  pubsub::Filter filter;
  bool resumed = false;
};

// PUT /v1/groups/{group}: options.name is the group.
struct CreateGroupCommand {
  pubsub::GroupOptions options;
};
struct ListGroupsCommand {};
struct GetGroupCommand {
  std::string group;
};
struct DeleteGroupCommand {
  std::string group;
};

// POST /v1/groups/{group}/poll: the member joins on its first poll.
struct PollCommand {
  std::string group;
  std::string member;
  // The member process's incarnation (optional): a poll with another session than the
  // member's last one means that process is gone, and what it held is redelivered at once.
  std::string session;
  std::size_t max = kDefaultPollMax;
  Duration wait = Duration::zero();
};
struct AckCommand {
  std::string group;
  std::string member;
  std::vector<std::uint64_t> ids;  // delivery ids
};
struct NackCommand {
  std::string group;
  std::string member;
  std::vector<std::uint64_t> ids;
  pubsub::NackAction action = pubsub::NackAction::kRetry;
  std::string reason;
};

// GET /v1/groups/{group}/parked: a page of the group's parked stream, by version.
struct ListParkedCommand {
  std::string group;
  std::uint64_t from = 0;
  std::size_t limit = kDefaultReadLimit;
};
struct ReplayParkedCommand {
  std::string group;
};

// What a projection (a ProjectionRunner in a process of its own) tells the node about itself,
// so that the console and GET /v1/projections show every read model's progress in one place.
// The node keeps the latest report of each, in memory: a projection's own checkpoint lives in
// its read model, and a live projection reports again within seconds after a node restart.
struct ProjectionReport {
  std::string name;            // a group name's rules (letters, digits, '_', '-', '.')
  std::uint64_t position = 0;  // every event below it is in the read model
  std::uint64_t applied = 0, skipped = 0, parked = 0;
  bool live = false;  // caught up with the head at its last look
  bool paused = false;
  std::string error;                     // why it stopped; empty when it did not
  std::string state;                     // a JSON object as compact text, empty when none was sent
  Duration interval = Duration::zero();  // how often it reports; zero: not said
};

// PUT /v1/projections/{name}: the report; name is the path's.
struct ReportProjectionCommand {
  ProjectionReport report;
};
struct ListProjectionsCommand {};
struct GetProjectionCommand {
  std::string name;
};
struct DeleteProjectionCommand {
  std::string name;
};

struct MetricsCommand {};
struct HealthzCommand {};
struct ReadyCommand {};

using Command = std::variant<
    AppendCommand, ReadStreamCommand, ReadAllCommand, GetMetadataCommand, SetMetadataCommand,
    DeleteStreamCommand, SubscribeStreamCommand, SubscribeAllCommand, CreateGroupCommand,
    ListGroupsCommand, GetGroupCommand, DeleteGroupCommand, PollCommand, AckCommand, NackCommand,
    ListParkedCommand, ReplayParkedCommand, ReportProjectionCommand, ListProjectionsCommand,
    GetProjectionCommand, DeleteProjectionCommand, MetricsCommand, HealthzCommand, ReadyCommand>;

// "append", "read_stream", …: one word per command, for access logs and metrics labels.
std::string_view command_name(const Command& command);

// Where the ids of events appended without one come from. Empty: Uuid::random_v4() (a
// per-thread generator seeded from std::random_device). Tests pass a seeded Random.
using IdGenerator = std::function<Uuid()>;

// Routes the request and decodes its parameters and body. Errors are node::errc values (see
// below); hand them to api_error().
Result<Command> decode_request(const ApiRequest& request, const IdGenerator& new_id = {});

// ---- Errors ----

// The codec's error codes; each has an HTTP status and a code string (code_string()) that goes
// into the error body. decode_request() returns bad_json to method_not_allowed and
// unsupported_media_type (internal only for a bug); payload_too_large, conflict, unavailable and
// a group's not_found are for the server to return.
enum class errc {
  bad_json = 1,            // 400: the body is not JSON, nests too deep or repeats a key
  invalid_argument,        // 400: a field or parameter has the wrong type or value
  invalid_stream_name,     // 400: empty, too long, not UTF-8, a control character
  system_stream,           // 403: '$' names are the node's own; no appends, deletes, metadata
  not_found,               // 404: no such route (or, from the server, no such group)
  method_not_allowed,      // 405: Error::detail() holds the allowed methods (a MethodSet)
  payload_too_large,       // 413: the server's body limit
  unsupported_media_type,  // 415: a body that is not application/json
  conflict,                // 409: e.g. a group that exists with another filter
  unavailable,             // 503: not ready, shutting down
  internal,                // 500: a bug; the message says where
};

const std::error_category& node_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), node_category()}; }
std::string_view code_string(errc e);
int http_status(errc e);

// A set of methods, as a bit mask: the detail() of a method_not_allowed error.
using MethodSet = std::uint8_t;
inline constexpr MethodSet kMethodGet = 1, kMethodPost = 2, kMethodPut = 4, kMethodDelete = 8;
// "GET, POST": the Allow header's value.
std::string allow_header(MethodSet methods);

// What goes back to the client for an error.
struct ApiError {
  int status = 500;
  std::string code;  // "bad_json", "wrong_expected_version", …
  std::string message;
  std::string allow;  // 405 only: the Allow header's value
  // wrong_expected_version only: the stream's actual version, -1 when it does not exist.
  std::optional<std::int64_t> actual_version;
};

// Maps any library error to its status and code: node::errc as above; eventlog's
// wrong_expected_version and duplicate_event_id → 409, stream_deleted → 410, invalid_argument
// → 400, disk_full → 507, closed and io_error → 503 unavailable, corrupt → 500; core's
// invalid_argument (pubsub's) → 400; anything else → 500 "internal".
ApiError api_error(const Error& error);
// For the server's body limit: 413 payload_too_large naming the limit.
ApiError payload_too_large(std::size_t limit_bytes);
// {"error": code, "message": text} (plus "actual_version" for wrong_expected_version).
std::string error_json(const ApiError& error);

// ---- Encoders ----
//
// JSON bodies are compact and valid UTF-8 (bytes that are not become U+FFFD in strings). The
// append_* forms write to the end of `out`, so one buffer serves a whole response.

// Which number identifies an event: its position in $all or its version in its stream.
enum class Cursor { kPosition, kVersion };

// {"id","stream","type","version","position","timestamp","data_format","data","metadata"}:
// data is the JSON value itself when it is JSON ("data_format": "json"), else a string
// ("text"), or base64 when not UTF-8 ("base64"); metadata is its JSON value, null when empty.
void append_event_json(std::string& out, const RecordedEvent& event);
std::string event_json(const RecordedEvent& event);

// {"first_version","last_version","first_position","last_position","duplicate"}
std::string append_result_json(const eventlog::AppendResult& result);

// {"events": [...], "next": {"from": N} or null}. `next_from` is where the next page starts;
// nullopt when this page reached the end.
void append_read_page_json(std::string& out, std::span<const RecordedEvent> events,
                           std::optional<std::uint64_t> next_from);
std::string read_page_json(std::span<const RecordedEvent> events,
                           std::optional<std::uint64_t> next_from);

// `next_from` for a page of an unfiltered read that asked for `limit` events: nullopt when the
// page is short (the store returns fewer only at the end) or ends at 0 going backwards; else
// one past its last event in `direction`. Filtered reads know better: they continue after the
// last position they looked at, matching or not.
std::optional<std::uint64_t> next_from(std::span<const RecordedEvent> events, std::size_t limit,
                                       Direction direction, Cursor cursor);

// {"max_count","max_age_ms","truncate_before"}, each null when unset (the PUT body's form).
std::string metadata_json(const eventlog::StreamMetadata& metadata);

// An SSE frame "id: N\nevent: TYPE\ndata: EVENT-JSON\n\n" (a line end inside the JSON splits
// it into several data lines, as the SSE spec requires). `cursor` picks the id: positions on
// $all, versions on a stream. CR and LF in the type become spaces on the event line.
void append_sse_event(std::string& out, const RecordedEvent& event, Cursor cursor);
// "id: N-1\n\n" for a subscription that has looked at every position below `next` without a
// match: EventSource records the id (so a reconnect resumes there) and dispatches nothing.
// Writes nothing for next = 0.
void append_sse_checkpoint(std::string& out, std::uint64_t next);
// ": text\n\n", a comment: keeps idle connections open through proxies.
void append_sse_comment(std::string& out, std::string_view text);

// A group as GET /v1/groups/{group} returns it: the PUT body's fields, then "stats" and
// "members".
struct GroupSummary {
  pubsub::GroupOptions options;
  pubsub::GroupStats stats;
};
std::string group_json(const pubsub::GroupOptions& options, const pubsub::GroupStats& stats);
// {"groups": [group, ...]}
std::string group_list_json(std::span<const GroupSummary> groups);

// {"deliveries": [{"id", "attempt", "replayed", "event": {...}}]}
std::string deliveries_json(std::span<const pubsub::Delivery> deliveries);

// The outcome of acking or nacking one delivery id.
struct Settled {
  std::uint64_t id = 0;
  Status status;
};
// {"settled": [ids], "failed": [{"id", "error", "message"}]}
std::string settle_json(std::span<const Settled> outcomes);

// {"replayed": N}
std::string replay_json(std::uint64_t queued);

// A projection as the node has it: the report's fields, then "head" and "lag" (the node's next
// position, and how many positions the projection is behind it), "reported_at" (Unix ms),
// "age_ms" (since that report) and "stale" (no report for three of its intervals, or 30 s when
// it did not say its interval).
struct ProjectionView {
  ProjectionReport report;
  std::int64_t reported_at_ms = 0;
  Duration age = Duration::zero();
};
bool projection_stale(const ProjectionView& view);
void append_projection_json(std::string& out, const ProjectionView& view, std::uint64_t head);
std::string projection_json(const ProjectionView& view, std::uint64_t head);
// {"projections": [projection, ...]}
std::string projection_list_json(std::span<const ProjectionView> views, std::uint64_t head);

}  // namespace keel::node

template <>
struct std::is_error_code_enum<keel::node::errc> : std::true_type {};

// The API's responses, written straight into one string: no JSON tree is built for an event, and
// event data that is already JSON is copied in as it is stored.

#include "keel/node/api.h"
#include "keel/node/text_codec.h"

namespace keel::node {
namespace {

using detail::append_int;
using detail::append_json_string;
using detail::append_uint;

std::int64_t to_ms(Duration duration) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(duration).count();
}

void append_data(std::string& out, std::string_view data) {
  // Stored data that is JSON is copied in as it is (core's strict validator decides: it also
  // refuses a leading byte-order mark, which copied into a response would make it invalid).
  if (is_json_value(data)) {
    out += ",\"data_format\":\"json\",\"data\":";
    out += data;
  } else if (!detail::invalid_utf8_at(data)) {
    out += ",\"data_format\":\"text\",\"data\":";
    append_json_string(out, data);
  } else {
    out += ",\"data_format\":\"base64\",\"data\":\"";
    detail::append_base64(out, data);
    out += '"';
  }
}

void append_metadata(std::string& out, std::string_view metadata) {
  out += ",\"metadata\":";
  if (metadata.empty()) {
    out += "null";
  } else if (is_json_value(metadata)) {
    out += metadata;
  } else {
    append_json_string(out, metadata);  // not JSON, though it should be: as text
  }
}

void append_optional(std::string& out, std::string_view key, std::optional<std::uint64_t> value) {
  out += '"';
  out += key;
  out += "\":";
  if (value) {
    append_uint(out, *value);
  } else {
    out += "null";
  }
}

void append_string_list(std::string& out, std::string_view key,
                        const std::vector<std::string>& list) {
  out += '"';
  out += key;
  out += "\":[";
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, list[i]);
  }
  out += ']';
}

void append_field(std::string& out, std::string_view key, std::uint64_t value) {
  out += ",\"";
  out += key;
  out += "\":";
  append_uint(out, value);
}

void append_group(std::string& out, const pubsub::GroupOptions& options,
                  const pubsub::GroupStats& stats) {
  out += "{\"name\":";
  append_json_string(out, options.name);
  out += ',';
  append_string_list(out, "categories", options.filter.categories);
  out += ',';
  append_string_list(out, "event_types", options.filter.event_types);
  out += ',';
  append_string_list(out, "stream_prefixes", options.filter.stream_prefixes);
  out += ",\"strategy\":";
  append_json_string(out, pubsub::to_string(options.strategy));
  out += ",\"start\":";
  switch (options.start.kind) {
    case pubsub::StartFrom::Kind::kStart:
      out += "\"start\"";
      break;
    case pubsub::StartFrom::Kind::kEnd:
      out += "\"end\"";
      break;
    case pubsub::StartFrom::Kind::kPosition:
      append_uint(out, options.start.position);
      break;
  }
  append_field(out, "max_in_flight", options.max_in_flight);
  out += ",\"ack_timeout_ms\":";
  append_int(out, to_ms(options.ack_timeout));
  append_field(out, "max_deliveries", options.max_deliveries);
  out += ",\"retry_backoff_ms\":";
  append_int(out, to_ms(options.retry_backoff));
  out += ",\"max_retry_backoff_ms\":";
  append_int(out, to_ms(options.max_retry_backoff));
  append_field(out, "buffer_events", options.buffer_events);
  append_field(out, "checkpoint_after_acks", options.checkpoint_after_acks);
  out += ",\"checkpoint_interval_ms\":";
  append_int(out, to_ms(options.checkpoint_interval));

  out += ",\"stats\":{\"checkpoint\":";
  append_uint(out, stats.checkpoint);
  append_field(out, "read_position", stats.read_position);
  append_field(out, "lag", stats.lag);
  append_field(out, "buffered", stats.buffered);
  append_field(out, "in_flight", stats.in_flight);
  append_field(out, "delivered", stats.delivered);
  append_field(out, "acked", stats.acked);
  append_field(out, "nacked", stats.nacked);
  append_field(out, "timed_out", stats.timed_out);
  append_field(out, "parked", stats.parked);
  append_field(out, "skipped", stats.skipped);
  append_field(out, "replayed", stats.replayed);
  out += "},\"members\":[";
  for (std::size_t i = 0; i < stats.members.size(); ++i) {
    const pubsub::MemberStats& member = stats.members[i];
    if (i > 0) out += ',';
    out += "{\"name\":";
    append_json_string(out, member.name);
    append_field(out, "in_flight", member.in_flight);
    append_field(out, "acked", member.acked);
    out += '}';
  }
  out += "]}";
}

// Rewrites out[start..] so that each line end (CRLF, CR or LF, all line ends to SSE) starts a
// new "data: " line. Compact JSON has none; stored data copied in may.
void split_data_lines(std::string& out, std::size_t start) {
  const std::string text = out.substr(start);
  out.resize(start);
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      out += "\ndata: ";
    } else {
      out.push_back(c);
    }
  }
}

}  // namespace

void append_event_json(std::string& out, const RecordedEvent& event) {
  out.reserve(out.size() + event.data.size() + event.metadata.size() + event.stream.size() +
              event.type.size() + 192);
  out += "{\"id\":\"";
  event.id.append_to(out);
  out += "\",\"stream\":";
  append_json_string(out, event.stream);
  out += ",\"type\":";
  append_json_string(out, event.type);
  append_field(out, "version", event.version);
  append_field(out, "position", event.position);
  out += ",\"timestamp\":\"";
  detail::append_rfc3339(out, event.timestamp_ns);
  out += '"';
  append_data(out, event.data);
  append_metadata(out, event.metadata);
  out += '}';
}

std::string event_json(const RecordedEvent& event) {
  std::string out;
  append_event_json(out, event);
  return out;
}

std::string append_result_json(const eventlog::AppendResult& result) {
  std::string out = "{\"first_version\":";
  append_uint(out, result.first_version);
  append_field(out, "last_version", result.last_version);
  append_field(out, "first_position", result.first_position);
  append_field(out, "last_position", result.last_position);
  out += result.duplicate ? ",\"duplicate\":true}" : ",\"duplicate\":false}";
  return out;
}

void append_read_page_json(std::string& out, std::span<const RecordedEvent> events,
                           std::optional<std::uint64_t> next_from) {
  out += "{\"events\":[";
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (i > 0) out += ',';
    append_event_json(out, events[i]);
  }
  out += "],\"next\":";
  if (next_from) {
    out += "{\"from\":";
    append_uint(out, *next_from);
    out += "}}";
  } else {
    out += "null}";
  }
}

std::string read_page_json(std::span<const RecordedEvent> events,
                           std::optional<std::uint64_t> next_from) {
  std::string out;
  append_read_page_json(out, events, next_from);
  return out;
}

std::optional<std::uint64_t> next_from(std::span<const RecordedEvent> events, std::size_t limit,
                                       Direction direction, Cursor cursor) {
  if (events.empty() || events.size() < limit) return std::nullopt;
  const RecordedEvent& last = events.back();
  const std::uint64_t at = cursor == Cursor::kPosition ? last.position : last.version;
  if (direction == Direction::kForward) {
    if (at == UINT64_MAX) return std::nullopt;
    return at + 1;
  }
  if (at == 0) return std::nullopt;
  return at - 1;
}

std::string metadata_json(const eventlog::StreamMetadata& metadata) {
  std::string out = "{";
  append_optional(out, "max_count", metadata.max_count);
  out += ',';
  std::optional<std::uint64_t> max_age_ms;
  if (metadata.max_age) max_age_ms = static_cast<std::uint64_t>(to_ms(*metadata.max_age));
  append_optional(out, "max_age_ms", max_age_ms);
  out += ',';
  append_optional(out, "truncate_before", metadata.truncate_before);
  out += '}';
  return out;
}

void append_sse_event(std::string& out, const RecordedEvent& event, Cursor cursor) {
  out += "id: ";
  append_uint(out, cursor == Cursor::kPosition ? event.position : event.version);
  out += "\nevent: ";
  for (char c : event.type) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
  out += "\ndata: ";
  const std::size_t start = out.size();
  append_event_json(out, event);
  if (out.find_first_of("\r\n", start) != std::string::npos) split_data_lines(out, start);
  out += "\n\n";
}

void append_sse_checkpoint(std::string& out, std::uint64_t next) {
  if (next == 0) return;
  out += "id: ";
  append_uint(out, next - 1);
  out += "\n\n";
}

void append_sse_comment(std::string& out, std::string_view text) {
  out += ": ";
  for (char c : text) out.push_back(c == '\r' || c == '\n' ? ' ' : c);
  out += "\n\n";
}

std::string group_json(const pubsub::GroupOptions& options, const pubsub::GroupStats& stats) {
  std::string out;
  append_group(out, options, stats);
  return out;
}

std::string group_list_json(std::span<const GroupSummary> groups) {
  std::string out = "{\"groups\":[";
  for (std::size_t i = 0; i < groups.size(); ++i) {
    if (i > 0) out += ',';
    append_group(out, groups[i].options, groups[i].stats);
  }
  out += "]}";
  return out;
}

std::string deliveries_json(std::span<const pubsub::Delivery> deliveries) {
  std::string out = "{\"deliveries\":[";
  for (std::size_t i = 0; i < deliveries.size(); ++i) {
    const pubsub::Delivery& delivery = deliveries[i];
    if (i > 0) out += ',';
    out += "{\"id\":";
    append_uint(out, delivery.id);
    append_field(out, "attempt", delivery.attempt);
    out += delivery.replayed ? ",\"replayed\":true" : ",\"replayed\":false";
    out += ",\"event\":";
    append_event_json(out, delivery.event);
    out += '}';
  }
  out += "]}";
  return out;
}

std::string settle_json(std::span<const Settled> outcomes) {
  std::string out = "{\"settled\":[";
  bool first = true;
  for (const Settled& outcome : outcomes) {
    if (!outcome.status.ok()) continue;
    if (!first) out += ',';
    first = false;
    append_uint(out, outcome.id);
  }
  out += "],\"failed\":[";
  first = true;
  for (const Settled& outcome : outcomes) {
    if (outcome.status.ok()) continue;
    if (!first) out += ',';
    first = false;
    const ApiError error = api_error(outcome.status.error());
    out += "{\"id\":";
    append_uint(out, outcome.id);
    out += ",\"error\":";
    append_json_string(out, error.code);
    out += ",\"message\":";
    append_json_string(out, error.message);
    out += '}';
  }
  out += "]}";
  return out;
}

std::string replay_json(std::uint64_t queued) {
  std::string out = "{\"replayed\":";
  append_uint(out, queued);
  out += '}';
  return out;
}

bool projection_stale(const ProjectionView& view) {
  const Duration interval = view.report.interval;
  return view.age > (interval > Duration::zero() ? 3 * interval : Duration(30s));
}

void append_projection_json(std::string& out, const ProjectionView& view, std::uint64_t head) {
  const ProjectionReport& r = view.report;
  out += "{\"name\":";
  append_json_string(out, r.name);
  append_field(out, "position", r.position);
  append_field(out, "head", head);
  append_field(out, "lag", head > r.position ? head - r.position : 0);
  append_field(out, "applied", r.applied);
  append_field(out, "skipped", r.skipped);
  append_field(out, "parked", r.parked);
  out += r.live ? ",\"live\":true" : ",\"live\":false";
  out += r.paused ? ",\"paused\":true" : ",\"paused\":false";
  out += ",\"error\":";
  if (r.error.empty()) {
    out += "null";
  } else {
    append_json_string(out, r.error);
  }
  out += ",\"state\":";
  out += r.state.empty() ? "null" : r.state;  // checked as a JSON object when it was decoded
  out += ",\"interval_ms\":";
  if (r.interval > Duration::zero()) {
    append_int(out, to_ms(r.interval));
  } else {
    out += "null";
  }
  out += ",\"reported_at\":";
  append_int(out, view.reported_at_ms);
  out += ",\"age_ms\":";
  append_int(out, to_ms(view.age));
  out += projection_stale(view) ? ",\"stale\":true}" : ",\"stale\":false}";
}

std::string projection_json(const ProjectionView& view, std::uint64_t head) {
  std::string out;
  append_projection_json(out, view, head);
  return out;
}

std::string projection_list_json(std::span<const ProjectionView> views, std::uint64_t head) {
  std::string out = "{\"projections\":[";
  for (std::size_t i = 0; i < views.size(); ++i) {
    if (i > 0) out += ',';
    append_projection_json(out, views[i], head);
  }
  out += "]}";
  return out;
}

}  // namespace keel::node

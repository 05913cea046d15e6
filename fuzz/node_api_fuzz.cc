// Feeds arbitrary requests to `keel node`'s API codec, and arbitrary event bytes to its encoders.
// The input is "METHOD\nTARGET\nCONTENT-TYPE\nLAST-EVENT-ID\nBODY" (missing parts are empty), so
// the seeds are readable requests. Any request must decode to a command within the API's limits
// or to a client error (4xx) whose body is JSON — never a crash, an exception or a 500 — and
// any event must encode to valid JSON and to SSE frames whose every line is a field.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <variant>

#include "keel/node/api.h"

namespace node = keel::node;

namespace {

void check(bool condition) {
  if (!condition) __builtin_trap();
}

std::string_view take_line(std::string_view& rest) {
  const std::size_t end = rest.find('\n');
  const std::string_view line = rest.substr(0, end);
  rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
  return line;
}

// nlohmann stops at a NUL as if the input ended there; JSON has no raw NUL anywhere.
bool valid_json(std::string_view text) {
  return text.find('\0') == std::string_view::npos && nlohmann::json::accept(text);
}

// Each line of an SSE stream is a comment or a field we write, and frames end with a blank line.
void check_sse(std::string_view frames) {
  check(frames.ends_with("\n\n"));
  while (!frames.empty()) {
    const std::string_view line = take_line(frames);
    check(line.find('\r') == std::string_view::npos);
    check(line.empty() || line.starts_with(":") || line.starts_with("id: ") ||
          line.starts_with("event: ") || line.starts_with("data: "));
  }
}

void check_decoded(const node::Command& command) {
  if (const auto* append = std::get_if<node::AppendCommand>(&command)) {
    check(!append->stream.empty() && append->stream.size() <= node::kMaxStreamNameBytes);
    check(append->stream[0] != '$');
    check(!append->events.empty() && append->events.size() <= node::kMaxEventsPerAppend);
    for (const auto& event : append->events) {
      check(!event.type.empty() && event.type.size() <= node::kMaxEventTypeBytes);
      check(valid_json(event.data));
      check(event.metadata.empty() || (valid_json(event.metadata) && event.metadata[0] == '{'));
      // What was appended encodes back to JSON holding the same data.
      const auto recorded = keel::eventlog::recorded(event, append->stream, 0, 0, 0);
      const std::string json = node::event_json(recorded);
      check(valid_json(json));
      check(json.find(",\"data_format\":\"json\",\"data\":" + event.data + ",") !=
            std::string::npos);
    }
  } else if (const auto* read = std::get_if<node::ReadStreamCommand>(&command)) {
    check(read->limit >= 1 && read->limit <= node::kMaxReadLimit);
  } else if (const auto* all = std::get_if<node::ReadAllCommand>(&command)) {
    check(all->limit >= 1 && all->limit <= node::kMaxReadLimit);
    check(all->filter.categories.size() <= node::kMaxFilterEntries);
  } else if (const auto* poll = std::get_if<node::PollCommand>(&command)) {
    check(poll->max >= 1 && poll->max <= node::kMaxPollMax);
    check(poll->wait <= std::chrono::milliseconds(node::kMaxWaitMs));
  } else if (const auto* ack = std::get_if<node::AckCommand>(&command)) {
    check(!ack->ids.empty() && ack->ids.size() <= node::kMaxSettleIds);
  } else if (const auto* group = std::get_if<node::CreateGroupCommand>(&command)) {
    check(group->options.max_in_flight >= 1 && group->options.ack_timeout.count() > 0);
    check(valid_json(node::group_json(group->options, {})));
  } else if (const auto* metadata = std::get_if<node::SetMetadataCommand>(&command)) {
    check(valid_json(node::metadata_json(metadata->metadata)));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  const std::string_view input = rest;
  node::ApiRequest request;
  request.method = take_line(rest);
  request.target = take_line(rest);
  request.content_type = take_line(rest);
  request.last_event_id = take_line(rest);
  request.body = rest;

  keel::Random random(size);
  auto decoded = node::decode_request(request, [&] { return keel::Uuid::random_v4(random); });
  if (decoded.ok()) {
    check_decoded(*decoded);
  } else {
    const node::ApiError error = node::api_error(decoded.error());
    check(error.status >= 400 && error.status < 500 && error.status != 413);
    check(!error.code.empty() && !error.message.empty());
    check((error.status == 405) == !error.allow.empty());
    check(valid_json(node::error_json(error)));
  }

  // The encoders take whatever an embedded user may have stored: any bytes anywhere.
  keel::eventlog::RecordedEvent event;
  event.stream = std::string(request.target);
  event.type = std::string(request.method);
  event.data = std::string(request.body);
  event.metadata = std::string(request.content_type);
  event.version = size;
  event.position = UINT64_MAX - size;
  event.timestamp_ns = static_cast<std::int64_t>(size * 0x9e3779b97f4a7c15ull);
  check(valid_json(node::event_json(event)));
  std::string frames;
  node::append_sse_event(frames, event, node::Cursor::kPosition);
  node::append_sse_comment(frames, input.substr(0, 64));
  node::append_sse_checkpoint(frames, size);
  check_sse(frames);
  return 0;
}

// The body of PUT /v1/projections/{name}: a projection's report of its progress.
#include "keel/node/request.h"
#include "keel/node/text_codec.h"

namespace keel::node::detail {
namespace {

Result<bool> read_flag(const Json* value, std::string_view name) {
  if (value == nullptr || value->is_null()) return false;
  if (!value->is_boolean()) {
    return invalid(std::string(name) + " must be true or false, not " + describe_json(*value));
  }
  return value->get<bool>();
}

Result<std::uint64_t> read_count(const Members& members, std::string_view name) {
  auto count = read_uint(members.get(name), name, 0, UINT64_MAX);
  if (!count) return count.error();
  return count->value_or(0);
}

}  // namespace

Result<Command> decode_report_projection(std::string name, const ApiRequest& request,
                                         const Query& query) {
  if (auto ok = query.expect({}); !ok) return ok.error();
  auto body = json_body(request);
  if (!body) return body.error();
  static constexpr std::array<std::string_view, 9> kFields{"position", "applied", "skipped",
                                                           "parked",   "live",    "paused",
                                                           "error",    "state",   "interval_ms"};
  auto members = Members::read(*body, "the projection report", kFields);
  if (!members) return members.error();
  ReportProjectionCommand command;
  ProjectionReport& report = command.report;
  report.name = std::move(name);

  auto position = read_uint(members->get("position"), "position", 0, UINT64_MAX);
  if (!position) return position.error();
  if (!*position) {
    return invalid("position is required: every event below it is in the projection's model");
  }
  report.position = **position;
  for (auto [field, out] :
       {std::pair{"applied", &report.applied}, std::pair{"skipped", &report.skipped},
        std::pair{"parked", &report.parked}}) {
    auto count = read_count(*members, field);
    if (!count) return count.error();
    *out = *count;
  }
  auto live = read_flag(members->get("live"), "live");
  if (!live) return live.error();
  report.live = *live;
  auto paused = read_flag(members->get("paused"), "paused");
  if (!paused) return paused.error();
  report.paused = *paused;

  auto error = read_string(members->get("error"), "error");
  if (!error) return error.error();
  if (*error) {
    if ((*error)->size() > kMaxProjectionErrorBytes) {
      return invalid("error is " + std::to_string((*error)->size()) + " bytes; the limit is " +
                     std::to_string(kMaxProjectionErrorBytes));
    }
    report.error = std::move(**error);
  }
  if (const Json* state = members->get("state"); state != nullptr && !state->is_null()) {
    if (!state->is_object()) {
      return invalid("state must be a JSON object (or null), not " + describe_json(*state));
    }
    report.state = state->dump();
    if (report.state.size() > kMaxProjectionStateBytes) {
      return invalid("state is " + std::to_string(report.state.size()) +
                     " bytes as compact JSON; the limit is " +
                     std::to_string(kMaxProjectionStateBytes) +
                     ": report a summary (counts, sums), not the read model");
    }
  }
  auto interval = read_uint(members->get("interval_ms"), "interval_ms", 1, kMaxGroupDurationMs);
  if (!interval) return interval.error();
  if (*interval) report.interval = std::chrono::milliseconds(**interval);
  return Command(std::move(command));
}

}  // namespace keel::node::detail

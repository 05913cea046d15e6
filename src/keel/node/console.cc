#include "keel/node/console.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "keel/console/console.h"

namespace keel::node {

using nlohmann::json;

namespace {

const char* durability_name(eventlog::Durability durability) {
  switch (durability) {
    case eventlog::Durability::kEveryCommit:
      return "every_commit";
    case eventlog::Durability::kInterval:
      return "interval";
    case eventlog::Durability::kNone:
      return "none";
  }
  return "?";
}

// `data` cut to `bytes` at a UTF-8 character boundary, with an ellipsis when cut.
std::string shortened(const std::string& data, std::size_t bytes) {
  if (data.size() <= bytes) return data;
  std::size_t end = bytes;
  while (end > 0 && (static_cast<unsigned char>(data[end]) & 0xC0) == 0x80) --end;
  return data.substr(0, end) + "…";
}

}  // namespace

std::string NodeConsole::sample() {
  const TimePoint now = clock_.now();
  const double elapsed =
      previous_at_ == TimePoint{} ? 0 : std::chrono::duration<double>(now - previous_at_).count();
  previous_at_ = now;
  const std::uint64_t head = store_.next_position();
  const eventlog::StoreStats stats = store_.stats();
  auto per_second = [&](std::uint64_t value, std::uint64_t before) -> json {
    if (elapsed <= 0 || value < before) return nullptr;
    return static_cast<double>(value - before) / elapsed;
  };
  json store = {{"data_dir", config_.data_dir},
                {"durability", durability_name(config_.store.durability)},
                {"head", head},
                {"subscribers", subscriptions_.size()},
                {"events_per_s", per_second(head, previous_head_)},
                {"appends_per_s", per_second(stats.appends, previous_stats_.appends)},
                {"syncs_per_s", per_second(stats.syncs, previous_stats_.syncs)}};
  json tail = json::array();
  // The latest events, only those new since the last sample.
  const std::uint64_t from = std::max(previous_head_, head > kTailEvents ? head - kTailEvents : 0);
  if (head > from) {
    if (auto events = store_.read_all(from, kTailEvents)) {
      for (const auto& e : *events) {
        tail.push_back({{"position", e.position},
                        {"stream", e.stream},
                        {"version", e.version},
                        {"type", e.type},
                        {"t", e.timestamp_ns / 1'000'000},
                        {"data", shortened(e.data, kTailDataBytes)}});
      }
    }
  }
  previous_head_ = head;
  previous_stats_ = stats;

  json groups = json::array();
  std::map<std::string, std::uint64_t> acked;
  for (const auto& group : groups_.list()) {
    const auto& s = group.stats;
    json members = json::array();
    for (const auto& m : s.members) members.push_back(m.name);
    auto before = previous_acked_.find(group.options.name);
    groups.push_back(
        {{"name", group.options.name},
         {"members", members},
         {"lag", s.lag},
         {"checkpoint", s.checkpoint},
         {"in_flight", s.in_flight},
         {"parked", s.parked},
         {"acked_per_s",
          before == previous_acked_.end() ? json(nullptr) : per_second(s.acked, before->second)}});
    acked[group.options.name] = s.acked;
  }
  previous_acked_ = std::move(acked);

  json projections = json::array();
  for (const auto& p : projections_.list()) {
    const ProjectionReport& r = p.report;
    projections.push_back(
        {{"name", r.name},
         {"position", r.position},
         {"lag", head > r.position ? head - r.position : 0},
         {"applied", r.applied},
         {"skipped", r.skipped},
         {"parked", r.parked},
         {"live", r.live},
         {"paused", r.paused},
         {"error", r.error.empty() ? json(nullptr) : json(r.error)},
         {"state", r.state.empty() ? json(nullptr) : json::parse(r.state, nullptr, false)},
         {"age_ms", std::chrono::duration_cast<std::chrono::milliseconds>(p.age).count()},
         {"stale", projection_stale(p)}});
  }
  json out{{"t", clock_.unix_now_ns() / 1'000'000},
           {"kind", "node"},
           {"store", store},
           {"groups", groups},
           {"projections", projections},
           {"tail", tail}};
  if (cluster_status_) out["cluster"] = json::parse(cluster_status_(), nullptr, false);
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string NodeConsole::first_paint() const {
  using console::escape_html;
  const std::uint64_t head = store_.next_position();
  std::string html =
      "<nav class=kv><a href=/metrics>metrics</a></nav><section id=store><h2>store</h2>";
  html += "<div class=kv><span>data dir " + escape_html(config_.data_dir) +
          "</span><span>head position " + std::to_string(head) + "</span><span>durability " +
          durability_name(config_.store.durability) + "</span><span>subscribers " +
          std::to_string(subscriptions_.size()) + "</span></div></section>";
  html +=
      "<section id=groups><h2>consumer groups</h2><table><tr><th>group<th>members<th>lag"
      "<th>in flight<th>parked</tr>";
  for (const auto& group : groups_.list()) {
    std::string members;
    for (const auto& m : group.stats.members) members += escape_html(m.name) + " ";
    html += "<tr data-group=\"" + escape_html(group.options.name) + "\" data-lag=\"" +
            std::to_string(group.stats.lag) + "\"><td>" + escape_html(group.options.name) + "<td>" +
            members + "<td>" + std::to_string(group.stats.lag) + "<td>" +
            std::to_string(group.stats.in_flight) + "<td>" + std::to_string(group.stats.parked) +
            "</tr>";
  }
  html +=
      "</table></section><section id=projections><h2>projections</h2><table><tr>"
      "<th>projection<th>position<th>lag<th>state</tr>";
  for (const auto& p : projections_.list()) {
    const ProjectionReport& r = p.report;
    const std::uint64_t lag = head > r.position ? head - r.position : 0;
    html += "<tr data-projection=\"" + escape_html(r.name) + "\" data-lag=\"" +
            std::to_string(lag) + "\"><td>" + escape_html(r.name) + "<td>" +
            std::to_string(r.position) + "<td>" + std::to_string(lag) + "<td><code>" +
            escape_html(r.state.empty() ? "null" : r.state) + "</code></tr>";
  }
  html +=
      "</table></section><section id=tail><h2>$all, latest events</h2><table><tr>"
      "<th>position<th>stream<th>version<th>type<th>data</tr>";
  if (auto events = store_.read_all(head > kTailEvents ? head - kTailEvents : 0, kTailEvents)) {
    for (auto it = events->rbegin(); it != events->rend(); ++it) {
      html += "<tr data-position=\"" + std::to_string(it->position) + "\"><td>" +
              std::to_string(it->position) + "<td>" + escape_html(it->stream) + "<td>" +
              std::to_string(it->version) + "<td>" + escape_html(it->type) + "<td><code>" +
              escape_html(shortened(it->data, kTailDataBytes)) + "</code></tr>";
    }
  }
  return html + "</table></section>";
}

http::Response NodeConsole::streams(const http::Request& request) const {
  const std::string prefix = request.param("prefix").value_or("");
  std::size_t limit = 50;
  if (auto text = request.param("limit")) {
    auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), limit);
    if (ec != std::errc() || end != text->data() + text->size() || limit == 0) {
      return http::Response::json(
          400, R"({"error":"invalid_argument","message":"?limit must be a positive integer"})"
               "\n");
    }
  }
  auto listed = store_.list_streams(prefix, std::min(limit, kMaxListedStreams));
  json streams = json::array();
  for (const auto& s : listed.streams)
    streams.push_back({{"name", s.name}, {"events", s.version + 1}});
  return http::Response::json(200, json{{"streams", streams}, {"more", listed.more}}.dump() + "\n");
}

}  // namespace keel::node

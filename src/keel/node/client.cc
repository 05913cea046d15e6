#include "keel/node/client.h"

#include <atomic>
#include <cstdio>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "keel/core/hash.h"
#include "keel/core/text.h"
#include "keel/http/client.h"
#include "keel/node/api.h"

namespace keel {

using Json = nlohmann::json;
using eventlog::RecordedEvent;

namespace {

// "2026-12-03T15:39:36.920196092Z" → Unix ns (UTC only, as the node writes it).
std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  int year, month, day, hour, minute, second;
  char rest[32] = {};
  if (text.size() < 20 || text.size() > 40 ||
      std::sscanf(std::string(text).c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%31s", &year, &month, &day,
                  &hour, &minute, &second, rest) < 6) {
    return std::nullopt;
  }
  // Days from the civil date (Howard Hinnant's algorithm).
  const int y = year - (month <= 2);
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * static_cast<unsigned>(month + (month > 2 ? -3 : 9)) + 2) / 5 +
                       static_cast<unsigned>(day) - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = static_cast<std::int64_t>(era) * 146097 + doe - 719468;
  std::int64_t ns = ((days * 24 + hour) * 60 + minute) * 60 + second;
  ns *= 1'000'000'000;
  std::string_view fraction = rest;
  if (!fraction.empty() && fraction.front() == '.') {
    std::int64_t scale = 100'000'000;
    for (std::size_t i = 1; i < fraction.size() && fraction[i] >= '0' && fraction[i] <= '9';
         ++i, scale /= 10) {
      ns += (fraction[i] - '0') * scale;
    }
  }
  return ns;
}

// The node's {"error", "message"} as an Error with the library's code where there is one.
Error node_error(unsigned status, const std::string& body) {
  auto json = Json::parse(body, nullptr, false);
  if (!json.is_object() || !json.contains("error")) {
    return Error(node::errc::internal,
                 "the node answered " + std::to_string(status) + ": " + body.substr(0, 200));
  }
  const std::string code = json["error"].is_string() ? json["error"].get<std::string>() : "";
  const std::string message = json.value("message", code);
  if (code == "wrong_expected_version") {
    Error error(eventlog::errc::wrong_expected_version, message);
    if (json.contains("actual_version") && json["actual_version"].is_number_integer()) {
      error.with_detail(json["actual_version"].get<std::int64_t>());
    }
    return error;
  }
  if (code == "duplicate_event_id") return Error(eventlog::errc::duplicate_event_id, message);
  if (code == "stream_deleted") return Error(eventlog::errc::stream_deleted, message);
  if (code == "disk_full") return Error(eventlog::errc::disk_full, message);
  for (int e = static_cast<int>(node::errc::bad_json); e <= static_cast<int>(node::errc::internal);
       ++e) {
    if (node::code_string(static_cast<node::errc>(e)) == code) {
      return Error(static_cast<node::errc>(e), message);
    }
  }
  return Error(node::errc::internal, code + ": " + message);
}

std::string encode_path_segment(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '~' || (c == '.' && text != "." && text != "..")) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string filter_query(const pubsub::Filter& filter) {
  std::string out;
  auto add = [&](std::string_view key, const std::vector<std::string>& values) {
    for (const auto& value : values) {
      out.append("&").append(key).append("=").append(encode_path_segment(value));
    }
  };
  add("category", filter.categories);
  add("type", filter.event_types);
  add("prefix", filter.stream_prefixes);
  if (filter.include_system) out.append("&system=true");
  return out;
}

Result<ReadPage> read_page(const std::string& body) {
  auto json = Json::parse(body, nullptr, false);
  if (!json.is_object() || !json["events"].is_array()) {
    return Error(node::errc::internal, "the node's page is not {\"events\": [...]}");
  }
  ReadPage page;
  for (const auto& event : json["events"]) {
    auto decoded = event_from_json(event.dump());
    if (!decoded) return decoded.error();
    page.events.push_back(std::move(*decoded));
  }
  if (json["next"].is_object()) page.next = json["next"]["from"].get<std::uint64_t>();
  return page;
}

SteadyClock& default_clock() {
  static SteadyClock clock;
  return clock;
}

}  // namespace

Result<RecordedEvent> event_from_json(std::string_view text) {
  auto json = Json::parse(text, nullptr, false);
  auto bad = [&](std::string_view what) {
    return Error(node::errc::internal, "an event from the node " + std::string(what));
  };
  if (!json.is_object()) return bad("is not a JSON object");
  RecordedEvent event;
  try {
    auto id = Uuid::parse(json.at("id").get<std::string>());
    if (!id) return bad("has a bad id");
    event.id = *id;
    event.stream = json.at("stream").get<std::string>();
    event.type = json.at("type").get<std::string>();
    event.version = json.at("version").get<std::uint64_t>();
    event.position = json.at("position").get<std::uint64_t>();
    auto timestamp = parse_rfc3339(json.at("timestamp").get<std::string>());
    if (!timestamp) return bad("has a bad timestamp");
    event.timestamp_ns = *timestamp;
    const std::string format = json.value("data_format", "json");
    if (format == "json") {
      event.data = json.at("data").dump();
    } else if (format == "text") {
      event.data = json.at("data").get<std::string>();
    } else {
      auto bytes = base64_decode(json.at("data").get<std::string>());
      if (!bytes) return bad("has bad base64 data");
      event.data = std::move(*bytes);
    }
    if (json.contains("metadata") && !json["metadata"].is_null()) {
      event.metadata = json["metadata"].dump();
    }
  } catch (const Json::exception& e) {
    return bad(std::string("lacks a field: ") + e.what());
  }
  return event;
}

struct NodeClient::Impl {
  NodeClientOptions options;
  http::Url url;
  std::unique_ptr<http::Connection> connection;
  std::mutex mutex;  // guards `connection` and `others` for cancel()
  // A cluster's other nodes, by URL, as redirects named them (at most kMaxNodes).
  static constexpr std::size_t kMaxNodes = 64;
  static constexpr int kMaxRedirects = 8;
  std::map<std::string, std::unique_ptr<http::Connection>> others;
  // Which node serves each slot, as 421s said (empty: ask `url`); sized by the map's slot count.
  std::vector<std::string> slot_urls;
  std::uint64_t map_epoch = 0;
  std::atomic<std::uint64_t> redirects{0};  // read by redirects_followed() from any thread
  Clock* clock = nullptr;
  std::atomic<bool> cancelled{false};
  // Sent with every poll: a member name polled from a new client (a restarted process) gets
  // what the old one held redelivered at once.
  const std::string session = Uuid::random_v4().to_string();

  // The keep-alive connection to `base` (empty: the first node, `url`), opened when needed.
  Result<http::Connection*> open(const std::string& base = "") {
    const bool first = base.empty() || base == url.text;
    if (cancelled) return Error(http::errc::cancelled, (first ? url.text : base) + ": cancelled");
    std::lock_guard lock(mutex);
    if (!first && others.size() >= kMaxNodes && !others.contains(base)) others.clear();
    std::unique_ptr<http::Connection>& slot = first ? connection : others[base];
    if (!slot || !slot->usable()) {
      http::Url target = url;
      if (!first) {
        auto parsed = http::parse_url(base);
        if (!parsed) return parsed.error();
        target = *parsed;
      }
      auto opened = http::Connection::open(target, options.timeout);
      if (!opened) return opened.error();
      slot = std::move(*opened);
    }
    return slot.get();
  }

  // The node a stream's requests go to: the slot's owner when a redirect named it.
  std::string node_for(std::string_view stream) const {
    if (slot_urls.empty()) return {};
    return slot_urls[hash64(stream) % slot_urls.size()];
  }

  // One call about `stream`, following the cluster: a 421 `wrong_node` names the slot's owner
  // (remembered for the slot, and the call sent there), a 503 `slot_moving` is retried after
  // the pause it asks for, all within the client's timeout.
  Result<http::Reply> call_stream(std::string_view stream, std::string_view method,
                                  const std::string& target, const std::string& body,
                                  Duration timeout) {
    const TimePoint deadline = clock->now() + timeout;
    for (int redirect = 0;;) {
      const std::string base = node_for(stream);
      auto reply = call(method, target, body, timeout, base);
      if (!reply) {
        // The remembered owner is gone: ask the first node again, which knows the map.
        if (!base.empty() && reply.error().code() != http::errc::cancelled) {
          forget(base);
          if (++redirect <= kMaxRedirects) continue;
        }
        return reply;
      }
      if (reply->status == 421) {
        if (follow(reply->body, deadline, redirect)) continue;
        return reply;
      }
      if (reply->status == 503 && clock->now() < deadline) {
        auto json = Json::parse(reply->body, nullptr, false);
        if (json.is_object() && json.value("error", "") == "slot_moving") {
          const auto pause = std::chrono::milliseconds(json.value("retry_after_ms", 50));
          sleep_until(*clock, std::min<TimePoint>(deadline, clock->now() + pause));
          continue;
        }
      }
      return reply;
    }
  }

  // Whether to send a request the node answered 421 again: to the owner it names, or, when the
  // node's map is older than one this client has seen (its watch has not caught up, and it
  // may send the client back where it came from), to the same place after a moment.
  bool follow(const std::string& body, TimePoint deadline, int& hops) {
    auto json = Json::parse(body, nullptr, false);
    if (!json.is_object() || !json["owner_url"].is_string()) return false;
    if (json.value("epoch", std::uint64_t{0}) < map_epoch) {
      if (clock->now() >= deadline) return false;
      sleep_until(*clock, std::min<TimePoint>(deadline, clock->now() + 5ms));
      return true;
    }
    if (++hops > kMaxRedirects) return false;
    learn(json);
    return true;
  }

  // What a 421 says: the slot's owner and the map's epoch.
  void learn(const Json& redirect) {
    ++redirects;
    const std::uint64_t slot_count = redirect.value("slot_count", std::uint64_t{0});
    const std::uint64_t slot = redirect.value("slot", std::uint64_t{0});
    const std::uint64_t epoch = redirect.value("epoch", std::uint64_t{0});
    if (slot_count == 0 || slot_count > (1u << 20) || slot >= slot_count) return;
    if (slot_urls.size() != slot_count) slot_urls.assign(slot_count, "");
    if (epoch > map_epoch) map_epoch = epoch;
    std::string owner = redirect["owner_url"].get<std::string>();
    slot_urls[slot] = owner == url.text ? "" : std::move(owner);
  }

  void forget(const std::string& base) {
    for (auto& owner : slot_urls) {
      if (owner == base) owner.clear();
    }
  }

  // One call; a pooled connection the node closed meanwhile is tried once more on a new one.
  Result<http::Reply> call(std::string_view method, const std::string& target,
                           const std::string& body, Duration timeout,
                           const std::string& base = "") {
    for (int attempt = 0;; ++attempt) {
      auto opened = open(base);
      if (!opened) return opened.error();
      auto response = (*opened)->request(method, target, body, timeout);
      if (response || attempt > 0 || response.error().code() != http::errc::closed) {
        return response;
      }
    }
  }

  // The answer's body when its status is `expected`, else the node's error.
  // A call about `stream` goes to its slot's owner (call_stream()).
  Result<std::string> expect(std::string_view method, const std::string& target,
                             const std::string& body, unsigned expected,
                             Duration extra = Duration::zero(), std::string_view stream = {}) {
    auto response = stream.empty()
                        ? call(method, target, body, options.timeout + extra)
                        : call_stream(stream, method, target, body, options.timeout + extra);
    if (!response) return response.error();
    if (response->status != expected) return node_error(response->status, response->body);
    return std::move(response->body);
  }
};

NodeClient::NodeClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NodeClient::~NodeClient() = default;

Result<std::unique_ptr<NodeClient>> NodeClient::connect(NodeClientOptions options) {
  auto impl = std::make_unique<Impl>();
  auto url = http::parse_url(options.url);
  if (!url) return url.error();
  impl->url = *url;
  impl->options = std::move(options);
  impl->clock = impl->options.clock != nullptr ? impl->options.clock : &default_clock();
  if (auto opened = impl->open(); !opened) return opened.error();
  return std::unique_ptr<NodeClient>(new NodeClient(std::move(impl)));
}

const std::string& NodeClient::url() const { return impl_->url.text; }

void NodeClient::cancel() {
  impl_->cancelled = true;
  std::lock_guard lock(impl_->mutex);
  if (impl_->connection) impl_->connection->cancel();
  for (auto& [base, connection] : impl_->others) {
    if (connection) connection->cancel();
  }
}

std::uint64_t NodeClient::redirects_followed() const { return impl_->redirects; }

Result<std::string> NodeClient::cluster() { return impl_->expect("GET", "/v1/cluster", "", 200); }

Result<std::string> NodeClient::change_cluster(std::string_view action, std::string_view body) {
  return impl_->expect("POST", "/v1/cluster/" + std::string(action), std::string(body), 200);
}

Result<eventlog::AppendResult> NodeClient::append(std::string_view stream,
                                                  eventlog::ExpectedVersion expected,
                                                  std::span<const eventlog::EventData> events) {
  Json body = Json::object();
  switch (expected.kind()) {
    case eventlog::ExpectedVersion::Kind::kAny:
      body["expected_version"] = "any";
      break;
    case eventlog::ExpectedVersion::Kind::kNoStream:
      body["expected_version"] = "no_stream";
      break;
    case eventlog::ExpectedVersion::Kind::kStreamExists:
      body["expected_version"] = "stream_exists";
      break;
    case eventlog::ExpectedVersion::Kind::kExact:
      body["expected_version"] = expected.version();
      break;
  }
  Json list = Json::array();
  for (const auto& event : events) {
    Json item = {{"id", event.id.to_string()}, {"type", event.type}};
    // JSON data travels as JSON, anything else as a string (the node stores it as text).
    auto data = Json::parse(event.data, nullptr, false);
    item["data"] = data.is_discarded() ? Json(event.data) : data;
    if (!event.metadata.empty()) {
      auto metadata = Json::parse(event.metadata, nullptr, false);
      if (metadata.is_discarded() || !metadata.is_object()) {
        return Error(node::errc::invalid_argument, "an event's metadata must be a JSON object");
      }
      item["metadata"] = metadata;
    }
    list.push_back(std::move(item));
  }
  body["events"] = std::move(list);
  auto answer = impl_->expect("POST", "/v1/streams/" + encode_path_segment(stream),
                              body.dump(-1, ' ', false, Json::error_handler_t::replace), 200,
                              Duration::zero(), stream);
  if (!answer) return answer.error();
  auto json = Json::parse(*answer, nullptr, false);
  eventlog::AppendResult result;
  try {
    result.first_version = json.at("first_version");
    result.last_version = json.at("last_version");
    result.first_position = json.at("first_position");
    result.last_position = json.at("last_position");
    result.duplicate = json.at("duplicate");
  } catch (const Json::exception&) {
    return Error(node::errc::internal, "the node's append result is malformed: " + *answer);
  }
  return result;
}

Result<ReadPage> NodeClient::read_stream(std::string_view stream, std::uint64_t from,
                                         std::size_t limit, eventlog::Direction direction) {
  std::string target = "/v1/streams/" + encode_path_segment(stream) +
                       "?limit=" + std::to_string(limit) +
                       "&from=" + (from == node::kEnd ? std::string("end") : std::to_string(from));
  if (direction == eventlog::Direction::kBackward) target += "&direction=backwards";
  auto answer = impl_->expect("GET", target, "", 200, Duration::zero(), stream);
  if (!answer) return answer.error();
  return read_page(*answer);
}

Result<ReadPage> NodeClient::read_all(std::uint64_t from, std::size_t limit,
                                      const pubsub::Filter& filter, eventlog::Direction direction) {
  std::string target = "/v1/all?limit=" + std::to_string(limit) +
                       "&from=" + (from == node::kEnd ? std::string("end") : std::to_string(from)) +
                       filter_query(filter);
  if (direction == eventlog::Direction::kBackward) target += "&direction=backwards";
  auto answer = impl_->expect("GET", target, "", 200);
  if (!answer) return answer.error();
  return read_page(*answer);
}

Result<std::uint64_t> NodeClient::next_position() {
  // The last event of the whole log, system streams included.
  auto last = read_all(node::kEnd, 1, {.include_system = true}, eventlog::Direction::kBackward);
  if (!last) return last.error();
  return last->events.empty() ? 0 : last->events.back().position + 1;
}

Status NodeClient::subscribe(std::string_view stream, std::uint64_t from,
                             const pubsub::Filter& filter,
                             const std::function<bool(const RecordedEvent&)>& on_event) {
  // A stream that moves to another node of a cluster ends with `moved`: the subscription goes
  // on at the new owner from the next version.
  for (;;) {
    auto moved = subscribe_once(stream, from, filter, on_event);
    if (!moved) return moved.error();
    if (!*moved) return {};
    from = **moved;
  }
}

Result<std::optional<std::uint64_t>> NodeClient::subscribe_once(
    std::string_view stream, std::uint64_t from, const pubsub::Filter& filter,
    const std::function<bool(const RecordedEvent&)>& on_event) {
  const std::string target =
      stream.empty() ? "/v1/all/subscribe?from=" + std::to_string(from) + filter_query(filter)
                     : "/v1/streams/" + encode_path_segment(stream) +
                           "/subscribe?from=" + std::to_string(from);
  // Its own connection: the stream holds it until it ends. A stream's subscription goes to
  // its slot's owner, following 421s as call_stream() does.
  http::Connection* connection = nullptr;
  const TimePoint deadline = impl_->clock->now() + impl_->options.timeout;
  for (int hops = 0;;) {
    if (impl_->cancelled) return Error(http::errc::cancelled, impl_->url.text + ": cancelled");
    http::Url url = impl_->url;
    if (const std::string base = stream.empty() ? "" : impl_->node_for(stream); !base.empty()) {
      auto parsed = http::parse_url(base);
      if (!parsed) return parsed.error();
      url = *parsed;
    }
    auto opened = http::Connection::open(url, impl_->options.timeout);
    if (!opened) return opened.error();
    std::unique_ptr<http::Connection> own = std::move(*opened);
    connection = own.get();
    {
      std::lock_guard lock(impl_->mutex);
      std::swap(impl_->connection, own);  // cancel() reaches it
      // A cancel() between the check above and here cancelled the connection before this one.
      if (impl_->cancelled) return Error(http::errc::cancelled, url.text + ": cancelled");
    }
    auto status = connection->start_stream("GET", target, "", {{"accept", "text/event-stream"}},
                                           impl_->options.timeout);
    if (!status) return status.error();
    if (*status == 200) break;
    std::string body;
    while (true) {
      auto more = connection->read_some(body);
      if (!more || !*more || body.size() > 65536) break;
    }
    if (*status == 421 && impl_->follow(body, deadline, hops)) continue;
    return node_error(*status, body);
  }
  std::string text;
  std::string event_name, data;
  for (;;) {
    auto more = connection->read_some(text, impl_->options.idle_timeout);
    if (!more) return more.error();
    std::size_t end;
    while ((end = text.find('\n')) != std::string::npos) {
      std::string line = text.substr(0, end);
      text.erase(0, end + 1);
      if (line.empty()) {  // the end of a frame
        if (event_name == "moved" && !stream.empty()) {
          auto json = Json::parse(data, nullptr, false);
          if (json.is_object() && json["owner_url"].is_string()) {
            impl_->learn(json);
            if (json["last_id"].is_number_unsigned()) {
              return std::optional<std::uint64_t>(json["last_id"].get<std::uint64_t>() + 1);
            }
            return std::optional<std::uint64_t>(from);
          }
        }
        if (event_name == "shutdown" || event_name == "dropped" || event_name == "error" ||
            event_name == "moved") {
          return Error(node::errc::unavailable,
                       "the node ended the subscription (" + event_name + "): " + data);
        }
        if (!data.empty()) {
          auto event = event_from_json(data);
          if (!event) return event.error();
          if (!on_event(*event)) return std::optional<std::uint64_t>();
        }
        event_name.clear();
        data.clear();
      } else if (line.rfind("data: ", 0) == 0) {
        if (!data.empty()) data.push_back('\n');
        data.append(line, 6);
      } else if (line.rfind("event: ", 0) == 0) {
        event_name = line.substr(7);
      }
    }
    if (!*more) return Error(node::errc::unavailable, "the node closed the subscription");
  }
}

Result<std::string> NodeClient::create_group(std::string_view group, std::string_view definition) {
  return impl_->expect("PUT", "/v1/groups/" + encode_path_segment(group), std::string(definition),
                       200);
}

Result<std::string> NodeClient::group(std::string_view group) {
  return impl_->expect("GET", "/v1/groups/" + encode_path_segment(group), "", 200);
}

Result<std::string> NodeClient::groups() { return impl_->expect("GET", "/v1/groups", "", 200); }

Status NodeClient::delete_group(std::string_view group) {
  auto answer = impl_->expect("DELETE", "/v1/groups/" + encode_path_segment(group), "", 204);
  if (!answer) return answer.error();
  return {};
}

Result<std::vector<pubsub::Delivery>> NodeClient::poll(std::string_view group,
                                                       std::string_view member, std::size_t max,
                                                       Duration wait) {
  Json body = {{"member", member},
               {"max", max},
               {"wait_ms", std::chrono::duration_cast<std::chrono::milliseconds>(wait).count()},
               {"session", impl_->session}};
  auto answer = impl_->expect("POST", "/v1/groups/" + encode_path_segment(group) + "/poll",
                              body.dump(), 200, wait);
  if (!answer) return answer.error();
  auto json = Json::parse(*answer, nullptr, false);
  std::vector<pubsub::Delivery> out;
  if (!json.is_object() || !json["deliveries"].is_array()) {
    return Error(node::errc::internal, "the node's deliveries are malformed");
  }
  for (const auto& item : json["deliveries"]) {
    auto event = event_from_json(item["event"].dump());
    if (!event) return event.error();
    pubsub::Delivery delivery;
    delivery.id = item.value("id", std::uint64_t{0});
    delivery.attempt = item.value("attempt", 1u);
    delivery.replayed = item.value("replayed", false);
    delivery.event = std::move(*event);
    out.push_back(std::move(delivery));
  }
  return out;
}

namespace {

Status settled(const Result<std::string>& answer) {
  if (!answer) return answer.error();
  auto json = Json::parse(*answer, nullptr, false);
  if (json.is_object() && json["failed"].is_array() && !json["failed"].empty()) {
    const auto& first = json["failed"][0];
    return Error(node::errc::invalid_argument, "delivery " + first.value("id", Json(0)).dump() +
                                                   ": " +
                                                   first.value("message", std::string("refused")));
  }
  return {};
}

}  // namespace

Status NodeClient::ack(std::string_view group, std::string_view member,
                       std::span<const std::uint64_t> ids) {
  Json body = {{"member", member}, {"ids", std::vector<std::uint64_t>(ids.begin(), ids.end())}};
  return settled(
      impl_->expect("POST", "/v1/groups/" + encode_path_segment(group) + "/ack", body.dump(), 200));
}

Status NodeClient::nack(std::string_view group, std::string_view member,
                        std::span<const std::uint64_t> ids, pubsub::NackAction action,
                        std::string_view reason) {
  const char* name = action == pubsub::NackAction::kRetry  ? "retry"
                     : action == pubsub::NackAction::kPark ? "park"
                                                           : "skip";
  Json body = {{"member", member},
               {"ids", std::vector<std::uint64_t>(ids.begin(), ids.end())},
               {"action", name},
               {"reason", reason}};
  return settled(impl_->expect("POST", "/v1/groups/" + encode_path_segment(group) + "/nack",
                               body.dump(), 200));
}

Result<std::uint64_t> NodeClient::replay_parked(std::string_view group) {
  auto answer =
      impl_->expect("POST", "/v1/groups/" + encode_path_segment(group) + "/parked/replay", "", 200);
  if (!answer) return answer.error();
  auto json = Json::parse(*answer, nullptr, false);
  return json.value("replayed", std::uint64_t{0});
}

Status NodeClient::report_projection(const node::ProjectionReport& report) {
  Json body = {{"position", report.position}, {"applied", report.applied},
               {"skipped", report.skipped},   {"parked", report.parked},
               {"live", report.live},         {"paused", report.paused}};
  body["error"] = report.error.empty() ? Json(nullptr) : Json(report.error);
  if (!report.state.empty()) {
    Json state = Json::parse(report.state, nullptr, false);
    if (!state.is_object()) {
      return Error(node::errc::invalid_argument,
                   "the state of projection " + report.name + " is not a JSON object");
    }
    body["state"] = std::move(state);
  }
  if (report.interval > Duration::zero()) {
    body["interval_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(report.interval).count();
  }
  auto answer = impl_->expect("PUT", "/v1/projections/" + encode_path_segment(report.name),
                              body.dump(-1, ' ', false, Json::error_handler_t::replace), 200);
  if (!answer) return answer.error();
  return {};
}

Result<std::string> NodeClient::projections() {
  return impl_->expect("GET", "/v1/projections", "", 200);
}

Status NodeClient::delete_projection(std::string_view projection) {
  auto answer =
      impl_->expect("DELETE", "/v1/projections/" + encode_path_segment(projection), "", 204);
  if (!answer) return answer.error();
  return {};
}

}  // namespace keel

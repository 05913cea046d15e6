#include "keel/node/cluster.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "keel/coord/etcd_coordinator.h"
#include "keel/core/hash.h"
#include "keel/core/log.h"
#include "keel/core/text.h"
#include "keel/http/client.h"
#include "keel/node/api.h"
#include "keel/node/request.h"
#include "keel/node/text_codec.h"

namespace keel::node {
namespace {

using Json = nlohmann::json;
using detail::quote_for_message;

constexpr std::size_t kExportMaxEvents = 1000;
constexpr std::uint64_t kExportScanBudget = 1u << 16;  // positions one export page looks at
constexpr Duration kImportBudget = 10s;  // one import call, then the caller asks again
constexpr Duration kNodeCallTimeout = 30s;
constexpr Duration kRefreshEvery = 50ms;    // a client's newer epoch reads etcd at most this often
constexpr std::int64_t kRetryAfterMs = 50;  // what a write to a fenced slot is told

http::Response error(unsigned status, std::string code, std::string message,
                     Json extra = Json::object()) {
  extra["error"] = std::move(code);
  extra["message"] = std::move(message);
  return http::Response::json(status, extra.dump(-1, ' ', false, Json::error_handler_t::replace));
}

std::uint64_t slots_in(const std::vector<shard::SlotMove>& moves) {
  std::uint64_t n = 0;
  for (const auto& move : moves) n += move.last_slot - move.first_slot + 1;
  return n;
}

// Applies one stream's events from the source, in version order: versions the target has are
// skipped (an import repeated after a crash, or copies left from an earlier move of the slot);
// the rest must follow the stream's version without a gap.
Status apply_stream(eventlog::EventStore& store, const std::string& stream,
                    std::vector<std::pair<std::uint64_t, eventlog::EventData>>& events) {
  const std::optional<std::uint64_t> current = store.stream_version(stream);
  const std::uint64_t next = current ? *current + 1 : 0;
  std::vector<eventlog::EventData> fresh;
  std::uint64_t expect = next;
  for (auto& [version, data] : events) {
    if (version < next) continue;
    if (version != expect) {
      return Error(errc::conflict, "the stream " + quote_for_message(stream) + " is at version " +
                                       (current ? std::to_string(*current) : "none") +
                                       " here and the source sent version " +
                                       std::to_string(version) + " next: a gap");
    }
    fresh.push_back(std::move(data));
    ++expect;
  }
  if (fresh.empty()) return {};
  auto appended = store.append(
      stream,
      current ? eventlog::ExpectedVersion::exact(*current) : eventlog::ExpectedVersion::no_stream(),
      fresh);
  if (!appended) return appended.error();
  return {};
}

}  // namespace

WriteGate::Pass WriteGate::enter() {
  for (;;) {
    const std::uint64_t generation = generation_.load();
    held_[generation & 1].fetch_add(1);
    if (generation_.load() == generation) return Pass(this, generation);
    held_[generation & 1].fetch_sub(1);  // a drain began: again
  }
}

void WriteGate::drain() {
  std::lock_guard lock(drain_mutex_);
  const std::uint64_t old = generation_.fetch_add(1);
  // A pass is held only while its append is handed to the store: microseconds.
  while (held_[old & 1].load() != 0) std::this_thread::yield();
}

NodeCluster::NodeCluster(const ClusterConfig& config, eventlog::EventStore& store, Clock& clock,
                         metrics::Registry& registry)
    : config_(config), store_(store), clock_(clock) {
  redirects_ = &registry.counter("keel_cluster_redirects_total",
                                 "Requests answered 421 wrong_node: the slot is another node's");
  fenced_ = &registry.counter("keel_cluster_fenced_writes_total",
                              "Writes answered 503 slot_moving: the slot was fenced for a move");
  events_imported_ = &registry.counter("keel_cluster_events_imported_total",
                                       "Events this node copied in as a move's target");
  moves_copied_ = &registry.counter("keel_cluster_imports_total",
                                    "Import calls this node answered as a move's target");
}

NodeCluster::~NodeCluster() { stop(); }

Result<std::unique_ptr<NodeCluster>> NodeCluster::start(const ClusterConfig& config,
                                                        cluster::NodeInfo self,
                                                        eventlog::EventStore& store, Clock& clock,
                                                        metrics::Registry& registry) {
  std::unique_ptr<NodeCluster> node(new NodeCluster(config, store, clock, registry));
  auto etcd = coord::EtcdCoordinator::connect({.endpoints = config.etcd});
  if (!etcd) return Error(etcd.error().code(), "cluster: " + etcd.error().message());
  node->etcd_ = std::move(*etcd);
  cluster::ClusterMember::Options options;
  options.keys.prefix = config.prefix;
  options.self = std::move(self);
  options.lease_ttl = config.lease_ttl;
  options.controller = {.slot_count = config.slot_count,
                        .initial_nodes = config.initial_nodes,
                        .max_slots_per_move = config.max_slots_per_move};
  auto member = cluster::ClusterMember::start(*node->etcd_, clock, std::move(options), *node);
  if (!member) return Error(member.error().code(), "cluster: " + member.error().message());
  node->member_ = std::move(*member);
  NodeCluster& n = *node;
  n.gauges_.push_back(registry.gauge_callback(
      "keel_cluster_map_epoch", "The epoch of the slot map this node follows (0: none yet)", {},
      [&n] {
        auto view = n.member_->view();
        return view->map ? static_cast<double>(view->map->epoch()) : 0.0;
      }));
  n.gauges_.push_back(registry.gauge_callback(
      "keel_cluster_slots_owned", "Slots the map gives this node", {}, [&n] {
        auto view = n.member_->view();
        if (!view->map) return 0.0;
        auto counts = view->map->slots_per_node();
        auto it = counts.find(n.member_->self().id);
        return it == counts.end() ? 0.0 : static_cast<double>(it->second);
      }));
  n.gauges_.push_back(registry.gauge_callback(
      "keel_cluster_controller", "1 while this node is the cluster's controller", {},
      [&n] { return n.member_->is_controller() ? 1.0 : 0.0; }));
  n.gauges_.push_back(
      registry.gauge_callback("keel_cluster_moves_in_progress", "Moves of slots under way (0 or 1)",
                              {}, [&n] { return n.member_->view()->move ? 1.0 : 0.0; }));
  return node;
}

void NodeCluster::stop() {
  if (stopped_) return;
  stopped_ = true;
  stopping_ = true;
  gauges_.clear();
  if (member_) member_->stop();
}

std::optional<http::Response> NodeCluster::route(std::string_view stream, bool write,
                                                 std::string_view client_epoch) {
  cluster::Route route = member_->route(stream);
  if (!client_epoch.empty()) {
    auto epoch = detail::parse_decimal(client_epoch, "Keel-Map-Epoch");
    if (epoch && *epoch > route.epoch) {
      bool refresh = false;
      {
        std::lock_guard lock(mutex_);
        if (clock_.now() - last_refresh_ >= kRefreshEvery) {
          last_refresh_ = clock_.now();
          refresh = true;
        }
      }
      if (refresh && member_->refresh()) route = member_->route(stream);
    }
  }
  auto headers = [&](http::Response response) {
    response.headers.emplace_back("keel-map-epoch", std::to_string(route.epoch));
    response.headers.emplace_back("keel-slot", std::to_string(route.slot));
    return response;
  };
  switch (route.kind) {
    case cluster::Route::Kind::kServe:
      return std::nullopt;
    case cluster::Route::Kind::kFenced: {
      if (!write) return std::nullopt;  // the source has every event until the flip
      fenced_->inc();
      http::Response response = headers(
          error(503, "slot_moving",
                "slot " + std::to_string(route.slot) +
                    " is moving to another node; writes resume within moments (retry)",
                {{"slot", route.slot}, {"epoch", route.epoch}, {"retry_after_ms", kRetryAfterMs}}));
      response.headers.emplace_back("keel-retry-after-ms", std::to_string(kRetryAfterMs));
      response.headers.emplace_back("retry-after", "1");
      return response;
    }
    case cluster::Route::Kind::kRedirect: {
      if (route.owner_api.empty()) {
        return headers(
            error(503, "owner_unavailable",
                  "slot " + std::to_string(route.slot) + " belongs to node " +
                      quote_for_message(route.owner) + ", which is not a member now",
                  {{"slot", route.slot}, {"epoch", route.epoch}, {"owner", route.owner}}));
      }
      redirects_->inc();
      auto view = member_->view();
      http::Response response =
          headers(error(421, "wrong_node",
                        "slot " + std::to_string(route.slot) + " is served by node " +
                            quote_for_message(route.owner) + " at " + route.owner_api,
                        {{"slot", route.slot},
                         {"slot_count", view->map ? view->map->slot_count() : 0},
                         {"epoch", route.epoch},
                         {"owner", route.owner},
                         {"owner_url", route.owner_api}}));
      response.headers.emplace_back("keel-slot-owner", route.owner);
      response.headers.emplace_back("keel-slot-owner-url", route.owner_api);
      return response;
    }
    case cluster::Route::Kind::kNoMap:
      return error(503, "no_map",
                   "the cluster has no slot map yet: the controller writes it once enough nodes "
                   "have joined");
  }
  return std::nullopt;
}

bool NodeCluster::handle(http::Request& request, http::Responder& responder,
                         const RunBlocking& run_blocking) {
  const std::string& path = request.path;
  if (path != "/v1/cluster" && !path.starts_with("/v1/cluster/")) return false;
  auto only = [&](std::string_view method) {
    if (request.method == method) return true;
    http::Response response =
        error(405, "method_not_allowed",
              request.method + " is not allowed on " + path + "; use " + std::string(method));
    response.headers.emplace_back("allow", std::string(method));
    responder.respond(std::move(response));
    return false;
  };
  if (path == "/v1/cluster") {
    if (only("GET")) responder.respond(http::Response::json(200, status_json()));
  } else if (path == "/v1/cluster/export") {
    if (only("GET")) responder.respond(export_page(request));
  } else if (path == "/v1/cluster/import") {
    if (only("POST")) {
      run_blocking(responder,
                   [this, body = request.body](http::Responder& r) { r.respond(import(body)); });
    }
  } else if (path == "/v1/cluster/move" || path == "/v1/cluster/rebalance" ||
             path == "/v1/cluster/drain") {
    if (only("POST")) {
      responder.respond(change_goal(request, std::string_view(path).substr(12)));
    }
  } else {
    responder.respond(error(404, "not_found",
                            "no such route: the cluster's are /v1/cluster, /v1/cluster/move, "
                            "/v1/cluster/rebalance, /v1/cluster/drain, /v1/cluster/export and "
                            "/v1/cluster/import"));
  }
  return true;
}

std::int32_t NodeCluster::kafka_id(std::string_view node_id) {
  return static_cast<std::int32_t>(hash64(node_id) & 0x7fffffff);
}

std::vector<kafka::PartitionOwners::BrokerAddress> NodeCluster::brokers() const {
  std::vector<BrokerAddress> out;
  for (const auto& info : member_->view()->members) {
    if (info.kafka.empty()) continue;
    auto address = http::parse_host_port(info.kafka);
    if (!address) continue;
    out.push_back({kafka_id(info.id), address->host, static_cast<std::int32_t>(address->port)});
  }
  return out;
}

std::int32_t NodeCluster::owner(std::string_view stream) const {
  auto view = member_->view();
  if (!view->map) return -1;
  const std::string& id = view->map->owner(view->map->slot_for(stream));
  const cluster::NodeInfo* info = view->member(id);
  return info == nullptr || info->kafka.empty() ? -1 : kafka_id(id);
}

std::string NodeCluster::status_json() const {
  auto view = member_->view();
  Json out;
  out["self"] = member_->self().id;
  out["revision"] = view->revision;
  out["controller"] = view->controller.empty() ? Json() : Json(view->controller);
  if (member_->is_controller()) out["controller_status"] = member_->controller_status();
  // The fences of the moves this node flipped as controller (docs/api.md, "Cluster").
  std::vector<double> fences = member_->fence_ms();
  if (!fences.empty()) {
    std::sort(fences.begin(), fences.end());
    auto at = [&](double p) {
      return fences[std::min(fences.size() - 1, static_cast<std::size_t>(p * fences.size()))];
    };
    out["fences"] = {{"count", fences.size()},
                     {"p50_ms", at(0.5)},
                     {"p99_ms", at(0.99)},
                     {"max_ms", fences.back()}};
  }
  std::map<std::string, std::uint32_t> counts;
  if (view->map) counts = view->map->slots_per_node();
  Json members = Json::array();
  for (const auto& info : view->members) {
    members.push_back({{"id", info.id},
                       {"api", info.api},
                       {"kafka", info.kafka.empty() ? Json() : Json(info.kafka)},
                       {"admin", info.admin.empty() ? Json() : Json(info.admin)},
                       {"slots", counts.contains(info.id) ? counts.at(info.id) : 0u}});
  }
  out["members"] = std::move(members);
  Json ranges = Json::array();
  if (view->map) {
    const shard::SlotMap& map = *view->map;
    out["epoch"] = map.epoch();
    out["slot_count"] = map.slot_count();
    for (std::uint32_t first = 0; first < map.slot_count();) {
      std::uint32_t last = first;
      while (last + 1 < map.slot_count() && map.owner(last + 1) == map.owner(first)) ++last;
      ranges.push_back({{"first", first}, {"last", last}, {"owner", map.owner(first)}});
      first = last + 1;
    }
    std::uint64_t pending = 0;
    if (view->goal && view->goal->slot_count() == map.slot_count()) {
      if (auto diff = shard::SlotMap::diff(map, *view->goal)) pending = slots_in(*diff);
    }
    out["slots_to_move"] = pending;
  } else {
    out["epoch"] = 0;
    out["slot_count"] = 0;
    out["slots_to_move"] = 0;
  }
  out["ranges"] = std::move(ranges);
  out["move"] = view->move ? Json::parse(view->move->to_json()) : Json();
  // The same as a list, for the console's cluster view.
  out["moves"] = Json::array();
  if (view->move) {
    out["moves"].push_back(
        {{"slots", std::to_string(view->move->first) + "-" + std::to_string(view->move->last)},
         {"from", view->move->from},
         {"to", view->move->to},
         {"step", cluster::phase_name(view->move->phase)}});
  }
  return out.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Result<std::uint64_t> NodeCluster::fence_position(const cluster::Move& move) {
  // Every append that saw the slots unfenced holds a pass until the store has taken it: once
  // the gate is drained, none is still on its way.
  gate_.drain();
  // Appends commit in the order the store took them, so a barrier appended now commits after
  // all of them: the slots' events are all below its position.
  eventlog::EventData barrier{Uuid::random_v4(), "SlotsFenced", move.to_json(), ""};
  auto appended = store_.append_system("$keel-cluster", eventlog::ExpectedVersion::any(),
                                       std::span<const eventlog::EventData>(&barrier, 1));
  if (!appended) return appended.error();
  return appended->last_position;
}

http::Response NodeCluster::export_page(const http::Request& request) {
  // ?epoch&first&last&from&limit, each required.
  std::uint64_t values[5];
  const char* names[5] = {"epoch", "first", "last", "from", "limit"};
  for (int i = 0; i < 5; ++i) {
    auto text = request.param(names[i]);
    if (!text) return error(400, "invalid_argument", "?" + std::string(names[i]) + " is required");
    auto value = detail::parse_decimal(*text, "?" + std::string(names[i]));
    if (!value) return error(400, "invalid_argument", value.error().message());
    values[i] = *value;
  }
  const auto [epoch, first, last, from, limit_asked] = values;
  const bool fenced = request.param("fenced").value_or("false") == "true";
  const std::size_t limit = std::clamp<std::uint64_t>(limit_asked, 1, kExportMaxEvents);
  auto view = member_->view();
  auto is_ours = [&](const cluster::View& v) {
    return v.move && v.move->epoch == epoch && v.move->first == first && v.move->last == last &&
           v.move->from == member_->self().id &&
           (!fenced || v.move->phase == cluster::Move::Phase::kFenced);
  };
  if (!is_ours(*view)) {
    (void)member_->refresh();  // the controller's write may not have reached the watch yet
    view = member_->view();
  }
  if (!view->map || !is_ours(*view)) {
    return error(409, "not_moving",
                 "this node is not handing over " + cluster::slot_span(first, last) + " of epoch " +
                     std::to_string(epoch) + (fenced ? " (fenced)" : "") +
                     " by the cluster state it reads");
  }
  std::uint64_t end = store_.next_position();
  if (fenced) {
    auto fence = fence_position(*view->move);
    if (!fence) return error(503, "unavailable", "fencing: " + fence.error().message());
    end = *fence;
  }
  const shard::SlotMap& map = *view->map;
  Json events = Json::array();
  std::size_t count = 0;
  std::uint64_t position = from;
  std::uint64_t scanned = 0;
  while (count < limit && position < end && scanned < kExportScanBudget) {
    auto page = store_.read_all(position, std::min<std::uint64_t>(1000, end - position));
    if (!page) return error(503, "unavailable", "reading the log: " + page.error().message());
    if (page->empty()) {
      position = end;
      break;
    }
    for (const auto& event : *page) {
      if (event.position >= end) {
        position = end;
        break;
      }
      if (count >= limit) break;
      position = event.position + 1;
      ++scanned;
      if (event.stream.starts_with('$')) continue;
      const std::uint32_t slot = map.slot_for(event.stream);
      if (slot < first || slot > last) continue;
      events.push_back({{"id", event.id.to_string()},
                        {"stream", event.stream},
                        {"type", event.type},
                        {"version", event.version},
                        {"data", base64_encode(event.data)},
                        {"metadata", base64_encode(event.metadata)}});
      ++count;
    }
  }
  Json out{{"events", std::move(events)},
           {"next", position},
           {"end", end},
           {"complete", position >= end}};
  return http::Response::json(200, out.dump(-1, ' ', false, Json::error_handler_t::replace));
}

http::Response NodeCluster::import(const std::string& request_body) {
  auto body = Json::parse(request_body, nullptr, false);
  if (!body.is_object()) return error(400, "bad_json", "the import body must be a JSON object");
  std::string source;
  std::uint64_t epoch = 0, first = 0, last = 0;
  bool fenced = false;
  try {
    source = body.at("source").get<std::string>();
    epoch = body.at("epoch").get<std::uint64_t>();
    first = body.at("first").get<std::uint64_t>();
    last = body.at("last").get<std::uint64_t>();
    fenced = body.value("fenced", false);
  } catch (const Json::exception& e) {
    return error(400, "invalid_argument",
                 std::string("the import body needs source, epoch, first and last: ") + e.what());
  }
  auto url = http::parse_url(source);
  if (!url) return error(400, "invalid_argument", "source: " + url.error().message());
  std::lock_guard one_at_a_time(import_mutex_);
  moves_copied_->inc();
  const std::string key = std::to_string(epoch) + " " + std::to_string(first) + " " +
                          std::to_string(last) + " " + source;
  std::uint64_t position = 0;
  {
    std::lock_guard lock(mutex_);
    if (auto it = imported_.find(key); it != imported_.end()) position = it->second;
    if (imported_.size() > 64) imported_.clear();  // old moves' progress: bounded
  }
  auto connection = http::Connection::open(*url, kNodeCallTimeout);
  if (!connection) return error(502, "source_unreachable", connection.error().message());
  const TimePoint deadline = clock_.now() + kImportBudget;
  std::uint64_t copied = 0;
  bool complete = false;
  while (!complete && clock_.now() < deadline) {
    const std::string target =
        "/v1/cluster/export?epoch=" + std::to_string(epoch) + "&first=" + std::to_string(first) +
        "&last=" + std::to_string(last) + "&from=" + std::to_string(position) +
        "&limit=" + std::to_string(kExportMaxEvents) + (fenced ? "&fenced=true" : "");
    auto reply = (*connection)->get(target, kNodeCallTimeout);
    if (!reply) return error(502, "source_unreachable", reply.error().message());
    if (reply->status != 200) {
      return error(502, "source_refused",
                   "the source answered " + std::to_string(reply->status) + ": " +
                       reply->body.substr(0, 300));
    }
    auto page = Json::parse(reply->body, nullptr, false);
    std::vector<std::string> order;
    std::map<std::string, std::vector<std::pair<std::uint64_t, eventlog::EventData>>> streams;
    std::uint64_t next = 0, end = 0;
    try {
      for (const auto& event : page.at("events")) {
        auto id = Uuid::parse(event.at("id").get<std::string>());
        auto data = base64_decode(event.at("data").get<std::string>());
        auto metadata = base64_decode(event.at("metadata").get<std::string>());
        if (!id || !data || !metadata) throw std::runtime_error("an event is malformed");
        const std::string stream = event.at("stream").get<std::string>();
        auto& list = streams[stream];
        if (list.empty()) order.push_back(stream);
        list.emplace_back(event.at("version").get<std::uint64_t>(),
                          eventlog::EventData{*id, event.at("type").get<std::string>(),
                                              std::move(*data), std::move(*metadata)});
      }
      next = page.at("next").get<std::uint64_t>();
      end = page.at("end").get<std::uint64_t>();
    } catch (const std::exception& e) {
      return error(502, "source_refused",
                   std::string("the source's page is malformed: ") + e.what());
    }
    for (const std::string& stream : order) {
      const std::size_t n = streams[stream].size();
      if (auto applied = apply_stream(store_, stream, streams[stream]); !applied) {
        return error(
            409, "conflict",
            "importing " + cluster::slot_span(first, last) + ": " + applied.error().message());
      }
      copied += n;
      events_imported_->inc(static_cast<double>(n));
    }
    position = next;
    complete = position >= end;
    std::lock_guard lock(mutex_);
    imported_[key] = position;
  }
  Json out{{"complete", complete}, {"position", position}, {"events", copied}};
  return http::Response::json(200, out.dump());
}

Status NodeCluster::copy(const cluster::Move& move, const cluster::NodeInfo& source,
                         const cluster::NodeInfo& target, bool until_fenced) {
  auto url = http::parse_url(target.api);
  if (!url) return url.error();
  auto connection = http::Connection::open(*url, kNodeCallTimeout);
  if (!connection) return connection.error();
  const Json body{{"source", source.api}, {"epoch", move.epoch}, {"first", move.first},
                  {"last", move.last},    {"from", move.from},   {"fenced", until_fenced}};
  // Each call copies for up to kImportBudget; a slot with more behind it takes several.
  for (int call = 0; call < 360; ++call) {
    if (stopping_) return Error(errc::unavailable, "this node is stopping");
    auto reply = (*connection)->post("/v1/cluster/import", body.dump(), kNodeCallTimeout);
    if (!reply) return reply.error();
    if (reply->status != 200) {
      return Error(errc::unavailable, "the target " + target.id + " answered " +
                                          std::to_string(reply->status) + ": " +
                                          reply->body.substr(0, 300));
    }
    auto answer = Json::parse(reply->body, nullptr, false);
    if (answer.is_object() && answer.value("complete", false)) return {};
  }
  return Error(errc::unavailable, "the target " + target.id + " has not caught up with " +
                                      cluster::slot_span(move.first, move.last) +
                                      " within an hour");
}

http::Response NodeCluster::change_goal(const http::Request& request, std::string_view action) {
  auto body = Json::parse(request.body.empty() ? std::string("{}") : request.body, nullptr, false);
  if (!body.is_object()) return error(400, "bad_json", "the body must be a JSON object");
  const cluster::Keys keys{config_.prefix};
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto state = cluster::read_state(*etcd_, keys);
    if (!state) return error(503, "unavailable", "reading the cluster: " + state.error().message());
    if (!state->map) {
      return error(409, "no_map", "the cluster has no map yet; nothing to change");
    }
    const shard::SlotMap& map = *state->map;
    shard::SlotMap base =
        state->goal && state->goal->slot_count() == map.slot_count() ? *state->goal : map;
    std::vector<std::string> members;
    for (const auto& info : state->members) members.push_back(info.id);
    Result<shard::SlotMap> next = Error(errc::invalid_argument, "unknown action");
    try {
      if (action == "move") {
        const std::uint64_t first = body.at("first").get<std::uint64_t>();
        const std::uint64_t last = body.value("last", first);
        const std::string to = body.at("to").get<std::string>();
        if (!state->member(to)) {
          return error(400, "invalid_argument",
                       "node " + quote_for_message(to) + " is not a member");
        }
        if (first > last || last >= map.slot_count()) {
          return error(400, "invalid_argument",
                       "the slots must be first <= last < " + std::to_string(map.slot_count()));
        }
        next = base.assign(static_cast<std::uint32_t>(first), static_cast<std::uint32_t>(last), to);
      } else if (action == "rebalance") {
        next = base.rebalance(members, {});
      } else {
        const std::string node = body.at("node").get<std::string>();
        std::erase(members, node);
        if (members.empty()) {
          return error(
              409, "conflict",
              "draining " + quote_for_message(node) + " would leave no node to take its slots");
        }
        next = base.rebalance(members, {});
      }
    } catch (const Json::exception& e) {
      return error(400, "invalid_argument", std::string("the body: ") + e.what());
    }
    if (!next) return error(400, "invalid_argument", next.error().message());
    coord::Transaction transaction;
    transaction.compare.push_back({keys.goal(), coord::Compare::Target::kModRevision,
                                   coord::Compare::Op::kEqual, state->goal_revision, ""});
    transaction.success.push_back(
        {coord::Operation::Kind::kPut, keys.goal(), next->to_json(), 0, false});
    auto written = etcd_->transact(transaction);
    if (!written)
      return error(503, "unavailable", "writing the goal: " + written.error().message());
    if (!written->succeeded) continue;  // another change came first: read again
    auto diff = shard::SlotMap::diff(map, *next);
    // `revision`: GET /v1/cluster on any node shows this goal once its `revision` is as high.
    Json out{{"slots_to_move", diff ? slots_in(*diff) : 0},
             {"epoch", map.epoch()},
             {"revision", written->revision}};
    return http::Response::json(200, out.dump());
  }
  return error(409, "conflict", "the goal kept changing under this request; try again");
}

}  // namespace keel::node

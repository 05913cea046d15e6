#include "keel/node/node.h"

#include <atomic>
#include <nlohmann/json.hpp>
#include <tuple>

#include "keel/console/console.h"
#include "keel/core/log.h"
#include "keel/core/metrics.h"
#include "keel/eventlog/event_store.h"
#include "keel/http/server.h"
#include "keel/kafka/broker.h"
#include "keel/kafka/listener.h"
#include "keel/node/api.h"
#include "keel/node/cluster.h"
#include "keel/node/console.h"
#include "keel/node/groups.h"
#include "keel/node/projections.h"
#include "keel/node/subscriptions.h"
#include "keel/resilience/bulkhead.h"

namespace keel::node {

namespace {

template <class... F>
struct Overloaded : F... {
  using F::operator()...;
};
template <class... F>
Overloaded(F...) -> Overloaded<F...>;

http::Response json(unsigned status, std::string body) {
  return http::Response::json(status, std::move(body));
}

http::Response no_content() {
  http::Response response;
  response.status = 204;
  response.content_type.clear();
  return response;
}

http::Response error_response(const ApiError& error) {
  http::Response response = json(static_cast<unsigned>(error.status), error_json(error));
  if (!error.allow.empty()) response.headers.emplace_back("allow", error.allow);
  return response;
}

http::Response error_response(const Error& error) { return error_response(api_error(error)); }

// The server's own refusals (malformed HTTP, a body over the limit) in the API's error form.
http::Response refusal(unsigned status, std::string_view message) {
  while (!message.empty() && message.back() == '\n') message.remove_suffix(1);
  ApiError error;
  error.status = static_cast<int>(status);
  error.code = status == 413   ? "payload_too_large"
               : status == 431 ? "header_too_large"
               : status == 408 ? "request_timeout"
               : status == 503 ? "unavailable"
               : status == 501 ? "not_implemented"
                               : "bad_request";
  error.message = std::string(message);
  return error_response(error);
}

}  // namespace

struct Node::Impl {
  NodeConfig config;
  Clock& clock;
  metrics::Registry registry;
  std::unique_ptr<eventlog::EventStore> store;
  std::unique_ptr<SubscriptionHub> subscriptions;
  std::unique_ptr<GroupRegistry> groups;
  ProjectionTable projections{clock};  // what projections in other processes report
  // Appends, acks and group changes: blocking on the disk, so off the HTTP workers, and many at
  // once so that they share fsyncs.
  std::unique_ptr<resilience::ThreadPoolBulkhead> appenders;  // deletes, metadata, group writes
  std::atomic<std::uint32_t> appends_waiting{0};              // append_async() not yet answered
  std::unique_ptr<resilience::ThreadPoolBulkhead> pollers;    // consumer-group long polls
  std::unique_ptr<kafka::Broker> kafka;  // the Kafka protocol on the same store
  std::unique_ptr<kafka::Listener> kafka_listener;
  std::string kafka_address;             // host:port as Kafka clients are told
  std::unique_ptr<NodeCluster> cluster;  // when the node is a member of a cluster
  std::unique_ptr<http::Server> api;
  std::unique_ptr<http::Server> admin;
  std::unique_ptr<NodeConsole> console;  // the admin listener's live page
  std::unique_ptr<console::Feed> console_feed;
  std::atomic<bool> ready{false};
  std::atomic<std::uint64_t> max_read_count{1000};
  std::atomic<std::int64_t> max_poll_wait_ms{60000};
  metrics::Counter* requests_rejected = nullptr;
  std::vector<metrics::CallbackRegistration> store_metrics;  // read the store: dropped first
  bool stopped = false;

  Impl(NodeConfig c, Clock& k) : config(std::move(c)), clock(k) {}

  Status start_kafka() {
    if (!config.kafka) return {};
    const KafkaConfig& k = *config.kafka;
    kafka::BrokerOptions options;
    options.default_partitions = static_cast<std::int32_t>(k.default_partitions);
    options.auto_create_topics = k.auto_create_topics;
    options.max_message_bytes = k.max_message_bytes;
    options.groups.initial_rebalance_delay = k.initial_rebalance_delay;
    options.groups.min_session_timeout = k.min_session_timeout;
    kafka = std::make_unique<kafka::Broker>(*store, clock, options, registry);
    auto listener = kafka::Listener::bind(
        {.address = k.listen, .workers = k.workers, .max_request_bytes = k.max_request_bytes},
        *kafka, clock);
    if (!listener) return listener.error();
    kafka_listener = std::move(*listener);
    http::HostPort advertised = k.advertised.value_or(kafka_listener->bound());
    if (advertised.host == "0.0.0.0" || advertised.host == "::") advertised.host = "127.0.0.1";
    if (advertised.port == 0) advertised.port = kafka_listener->bound().port;
    kafka->advertise(advertised.host, advertised.port);
    kafka_address = advertised.to_string();
    return kafka->start();
  }

  // 503 `unavailable` (the client may retry), counted when a bounded queue refused the request.
  static http::Response unavailable(std::string message) {
    ApiError error;
    error.status = 503;
    error.code = "unavailable";
    error.message = std::move(message);
    return error_response(error);
  }
  http::Response refused(std::string message) {
    requests_rejected->inc();
    return unavailable(std::move(message));
  }

  // Runs `work` on `pool`; a full pool is 503 (and the client may retry), never an unbounded
  // queue.
  template <typename Work>
  void offload(resilience::ThreadPoolBulkhead& pool, http::Responder& responder, Work work) {
    auto shared = std::make_shared<http::Responder>(std::move(responder));
    auto admitted = pool.submit([shared, work = std::move(work)]() mutable { work(*shared); });
    if (!admitted) {
      shared->respond(refused("the node has " + std::to_string(pool.config().queue_capacity) + " " +
                              pool.name() + " waiting already; retry later"));
    }
  }

  // The stream a command is about, and whether it writes: what a cluster routes by slot. $all,
  // groups and projections are this node's own.
  static std::optional<std::pair<std::string_view, bool>> stream_scope(const Command& command) {
    return std::visit(
        [](const auto& c) -> std::optional<std::pair<std::string_view, bool>> {
          using C = std::decay_t<decltype(c)>;
          if constexpr (requires { c.stream; }) {
            constexpr bool write = std::is_same_v<C, AppendCommand> ||
                                   std::is_same_v<C, SetMetadataCommand> ||
                                   std::is_same_v<C, DeleteStreamCommand>;
            return std::pair{std::string_view(c.stream), write};
          } else {
            return std::nullopt;
          }
        },
        command);
  }

  void handle(http::Request& request, http::Responder responder) {
    if (cluster && cluster->handle(request, responder, [this](http::Responder& r, auto work) {
          offload(*appenders, r, std::move(work));
        })) {
      return;
    }
    auto decoded = decode_request({.method = request.method,
                                   .target = request.target,
                                   .body = request.body,
                                   .content_type = request.header("content-type"),
                                   .last_event_id = request.header("last-event-id")});
    if (!decoded) {
      responder.respond(error_response(decoded.error()));
      return;
    }
    // In a cluster, a stream's requests go to its slot's owner; a write holds a pass from this
    // check until the store has taken it, so a move's fence waits for it (cluster.h).
    std::optional<WriteGate::Pass> pass;
    if (cluster) {
      if (auto scope = stream_scope(*decoded)) {
        if (scope->second) pass.emplace(cluster->write_pass());
        if (auto elsewhere =
                cluster->route(scope->first, scope->second, request.header("keel-map-epoch"))) {
          responder.respond(std::move(*elsewhere));
          return;
        }
      }
    }
    std::visit(
        Overloaded{
            [&](AppendCommand& c) { append(std::move(c), responder); },
            [&](ReadStreamCommand& c) { responder.respond(read_stream(c)); },
            [&](ReadAllCommand& c) { responder.respond(read_all(c)); },
            [&](GetMetadataCommand& c) {
              responder.respond(json(200, metadata_json(store->metadata(c.stream))));
            },
            [&](SetMetadataCommand& c) {
              offload(*appenders, responder, [this, c = std::move(c)](http::Responder& r) {
                auto status = store->set_metadata(c.stream, c.metadata);
                r.respond(status ? no_content() : error_response(status.error()));
              });
            },
            [&](DeleteStreamCommand& c) {
              offload(*appenders, responder, [this, c = std::move(c)](http::Responder& r) {
                auto status = store->delete_stream(c.stream, c.expected, c.hard);
                r.respond(status ? no_content() : error_response(status.error()));
              });
            },
            [&](SubscribeStreamCommand& c) { subscribe_stream(std::move(c), responder); },
            [&](SubscribeAllCommand& c) { subscribe_all(std::move(c), responder); },
            [&](CreateGroupCommand& c) {
              offload(*appenders, responder,
                      [this, c = std::move(c), body = request.body](http::Responder& r) {
                        auto created = groups->create(c.options, body);
                        if (!created) return r.respond(error_response(created.error()));
                        auto group = groups->get(c.options.name);
                        if (!group) return r.respond(error_response(group.error()));
                        r.respond(json(200, group_json(group->options, group->stats)));
                      });
            },
            [&](ListGroupsCommand&) {
              auto list = groups->list();
              responder.respond(json(200, group_list_json(list)));
            },
            [&](GetGroupCommand& c) {
              auto group = groups->get(c.group);
              responder.respond(group ? json(200, group_json(group->options, group->stats))
                                      : error_response(group.error()));
            },
            [&](DeleteGroupCommand& c) {
              offload(*appenders, responder, [this, c = std::move(c)](http::Responder& r) {
                auto status = groups->remove(c.group);
                r.respond(status ? no_content() : error_response(status.error()));
              });
            },
            [&](PollCommand& c) { poll(std::move(c), responder); },
            [&](AckCommand& c) {
              offload(*appenders, responder, [this, c = std::move(c)](http::Responder& r) {
                auto settled = groups->settle(c.group, c.member, c.ids, std::nullopt, "");
                r.respond(settled ? json(200, settle_json(*settled))
                                  : error_response(settled.error()));
              });
            },
            [&](NackCommand& c) {
              offload(*appenders, responder, [this, c = std::move(c)](http::Responder& r) {
                auto settled = groups->settle(c.group, c.member, c.ids, c.action, c.reason);
                r.respond(settled ? json(200, settle_json(*settled))
                                  : error_response(settled.error()));
              });
            },
            [&](ListParkedCommand& c) {
              auto events = groups->parked(c.group, c.from, c.limit);
              if (!events) return responder.respond(error_response(events.error()));
              responder.respond(
                  json(200, read_page_json(*events, next_from(*events, c.limit, Direction::kForward,
                                                              Cursor::kVersion))));
            },
            [&](ReplayParkedCommand& c) {
              offload(*appenders, responder, [this, c = std::move(c)](http::Responder& r) {
                auto replayed = groups->replay_parked(c.group);
                r.respond(replayed ? json(200, replay_json(*replayed))
                                   : error_response(replayed.error()));
              });
            },
            [&](ReportProjectionCommand& c) {
              auto status = projections.report(c.report);
              if (!status) return responder.respond(error_response(status.error()));
              auto stored = projections.get(c.report.name);
              responder.respond(stored ? json(200, projection_json(*stored, store->next_position()))
                                       : error_response(stored.error()));
            },
            [&](ListProjectionsCommand&) {
              responder.respond(
                  json(200, projection_list_json(projections.list(), store->next_position())));
            },
            [&](GetProjectionCommand& c) {
              auto found = projections.get(c.name);
              responder.respond(found ? json(200, projection_json(*found, store->next_position()))
                                      : error_response(found.error()));
            },
            [&](DeleteProjectionCommand& c) {
              auto status = projections.remove(c.name);
              responder.respond(status ? no_content() : error_response(status.error()));
            },
            [&](MetricsCommand&) { responder.respond(metrics()); },
            [&](HealthzCommand&) { responder.respond(json(200, R"({"status":"ok"})")); },
            [&](ReadyCommand&) { responder.respond(readiness()); },
        },
        *decoded);
  }

  http::Response metrics() const {
    http::Response response = http::Response::text(200, registry.render_prometheus());
    response.content_type = "text/plain; version=0.0.4";
    return response;
  }

  http::Response readiness() const {
    if (ready.load()) return json(200, R"({"ready":true})");
    return unavailable("the node is not taking requests (starting or shutting down)");
  }

  // The admin listener: the operational endpoints, the console, and for the console's stream
  // browser and replay button the API's reads and the replay of parked events.
  void handle_admin(http::Request& request, http::Responder responder) {
    const std::string& path = request.path;
    if (path == "/metrics") return responder.respond(metrics());
    if (path == "/ready") return responder.respond(readiness());
    if (path == "/healthz") return responder.respond(json(200, R"({"status":"ok"})"));
    if (path == "/" || path == "/console") {
      http::Response page =
          http::Response::text(200, console::page("keel node", "node", console->first_paint()));
      page.content_type = "text/html; charset=utf-8";
      return responder.respond(std::move(page));
    }
    if (path == "/console/events" && request.method == "GET") {
      return console_feed->subscribe(std::move(responder));
    }
    if (path == "/console/streams" && request.method == "GET") {
      return responder.respond(console->streams(request));
    }
    if (auto file = console::asset(path)) return responder.respond(std::move(*file));
    const bool api_read = path.starts_with("/v1/") && request.method == "GET";
    const bool replay = path.starts_with("/v1/groups/") && path.ends_with("/parked/replay") &&
                        request.method == "POST";
    if (api_read || replay) return handle(request, std::move(responder));
    ApiError error;
    error.status = 404;
    error.code = "not_found";
    error.message =
        "the admin listener serves / (the console), /metrics, /healthz, /ready, and the API's "
        "reads (GET /v1/...)";
    responder.respond(error_response(error));
  }

  // Appends take no thread while they wait for their sync: the store answers them from its
  // flusher thread, and the responder carries the answer back to the connection's worker.
  // Bounded like the pools: max_pending_appends waiting, 503 beyond.
  void append(AppendCommand command, http::Responder& responder) {
    const std::uint32_t limit = config.limits.max_pending_appends;
    if (appends_waiting.fetch_add(1, std::memory_order_relaxed) >= limit) {
      appends_waiting.fetch_sub(1, std::memory_order_relaxed);
      responder.respond(refused("the node has " + std::to_string(limit) +
                                " appends waiting for their sync already; retry later"));
      return;
    }
    auto shared = std::make_shared<http::Responder>(std::move(responder));
    store->append_async(command.stream, command.expected, command.events,
                        [this, shared](Result<eventlog::AppendResult> appended) {
                          appends_waiting.fetch_sub(1, std::memory_order_relaxed);
                          shared->respond(appended ? json(200, append_result_json(*appended))
                                                   : error_response(appended.error()));
                        });
  }

  http::Response read_stream(const ReadStreamCommand& c) {
    const std::size_t limit = std::min<std::size_t>(c.limit, max_read_count.load());
    auto events = store->read_stream(c.stream, c.from, limit, c.direction);
    if (!events) return error_response(events.error());
    return json(200,
                read_page_json(*events, next_from(*events, limit, c.direction, Cursor::kVersion)));
  }

  // $all through the filter. A page looks at a bounded number of positions (so that a filter
  // matching little cannot make one request scan the whole log) and says where to go on.
  http::Response read_all(const ReadAllCommand& c) {
    const std::size_t limit = std::min<std::size_t>(c.limit, max_read_count.load());
    const std::uint64_t scan_budget = std::max<std::uint64_t>(limit * 16, 4096);
    std::vector<eventlog::RecordedEvent> page;
    std::optional<std::uint64_t> next;
    if (c.direction == Direction::kForward) {
      pubsub::Reader reader(*store, c.filter, c.from);
      while (page.size() < limit && !reader.caught_up() &&
             reader.position() - c.from < scan_budget) {
        auto events = reader.next(limit - page.size());
        if (!events) return error_response(events.error());
        for (auto& event : *events) page.push_back(std::move(event));
      }
      if (!reader.caught_up()) next = reader.position();
    } else {
      std::uint64_t from = c.from;  // kEnd or a position, inclusive
      std::uint64_t scanned = 0;
      bool reached_start = false;
      while (page.size() < limit && scanned < scan_budget) {
        auto events =
            store->read_all(from, std::min<std::size_t>(limit, 1000), Direction::kBackward);
        if (!events) return error_response(events.error());
        if (events->empty()) {
          reached_start = true;
          break;
        }
        for (auto& event : *events) {
          ++scanned;
          from = event.position == 0 ? 0 : event.position - 1;
          if (event.position == 0) reached_start = true;
          if (c.filter.matches(event) && page.size() < limit) page.push_back(std::move(event));
        }
        if (reached_start) break;
      }
      if (!reached_start) next = from;
    }
    return json(200, read_page_json(page, next));
  }

  void subscribe_stream(SubscribeStreamCommand c, http::Responder& responder) {
    // A hard-deleted stream is an ordinary 410 before any streaming starts.
    if (auto probe = store->read_stream(c.stream, 0, 1); !probe) {
      return responder.respond(error_response(probe.error()));
    }
    SubscriptionSpec spec;
    spec.stream = c.stream;
    if (c.from.kind == pubsub::StartFrom::Kind::kEnd) {
      auto version = store->stream_version(c.stream);
      spec.from = version ? *version + 1 : 0;
    } else {
      spec.from = c.from.position;
    }
    if (auto added = subscriptions->add(std::move(spec), responder); !added) {
      responder.respond(error_response(added.error()));
    }
  }

  void subscribe_all(SubscribeAllCommand c, http::Responder& responder) {
    SubscriptionSpec spec;
    spec.filter = std::move(c.filter);
    spec.from = c.from.resolve(*store);
    if (auto added = subscriptions->add(std::move(spec), responder); !added) {
      responder.respond(error_response(added.error()));
    }
  }

  void poll(PollCommand c, http::Responder& responder) {
    c.wait = std::min<Duration>(c.wait, std::chrono::milliseconds(max_poll_wait_ms.load()));
    auto& pool = c.wait > Duration::zero() ? *pollers : *appenders;
    offload(pool, responder, [this, c = std::move(c)](http::Responder& r) {
      auto deliveries = groups->poll(c.group, c.member, c.max, c.wait, c.session);
      r.respond(deliveries ? json(200, deliveries_json(*deliveries))
                           : error_response(deliveries.error()));
    });
  }
};

Node::Node(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Node::~Node() { stop(); }

Result<std::unique_ptr<Node>> Node::start(NodeConfig config, Clock& clock) {
  auto impl = std::make_unique<Impl>(std::move(config), clock);
  Impl& n = *impl;
  auto store = eventlog::EventStore::open(n.config.data_dir, n.config.store, clock);
  if (!store) return store.error();
  n.store = std::move(*store);
  n.max_read_count = n.config.limits.max_read_count;
  n.max_poll_wait_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(n.config.limits.max_poll_wait).count();
  // How appends share writes and syncs (group commit): appends per sync is their ratio.
  for (const auto& [name, help, field] :
       {std::tuple{"keel_eventlog_appends_total", "Appends written by the store",
                   &eventlog::StoreStats::appends},
        std::tuple{"keel_eventlog_commits_total",
                   "Group commits (one write of every pending append)",
                   &eventlog::StoreStats::commits},
        std::tuple{"keel_eventlog_syncs_total", "fdatasync calls on segment files",
                   &eventlog::StoreStats::syncs}}) {
    n.store_metrics.push_back(n.registry.counter_callback(name, help, {}, [&n, member = field] {
      return static_cast<double>(n.store->stats().*member);
    }));
  }
  n.requests_rejected =
      &n.registry.counter("keel_node_requests_rejected_total",
                          "Requests answered 503 because the appender or poller queue was full");
  n.appenders = std::make_unique<resilience::ThreadPoolBulkhead>(
      "appends", resilience::ThreadPoolBulkhead::Config{n.config.append_threads,
                                                        n.config.limits.max_pending_appends});
  n.appenders->bind_metrics(n.registry);
  // A thread per poll that may wait, and as much room to queue: a burst of polls is taken
  // up by idle threads instead of being refused while they start.
  const std::uint32_t polls = std::max<std::uint32_t>(1, n.config.limits.max_waiting_polls);
  n.pollers = std::make_unique<resilience::ThreadPoolBulkhead>(
      "polls", resilience::ThreadPoolBulkhead::Config{polls, polls});
  n.pollers->bind_metrics(n.registry);
  n.subscriptions = std::make_unique<SubscriptionHub>(
      *n.store, clock,
      SubscriptionOptions{.heartbeat = n.config.heartbeat,
                          .buffer_bytes = n.config.limits.subscriber_buffer_bytes,
                          .max_subscribers = n.config.limits.max_subscribers},
      n.registry);
  n.groups = std::make_unique<GroupRegistry>(*n.store, clock, n.registry, n.config.member_timeout);
  if (auto started = n.groups->start(); !started) {
    return Error(started.error().code(), "consumer groups: " + started.error().message());
  }
  n.subscriptions->start();
  if (auto started = n.start_kafka(); !started) return started.error();

  http::ServerOptions options;
  options.address = n.config.listen;
  options.workers = n.config.workers;
  options.limits = n.config.http;
  options.name = "api";
  options.error_response = refusal;
  options.any_method = true;  // the codec answers 405 with Allow, as docs/api.md says
  auto api = http::Server::bind(
      options,
      [&n](http::Request& request, http::Responder responder) {
        n.handle(request, std::move(responder));
      },
      clock);
  if (!api) return api.error();
  n.api = std::move(*api);
  if (n.config.cluster) {
    const ClusterConfig& c = *n.config.cluster;
    http::HostPort advertised = c.advertise.value_or(n.api->bound());
    if (advertised.host == "0.0.0.0" || advertised.host == "::") advertised.host = "127.0.0.1";
    if (advertised.port == 0) advertised.port = n.api->bound().port;
    cluster::NodeInfo self;
    self.id = c.id.empty() ? advertised.to_string() : c.id;
    const std::int32_t broker_id = NodeCluster::kafka_id(self.id);
    self.api = "http://" + advertised.to_string();
    self.kafka = n.kafka_address;
    if (n.config.admin) self.admin = "http://" + n.config.admin->to_string();
    auto joined = NodeCluster::start(c, std::move(self), *n.store, clock, n.registry);
    if (!joined) return joined.error();
    n.cluster = std::move(*joined);
    // Kafka clients find each partition's leader in Metadata, as in a Kafka cluster.
    if (n.kafka) n.kafka->set_owners(broker_id, n.cluster.get());
    // A stream's subscriptions end with `moved` (naming the new owner) once it is not ours.
    n.cluster->member().on_change([&n](const cluster::View&) {
      n.subscriptions->end_streams([&n](const std::string& stream) -> std::optional<std::string> {
        const cluster::Route route = n.cluster->member().route(stream);
        if (route.kind != cluster::Route::Kind::kRedirect) return std::nullopt;
        const std::string fields =
            nlohmann::json{{"reason", "moved"},
                           {"owner", route.owner},
                           {"owner_url", route.owner_api},
                           {"slot", route.slot},
                           {"epoch", route.epoch},
                           {"slot_count", n.cluster->member().view()->map->slot_count()}}
                .dump();
        return fields.substr(1, fields.size() - 2);  // the members, without the braces
      });
    });
  }
  if (n.config.admin) {
    n.console = std::make_unique<NodeConsole>(n.config, *n.store, *n.groups, *n.subscriptions,
                                              n.projections, clock);
    if (n.cluster) n.console->set_cluster([&n] { return n.cluster->status_json(); });
    n.console_feed = std::make_unique<console::Feed>(clock, console::Feed::Options{},
                                                     [&n] { return n.console->sample(); });
    http::ServerOptions admin_options;
    admin_options.address = *n.config.admin;
    admin_options.name = "admin";
    admin_options.limits.max_connections = 64;
    admin_options.error_response = refusal;
    auto admin = http::Server::bind(
        admin_options,
        [&n](http::Request& request, http::Responder responder) {
          n.handle_admin(request, std::move(responder));
        },
        clock);
    if (!admin) return admin.error();
    n.admin = std::move(*admin);
  }
  n.api->start();
  if (n.admin) {
    n.console_feed->start();
    n.admin->start();
  }
  if (n.kafka_listener) n.kafka_listener->start();
  n.ready = true;
  return std::unique_ptr<Node>(new Node(std::move(impl)));
}

void Node::stop() {
  Impl& n = *impl_;
  if (n.stopped) return;
  n.stopped = true;
  n.ready = false;
  // Subscriptions end first, with their final event, so the server's drain is not held up by
  // streams that never end by themselves.
  if (n.subscriptions) n.subscriptions->stop();
  if (n.console_feed) n.console_feed->stop();
  if (n.kafka_listener) n.kafka_listener->stop();
  if (n.kafka) n.kafka->stop();
  if (n.cluster) n.cluster->stop();  // leaves: the controller role goes to another node
  if (n.groups) n.groups->close();   // long polls answer now
  if (n.api) n.api->stop(n.config.drain);
  if (n.admin) n.admin->stop(0ms);
  if (n.pollers) n.pollers->stop();
  if (n.appenders) n.appenders->stop();  // writes already taken finish
  if (n.groups) n.groups->stop();
  if (n.store) {
    if (auto closed = n.store->close(); !closed) {
      log::get("node")->error("closing the store: {}", closed.error().message());
    }
  }
}

Status Node::reload(NodeConfig config) {
  Impl& n = *impl_;
  if (!same_restart_settings(n.config, config)) {
    return Error(errc::invalid_argument,
                 "the data dir, listeners, workers, append threads, durability and segment size "
                 "change only with a restart; nothing was changed");
  }
  n.max_read_count = config.limits.max_read_count;
  n.max_poll_wait_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(config.limits.max_poll_wait).count();
  n.subscriptions->set_options({.heartbeat = config.heartbeat,
                                .buffer_bytes = config.limits.subscriber_buffer_bytes,
                                .max_subscribers = config.limits.max_subscribers});
  n.config.limits = config.limits;
  n.config.heartbeat = config.heartbeat;
  n.config.drain = config.drain;
  return {};
}

http::HostPort Node::api() const { return impl_->api->bound(); }

std::optional<http::HostPort> Node::kafka() const {
  if (!impl_->kafka_listener) return std::nullopt;
  return impl_->kafka_listener->bound();
}

std::optional<http::HostPort> Node::admin() const {
  if (!impl_->admin) return std::nullopt;
  return impl_->admin->bound();
}

std::string Node::metrics_text() const { return impl_->registry.render_prometheus(); }

}  // namespace keel::node

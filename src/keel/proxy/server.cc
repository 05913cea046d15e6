// Setup, reload, the workers, and the client sessions (accept, read a head, hand it to handle()).
#include <pthread.h>
#include <sched.h>

#include "keel/proxy/server_impl.h"

namespace keel::proxy {

std::shared_ptr<const Generation> Server::Impl::current() const {
  std::lock_guard lock(generation_mutex);
  return generation;
}

Result<std::shared_ptr<const Generation>> Server::Impl::build(ProxyConfig config) {
  auto next = std::make_shared<Generation>();
  next->config = std::move(config);
  for (const auto& cluster : next->config.clusters) {
    auto shared = std::make_shared<ClusterShared>();
    shared->config = &cluster;
    for (const auto& endpoint : cluster.endpoints) {
      auto address = http::resolve(endpoint.address);
      if (!address) {
        return Error(errc::config_invalid,
                     "cluster " + cluster.name + ": " + address.error().message());
      }
      shared->addresses.push_back(*address);
    }
    if (cluster.circuit_breaker) {
      shared->breaker = std::make_unique<resilience::CircuitBreaker>(
          cluster.name, *cluster.circuit_breaker, clock);
      shared->breaker->bind_metrics(registry);
      shared->breaker->on_state_change(
          [this, name = cluster.name](const resilience::BreakerTransition& t) {
            console_event({.what = "breaker",
                           .cluster = name,
                           .text = t.reason,
                           .from = to_string(t.from),
                           .to = to_string(t.to)});
          });
    }
    shared->retry_budget =
        std::make_unique<resilience::RetryBudget>(cluster.name, cluster.retry_budget, clock);
    shared->retry_budget->bind_metrics(registry);
    if (cluster.adaptive_concurrency) {
      std::unique_ptr<resilience::LimitAlgorithm> algorithm = std::visit(
          [](const auto& settings) -> std::unique_ptr<resilience::LimitAlgorithm> {
            using Settings = std::decay_t<decltype(settings)>;
            if constexpr (std::is_same_v<Settings, resilience::GradientLimit::Config>) {
              return std::make_unique<resilience::GradientLimit>(settings);
            } else {
              return std::make_unique<resilience::AimdLimit>(settings);
            }
          },
          *cluster.adaptive_concurrency);
      shared->concurrency = std::make_unique<resilience::ConcurrencyLimiter>(
          cluster.name, std::move(algorithm), clock);
      shared->concurrency->bind_metrics(registry);
    }
    bind_cluster_metrics(*shared);
    next->clusters.push_back(std::move(shared));
  }
  for (const auto& listener : next->config.listeners) {
    for (const auto& route : listener.routes) {
      if (route.migration) {
        next->migrations[&route] = migration_store->state(route.name, *route.migration);
      }
      RouteMetrics& m = next->route_metrics[&route];
      m.listener = listener.name;
      m.name = route.name;
      const metrics::Labels labels = {{"listener", listener.name}, {"route", route.name}};
      m.requests =
          &registry.counter("keel_proxy_route_requests_total", "Requests on the route", labels);
      for (int status_class = 1; status_class <= 5; ++status_class) {
        auto with = labels;
        with.emplace_back("class", std::to_string(status_class) + "xx");
        m.responses[static_cast<std::size_t>(status_class)] = &registry.counter(
            "keel_proxy_route_responses_total", "Responses on the route by status class", with);
      }
      m.latency = &registry.histogram("keel_proxy_route_request_duration_seconds",
                                      "Time to the end of the response, on the route",
                                      metrics::Histogram::latency_seconds_bounds(), labels);
    }
  }
  for (auto& worker : workers) {
    auto& own = next->worker_clusters.emplace_back();
    for (auto& cluster : next->clusters) {
      own.push_back(std::make_unique<WorkerCluster>(cluster, worker->index, clock, worker->random));
    }
  }
  return std::shared_ptr<const Generation>(std::move(next));
}

Status Server::Impl::setup(ProxyConfig initial) {
  if (!initial.access_log) access_log = nullptr;
  migration_store = std::make_unique<MigrationStore>(
      initial.migration_state_file, clock,
      [this](const std::string& what) { console_event({.what = "migration", .text = what}); });
  std::uint32_t worker_count = 1;
  for (std::size_t l = 0; l < initial.listeners.size(); ++l) {
    worker_count = std::max(worker_count, initial.listeners[l].workers);
    auto shared = std::make_unique<ListenerShared>();
    shared->index = l;
    listeners.push_back(std::move(shared));
  }
  // One more worker, without listeners, sends the shadow copies of Strangler Fig routes, on
  // a thread of the lowest priority (SCHED_IDLE): mirrors use spare CPU only, and when there
  // is none their bounded queue fills and they are dropped and counted, never waited for.
  mirror_worker = worker_count;
  for (std::uint32_t w = 0; w < worker_count; ++w) {
    lanes.push_back(std::make_unique<MirrorLane>());
  }
  for (std::uint32_t w = 0; w <= worker_count; ++w) {
    auto worker = std::make_unique<Worker>(clock, w);
    // Request ids come from here: the process's seed, a different stream per worker.
    worker->random = Random(seed ^ (0x9e3779b97f4a7c15ull * (w + 1)));
    workers.push_back(std::move(worker));
  }
  if (access_log != nullptr) {
    AccessLog::Options options;
    options.dropped_lines = &registry.counter(
        "keel_proxy_access_log_dropped_total",
        "Access log lines dropped because a worker's buffer was full (the disk was slow)", {});
    access_log_writer = std::make_unique<AccessLog>(*access_log, workers.size(), clock, options);
  }
  auto built = build(std::move(initial));
  if (!built) return built.error();
  generation = std::move(*built);
  const ProxyConfig& config = generation->config;
  // Every listener gets one SO_REUSEPORT socket per worker it uses; the kernel spreads the
  // connections. A port of 0 is bound once and the others reuse the port it got.
  for (auto& listener : listeners) {
    const Listener& listener_config = config.listeners[listener->index];
    const auto& address = listener_config.address;
    for (std::uint32_t w = 0; w < listener_config.workers; ++w) {
      auto host = http::resolve(address.to_string());
      if (!host) return host.error();
      tcp::endpoint at = w == 0 ? *host : listener->bound;
      auto bound = http::listen_on(workers[w]->io, at);
      if (!bound) {
        return Error(errc::io_error,
                     "listener " + listener_config.name + ": " + bound.error().message());
      }
      listener->bound = bound->local_endpoint();
      workers[w]->acceptors.push_back(std::move(*bound));
    }
  }
  if (config.admin) {
    http::ServerOptions options;
    options.address = *config.admin;
    options.name = "admin";
    options.limits.max_connections = 64;
    options.limits.max_body_bytes = 64 * 1024;
    options.limits.idle_timeout = 30s;
    console_feed = std::make_unique<console::Feed>(clock, console::Feed::Options{},
                                                   [this] { return console_sample(); });
    auto bound = http::Server::bind(
        options,
        [this](http::Request& r, http::Responder responder) {
          if (r.path == "/console/events" && r.method == "GET") {
            console_feed->subscribe(std::move(responder));
          } else {
            responder.respond(admin_answer(r));
          }
        },
        clock);
    if (!bound) return bound.error();
    admin = std::move(*bound);
  }
  return {};
}

void Server::Impl::bind_cluster_metrics(ClusterShared& c) {
  const metrics::Labels labels = {{"cluster", c.config->name}};
  c.requests_total =
      &registry.counter("keel_proxy_requests_total", "Requests routed to the cluster", labels);
  c.retries_total = &registry.counter("keel_proxy_retries_total", "Retries sent", labels);
  c.hedges_total = &registry.counter("keel_proxy_hedges_total", "Hedged tries sent", labels);
  c.hedge_wins_total = &registry.counter("keel_proxy_hedge_wins_total",
                                         "Hedged tries whose answer was the one given", labels);
  c.overflow_total = &registry.counter("keel_proxy_overflow_total",
                                       "Requests refused by a cluster limit (bulkhead)", labels);
  c.breaker_rejections_total = &registry.counter("keel_proxy_breaker_rejections_total",
                                                 "Requests refused by the open breaker", labels);
  c.connect_failures_total = &registry.counter("keel_proxy_connect_failures_total",
                                               "Upstream connections that failed", labels);
  c.latency =
      &registry.histogram("keel_proxy_request_duration_seconds", "Time to the end of the response",
                          metrics::Histogram::latency_seconds_bounds(), labels);
  for (int status_class = 1; status_class <= 5; ++status_class) {
    auto with = labels;
    with.emplace_back("class", std::to_string(status_class) + "xx");
    c.responses[static_cast<std::size_t>(status_class)] =
        &registry.counter("keel_proxy_responses_total", "Responses by status class", with);
  }
  c.health_changes_total = &registry.counter("keel_proxy_health_changes_total",
                                             "Endpoints turning healthy or unhealthy", labels);
  c.healthy = std::make_unique<std::atomic<bool>[]>(c.config->endpoints.size());
  c.view_workers = workers.size();
  c.views =
      std::make_unique<ClusterShared::EndpointView[]>(workers.size() * c.config->endpoints.size());
  for (std::size_t i = 0; i < c.config->endpoints.size(); ++i) {
    const auto& endpoint = c.config->endpoints[i];
    c.healthy[i] = true;
    auto with = labels;
    with.emplace_back("endpoint", endpoint.address);
    c.endpoint_ejections.push_back(&registry.counter("keel_proxy_endpoint_ejections_total",
                                                     "Outlier ejections of the endpoint", with));
    c.endpoint_latency.push_back(&registry.histogram(
        "keel_proxy_endpoint_attempt_duration_seconds",
        "Time from sending an attempt to the endpoint to its response header (or failure)",
        metrics::Histogram::latency_seconds_bounds(), with));
    c.gauges.push_back(registry.gauge_callback(
        "keel_proxy_endpoint_healthy", "1 when the active health check passes", with,
        [&c, i] { return c.healthy[i].load() ? 1.0 : 0.0; }));
    c.gauges.push_back(registry.gauge_callback(
        "keel_proxy_endpoint_in_flight", "Attempts in flight to the endpoint, all workers", with,
        [&c, i] { return static_cast<double>(c.in_flight(i)); }));
    if (c.config->load_balancer.policy == "peak_ewma") {
      c.gauges.push_back(registry.gauge_callback(
          "keel_proxy_endpoint_latency_cost_ms",
          "peak_ewma's latency estimate for the endpoint (mean over workers; 0: none yet)", with,
          [&c, i] { return c.latency_cost_ms(i); }));
    }
    c.endpoint_requests.push_back(&registry.counter("keel_proxy_endpoint_requests_total",
                                                    "Attempts sent to the endpoint", with));
    c.endpoint_failures.push_back(
        &registry.counter("keel_proxy_endpoint_failures_total",
                          "Attempts that failed (connect, reset, timeout, 5xx)", with));
  }
  c.gauges.push_back(
      registry.gauge_callback("keel_proxy_active_requests", "Requests in flight to the cluster",
                              labels, [&c] { return static_cast<double>(c.requests.load()); }));
  c.gauges.push_back(
      registry.gauge_callback("keel_proxy_upstream_connections", "Upstream connections open",
                              labels, [&c] { return static_cast<double>(c.connections.load()); }));
}

void Server::Impl::run() {
  start_loops(generation);
  for (std::size_t w = 0; w < workers.size(); ++w) {
    Worker& worker = *workers[w];
    for (std::size_t l = 0; l < worker.acceptors.size(); ++l) {
      net::co_spawn(worker.io, accept_loop(worker, worker.acceptors[l], *listeners[l]),
                    net::detached);
    }
    if (w != mirror_worker) {
      worker.start();
      continue;
    }
    net::co_spawn(worker.io, mirror_loop(worker), net::detached);
    worker.start([] {
      // SCHED_IDLE: any other thread that wakes on this CPU preempts a mirror at once, so
      // copies never delay a client (at nice 10 they did: a mirror ran out its slice while a
      // client's request waited, p99 x5). Copies run on spare CPU only; without any, their
      // bounded queue fills and they are dropped and counted.
      sched_param lowest{};
      (void)::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &lowest);
    });
  }
  if (admin) {
    console_feed->start();
    admin->start();
  }
}

void Server::Impl::stop(Duration drain) {
  if (stopping.exchange(true)) return;
  // No new connections; connections between requests close now, the others after their
  // current response.
  for (auto& worker : workers) {
    worker->close_acceptors();
    worker->close_idle();
  }
  // In-flight requests finish (sessions end after their current response); then the rest
  // is cut.
  const TimePoint deadline = clock.now() + drain;
  for (auto& worker : workers) {
    while (clock.now() < deadline) {
      auto open = worker->sessions();
      if (!open || *open == 0) break;
      std::this_thread::sleep_for(10ms);
    }
  }
  for (auto& worker : workers) worker->stop();
  if (console_feed) console_feed->stop();  // ends the console's streams
  if (admin) admin->stop(0ms);
  if (access_log_writer) access_log_writer->stop();  // after the last request's line
}

Task<void> Server::Impl::accept_loop(Worker& worker, tcp::acceptor& acceptor,
                                     ListenerShared& listener) {
  for (;;) {
    error_code ec;
    Socket socket =
        co_await acceptor.async_accept(worker.io.get_executor(), net::redirect_error(use_task, ec));
    if (ec) {
      if (!acceptor.is_open()) co_return;
      continue;  // EMFILE and friends: keep accepting
    }
    auto slot = try_hold(listener.connections,
                         current()->config.listeners[listener.index].limits.max_connections);
    if (!slot) continue;  // over max_connections: the socket closes here
    socket.set_option(tcp::no_delay(true), ec);
    net::co_spawn(worker.io, session(worker, listener, std::move(socket), std::move(*slot)),
                  net::detached);
  }
}

Task<void> Server::Impl::session(Worker& worker, ListenerShared& listener, Socket socket,
                                 Held /*connection_slot: held until the session ends*/) {
  ++worker.open_sessions;
  Conn client(worker, std::move(socket), true);
  std::string peer;
  {
    error_code ec;
    auto remote = client.socket.remote_endpoint(ec);
    if (!ec) peer = remote.address().to_string();
  }
  Scratch scratch;
  // The current config, taken again only after a reload (one atomic load otherwise).
  std::shared_ptr<const Generation> held;
  std::uint64_t held_number = ~std::uint64_t{0};
  auto refresh = [&] {
    if (generation_number.load(std::memory_order_acquire) == held_number) return;
    std::lock_guard lock(generation_mutex);
    held = generation;
    held_number = generation_number.load(std::memory_order_relaxed);
  };
  bool keep_going = true;
  bool client_done = false;  // it closed, or went quiet: no lingering for it
  while (keep_going && !stopping.load(std::memory_order_relaxed)) {
    refresh();
    const Limits limits = held->config.listeners[listener.index].limits;
    h1::ParseResult error;
    const http::HeadRead read =
        co_await http::read_request_head(client, limits, scratch.head, error);
    if (read == http::HeadRead::kClosed) {
      client_done = true;  // closed or silent before its header was whole
      break;
    }
    if (read == http::HeadRead::kError) {
      scratch.exchange.reset(clock.now());
      scratch.exchange.flag = Flag::kBadRequest;
      co_await local_reply(client, scratch.exchange, 11, false, error.status,
                           std::string("bad_request: ") + error.why);
      break;
    }
    refresh();  // a reload while this request's header came in takes over for it
    keep_going = co_await handle(worker, listener, held, client, scratch, peer);
  }
  if (client_done) {
    error_code ignored;
    client.socket.shutdown(tcp::socket::shutdown_send, ignored);
  } else {
    co_await http::linger_close(client);
  }
  --worker.open_sessions;
}

Result<std::unique_ptr<Server>> Server::start(ProxyConfig config, Clock& clock,
                                              std::ostream* access_log, std::uint64_t seed) {
  auto impl = std::make_unique<Impl>(clock, access_log, seed);
  if (auto status = impl->setup(std::move(config)); !status) return status.error();
  impl->run();
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { stop(); }

void Server::stop(Duration drain) { impl_->stop(drain); }

Status Server::reload(ProxyConfig config) {
  const ProxyConfig& running = impl_->current()->config;
  auto describe = [](const ProxyConfig& c) {
    std::string text;
    for (const auto& l : c.listeners) {
      text += l.name + "@" + l.address.to_string() + "x" + std::to_string(l.workers) + " ";
    }
    return text + "admin@" + (c.admin ? c.admin->to_string() : "-");
  };
  if (describe(config) != describe(running)) {
    return Error(errc::config_invalid, config.source +
                                           ": listeners, their addresses and workers and the admin "
                                           "address cannot change on reload (running: " +
                                           describe(running) + "; new: " + describe(config) +
                                           "); restart the proxy");
  }
  auto built = impl_->build(std::move(config));
  if (!built) return built.error();
  {
    std::lock_guard lock(impl_->generation_mutex);
    impl_->generation = *built;
    impl_->generation_number.fetch_add(1, std::memory_order_release);
  }
  impl_->start_loops(*built);
  // Idle connections of replaced clusters close (requests in flight keep theirs to the end).
  for (auto& worker : impl_->workers) {
    net::post(worker->io, [w = worker.get(), g = *built] {
      std::erase_if(w->pools, [&](const auto& entry) {
        return std::none_of(g->clusters.begin(), g->clusters.end(),
                            [&](const auto& c) { return c.get() == entry.first; });
      });
    });
  }
  return {};
}

void Server::on_admin_reload(std::function<Status()> reload) {
  std::lock_guard lock(impl_->reload_mutex);
  impl_->reload_hook = std::move(reload);
}

std::vector<HostPort> Server::listening() const {
  std::vector<HostPort> out;
  for (const auto& listener : impl_->listeners) {
    out.push_back({listener->bound.address().to_string(), listener->bound.port()});
  }
  return out;
}

std::optional<HostPort> Server::admin() const {
  if (!impl_->admin) return std::nullopt;
  return impl_->admin->bound();
}

std::string Server::metrics_text() const { return impl_->registry.render_prometheus(); }
std::string Server::clusters_json() const { return impl_->clusters_json(); }

}  // namespace keel::proxy

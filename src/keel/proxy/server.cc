#include "keel/proxy/server.h"

// Asio's awaitable.hpp uses std::exchange without including <utility> (Boost 1.74).
#include <utility>
//
#include <pthread.h>
#include <sched.h>

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "keel/balance/endpoint_set.h"
#include "keel/balance/load_balancer.h"
#include "keel/core/metrics.h"
#include "keel/core/random.h"
#include "keel/core/text.h"
#include "keel/core/uuid.h"
#include "keel/resilience/circuit_breaker.h"

namespace keel::proxy {
namespace {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using beast::error_code;
using net::awaitable;
using net::use_awaitable;
// Streams bound to the worker's io_context by type: no polymorphic executor on the hot path.
using Executor = net::io_context::executor_type;
using Stream = beast::basic_stream<tcp, Executor, beast::unlimited_rate_policy>;
using Socket = net::basic_stream_socket<tcp, Executor>;

constexpr std::size_t kChunk = 16 * 1024;     // body bytes moved per read/write
constexpr std::size_t kMaxTarget = 8 * 1024;  // longer request targets get 414
constexpr std::size_t kFlat = 8 * 1024;       // writes up to this size are copied into one buffer

std::string_view sv(beast::string_view text) { return {text.data(), text.size()}; }

// Why a request ended without a response from upstream (or with one): the access log's flag
// and the local reply's x-keel-reason.
enum class Flag {
  kNone,
  kNoRoute,          // NR  404
  kOverflow,         // UO  503 a cluster limit (Envoy's circuit-breaker thresholds)
  kBreakerOpen,      // BO  503
  kNoHealthy,        // UH  503
  kConnectFailure,   // UF  502
  kReset,            // UR  502 the upstream closed or reset before answering
  kTimeout,          // UT  504
  kDownstreamReset,  // DC  the client went away
  kBadRequest,       // BR  4xx: malformed, oversized
};

const char* flag_code(Flag flag) {
  switch (flag) {
    case Flag::kNone:
      return "-";
    case Flag::kNoRoute:
      return "NR";
    case Flag::kOverflow:
      return "UO";
    case Flag::kBreakerOpen:
      return "BO";
    case Flag::kNoHealthy:
      return "UH";
    case Flag::kConnectFailure:
      return "UF";
    case Flag::kReset:
      return "UR";
    case Flag::kTimeout:
      return "UT";
    case Flag::kDownstreamReset:
      return "DC";
    case Flag::kBadRequest:
      return "BR";
  }
  return "?";
}

// The headers that belong to one connection and are never forwarded (RFC 9110 7.6.1), besides
// those the Connection header names.
bool hop_by_hop(beast::string_view name) {
  for (beast::string_view h : {"connection", "keep-alive", "proxy-connection", "te", "trailer",
                               "transfer-encoding", "upgrade", "expect"}) {
    if (beast::iequals(name, h)) return true;
  }
  return false;
}

void strip_hop_by_hop(http::fields& fields) {
  std::vector<std::string> named;
  for (auto token : http::token_list(fields[http::field::connection])) {
    named.emplace_back(token);
  }
  for (const auto& name : named) fields.erase(name);
  for (auto it = fields.begin(); it != fields.end();) {
    it = hop_by_hop(it->name_string()) ? fields.erase(it) : std::next(it);
  }
}

bool idempotent(http::verb method) {
  switch (method) {
    case http::verb::get:
    case http::verb::head:
    case http::verb::options:
    case http::verb::put:
    case http::verb::delete_:
    case http::verb::trace:
      return true;
    default:
      return false;
  }
}

// Shared by all workers: the breaker, the limit counters, the metrics.
struct ClusterShared {
  const Cluster* config = nullptr;
  std::unique_ptr<resilience::CircuitBreaker> breaker;
  std::unique_ptr<resilience::RetryBudget> retry_budget;
  std::atomic<std::uint32_t> connections{0};
  std::atomic<std::uint32_t> requests{0};
  std::atomic<std::uint32_t> retries{0};
  std::atomic<std::uint32_t> pending{0};  // waiting for a connection at max_connections
  std::vector<tcp::endpoint> addresses;   // resolved once, at start
  metrics::Counter* requests_total = nullptr;
  metrics::Counter* retries_total = nullptr;
  metrics::Counter* overflow_total = nullptr;
  metrics::Counter* breaker_rejections_total = nullptr;
  metrics::Counter* connect_failures_total = nullptr;
  metrics::Histogram* latency = nullptr;
  std::array<metrics::Counter*, 6> responses{};  // by status class: [1] 1xx .. [5] 5xx
  std::vector<metrics::Counter*> endpoint_requests;
  std::vector<metrics::Counter*> endpoint_failures;
  std::vector<metrics::Counter*> endpoint_ejections;
  std::vector<metrics::Histogram*> endpoint_latency;  // per attempt, to the response header
  metrics::Counter* health_changes_total = nullptr;
  // As seen by the health checker (worker 0), for /clusters and /metrics.
  std::unique_ptr<std::atomic<bool>[]> healthy;
  std::vector<metrics::CallbackRegistration> gauges;
};

// An upstream connection and its read buffer (bytes after one response belong to the next).
// Counted in its cluster's `connections` while it exists.
struct Upstream {
  Upstream(net::io_context& io, std::shared_ptr<ClusterShared> c, std::size_t e)
      : stream(io.get_executor()), endpoint(e), cluster(std::move(c)) {
    cluster->connections.fetch_add(1, std::memory_order_relaxed);
  }
  ~Upstream() { cluster->connections.fetch_sub(1, std::memory_order_relaxed); }
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;
  Stream stream;
  beast::flat_buffer buffer;
  std::size_t endpoint;
  std::shared_ptr<ClusterShared> cluster;  // may outlive a reload's generation
};

// Counts one in `counter` for its lifetime.
class Held {
 public:
  explicit Held(std::atomic<std::uint32_t>& counter) : counter_(&counter) {
    counter.fetch_add(1, std::memory_order_relaxed);
  }
  Held(Held&& other) noexcept : counter_(std::exchange(other.counter_, nullptr)) {}
  Held& operator=(Held&& other) noexcept {
    std::swap(counter_, other.counter_);
    return *this;
  }
  ~Held() {
    if (counter_ != nullptr) counter_->fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  std::atomic<std::uint32_t>* counter_;
};

// Takes a slot of `counter` if it is below `limit`.
std::optional<Held> try_hold(std::atomic<std::uint32_t>& counter, std::uint32_t limit) {
  if (counter.load(std::memory_order_relaxed) >= limit) return std::nullopt;
  return Held(counter);
}

// A worker's own view of a cluster: endpoint state, the balancer, idle connections.
struct WorkerCluster {
  WorkerCluster(std::shared_ptr<ClusterShared> s, Clock& clock, Random& random)
      : shared(std::move(s)),
        endpoints(shared->config->endpoints, shared->config->endpoint_options, clock) {
    auto made = balance::make_load_balancer(shared->config->load_balancer, endpoints, random);
    balancer = std::move(*made);  // the config was checked; the policy exists
    if (shared->config->outlier_detection)
      outlier.emplace(endpoints, *shared->config->outlier_detection);
    if (shared->config->health_check)
      health.emplace(endpoints, *shared->config->health_check, random);
  }
  std::shared_ptr<ClusterShared> shared;
  balance::EndpointSet endpoints;
  std::unique_ptr<balance::LoadBalancer> balancer;
  // Each worker ejects outliers from what it sees itself. Health is checked by worker 0 only
  // (one probe per endpoint per interval, not one per worker) and its verdicts are posted to
  // every worker's set.
  std::optional<balance::OutlierDetector> outlier;
  std::optional<balance::HealthChecker> health;
};

struct Worker {
  std::size_t index = 0;
  net::io_context io{1};
  // Keeps run() going while no socket is open, until stop().
  net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(io);
  std::thread thread;
  std::vector<tcp::acceptor> acceptors;
  Random random{0};
  std::uint64_t open_sessions = 0;
  // Client connections, and whether each is between requests (stop() closes those at once).
  std::map<Stream*, bool> clients;
  // Idle upstream connections, by cluster and endpoint. They belong to the worker, not to a
  // generation, so that they close before the io_context that owns their sockets.
  std::map<const ClusterShared*, std::vector<std::vector<std::unique_ptr<Upstream>>>> pools;
  std::vector<std::unique_ptr<Upstream>>& pool(const ClusterShared& cluster, std::size_t endpoint) {
    auto& by_endpoint = pools[&cluster];
    by_endpoint.resize(cluster.addresses.size());
    return by_endpoint[endpoint];
  }
};

// What a config makes: the clusters' shared state and each worker's own view of them. A
// reload builds a new one; a request keeps the one it started with until it ends.
struct Generation {
  ProxyConfig config;
  std::vector<std::shared_ptr<ClusterShared>> clusters;
  std::vector<std::vector<std::unique_ptr<WorkerCluster>>> worker_clusters;  // [worker][cluster]
  std::map<const Route*, std::shared_ptr<MigrationState>> migrations;  // outlive reloads by name
};

// A listener's sockets outlive reloads; its limits and routes come from the current config.
struct ListenerShared {
  std::size_t index = 0;
  std::atomic<std::uint32_t> connections{0};
  tcp::endpoint bound;
};

// A shadow copy of a request, waiting for legacy's answer and then sent to modern.
struct Mirror {
  std::shared_ptr<MigrationState> state;
  http::request_header<> header;
  std::string body;
  std::string request_line;
  Answer legacy;
  std::size_t legacy_endpoint = 0;  // the noise baseline asks another one when there is one
};

// A response's status and headers as a diff sees them (the body is added by the caller).
template <typename Body>
Answer answer_of(const http::response<Body>& response) {
  Answer answer{.status = response.result_int()};
  for (const auto& field : response) {
    answer.headers.emplace_back(ascii_lower(sv(field.name_string())),
                                std::string(sv(field.value())));
  }
  answer.json = sv(response[http::field::content_type]).find("json") != std::string_view::npos;
  return answer;
}

// One request's record, for the access log.
struct Exchange {
  std::string request_id;
  std::string method;
  std::string path;
  unsigned status = 0;
  std::string upstream = "-";
  std::string cluster = "-";
  std::uint32_t attempts = 0;
  Flag flag = Flag::kNone;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
};

}  // namespace

struct Server::Impl {
  Clock& clock;
  std::ostream* access_log;
  std::mutex log_mutex;
  metrics::Registry registry;
  std::unique_ptr<MigrationStore> migration_store;  // stages outlive reloads
  mutable std::mutex generation_mutex;
  std::shared_ptr<const Generation> generation;
  // Bumped with every new generation: a session compares it (one atomic load per request) and
  // takes the mutex only when a reload happened.
  std::atomic<std::uint64_t> generation_number{0};
  std::vector<std::unique_ptr<ListenerShared>> listeners;
  std::vector<std::unique_ptr<Worker>> workers;  // the listeners', then the mirror worker
  std::size_t mirror_worker = 0;
  std::unique_ptr<Worker> admin_worker;
  std::optional<tcp::endpoint> admin_bound;
  std::atomic<bool> stopping{false};
  std::mutex reload_mutex;
  std::function<Status()> reload_hook;  // what POST /reload on the admin listener runs

  Impl(Clock& k, std::ostream* log) : clock(k), access_log(log) {}

  std::shared_ptr<const Generation> current() const {
    std::lock_guard lock(generation_mutex);
    return generation;
  }

  // ------------------------------------------------------------------ setup
  Result<std::shared_ptr<const Generation>> build(ProxyConfig config) {
    auto next = std::make_shared<Generation>();
    next->config = std::move(config);
    for (const auto& cluster : next->config.clusters) {
      auto shared = std::make_shared<ClusterShared>();
      shared->config = &cluster;
      for (const auto& endpoint : cluster.endpoints) {
        auto address = resolve(endpoint.address);
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
      }
      shared->retry_budget =
          std::make_unique<resilience::RetryBudget>(cluster.name, cluster.retry_budget, clock);
      shared->retry_budget->bind_metrics(registry);
      bind_cluster_metrics(*shared);
      next->clusters.push_back(std::move(shared));
    }
    for (const auto& listener : next->config.listeners) {
      for (const auto& route : listener.routes) {
        if (route.migration) {
          next->migrations[&route] = migration_store->state(route.name, *route.migration);
        }
      }
    }
    for (auto& worker : workers) {
      auto& own = next->worker_clusters.emplace_back();
      for (auto& cluster : next->clusters) {
        own.push_back(std::make_unique<WorkerCluster>(cluster, clock, worker->random));
      }
    }
    return std::shared_ptr<const Generation>(std::move(next));
  }

  Status setup(ProxyConfig initial) {
    if (!initial.access_log) access_log = nullptr;
    migration_store = std::make_unique<MigrationStore>(initial.migration_state_file, clock);
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
    for (std::uint32_t w = 0; w <= worker_count; ++w) {
      auto worker = std::make_unique<Worker>();
      worker->index = w;
      // Request ids come from here: seeded afresh in every process.
      worker->random =
          Random((std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}() ^ w);
      workers.push_back(std::move(worker));
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
        auto host = resolve(address.to_string());
        if (!host) return host.error();
        tcp::endpoint at = w == 0 ? *host : listener->bound;
        auto bound = bind(workers[w]->io, at);
        if (!bound) {
          return Error(errc::io_error,
                       "listener " + listener_config.name + ": " + bound.error().message());
        }
        listener->bound = bound->local_endpoint();
        workers[w]->acceptors.push_back(std::move(*bound));
      }
    }
    if (config.admin) {
      admin_worker = std::make_unique<Worker>();
      auto host = resolve(config.admin->to_string());
      if (!host) return host.error();
      auto bound = bind(admin_worker->io, *host);
      if (!bound) return Error(errc::io_error, "admin listener: " + bound.error().message());
      admin_bound = bound->local_endpoint();
      admin_worker->acceptors.push_back(std::move(*bound));
    }
    return {};
  }

  static Result<tcp::endpoint> resolve(const std::string& host_port) {
    auto parsed = parse_host_port(host_port, true);
    if (!parsed) return parsed.error();
    error_code ec;
    auto ip = net::ip::make_address(parsed->host, ec);
    if (!ec) return tcp::endpoint(ip, parsed->port);
    net::io_context io;
    tcp::resolver resolver(io);
    auto results = resolver.resolve(parsed->host, std::to_string(parsed->port), ec);
    if (ec || results.empty()) {
      return Error(errc::config_invalid,
                   "cannot resolve " + host_port + ": " + (ec ? ec.message() : "no address"));
    }
    return results.begin()->endpoint();
  }

  static Result<tcp::acceptor> bind(net::io_context& io, const tcp::endpoint& at) {
    tcp::acceptor acceptor(io);
    error_code ec;
    acceptor.open(at.protocol(), ec);
    if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) {
      acceptor.set_option(net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true), ec);
    }
    if (!ec) acceptor.bind(at, ec);
    if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      return Error(errc::io_error, "cannot listen on " + at.address().to_string() + ":" +
                                       std::to_string(at.port()) + ": " + ec.message());
    }
    return acceptor;
  }

  void bind_cluster_metrics(ClusterShared& c) {
    const metrics::Labels labels = {{"cluster", c.config->name}};
    c.requests_total =
        &registry.counter("keel_proxy_requests_total", "Requests routed to the cluster", labels);
    c.retries_total = &registry.counter("keel_proxy_retries_total", "Retries sent", labels);
    c.overflow_total = &registry.counter("keel_proxy_overflow_total",
                                         "Requests refused by a cluster limit (bulkhead)", labels);
    c.breaker_rejections_total = &registry.counter("keel_proxy_breaker_rejections_total",
                                                   "Requests refused by the open breaker", labels);
    c.connect_failures_total = &registry.counter("keel_proxy_connect_failures_total",
                                                 "Upstream connections that failed", labels);
    c.latency = &registry.histogram("keel_proxy_request_duration_seconds",
                                    "Time to the end of the response",
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
      c.endpoint_requests.push_back(&registry.counter("keel_proxy_endpoint_requests_total",
                                                      "Attempts sent to the endpoint", with));
      c.endpoint_failures.push_back(
          &registry.counter("keel_proxy_endpoint_failures_total",
                            "Attempts that failed (connect, reset, timeout, 5xx)", with));
    }
    c.gauges.push_back(
        registry.gauge_callback("keel_proxy_active_requests", "Requests in flight to the cluster",
                                labels, [&c] { return static_cast<double>(c.requests.load()); }));
    c.gauges.push_back(registry.gauge_callback(
        "keel_proxy_upstream_connections", "Upstream connections open", labels,
        [&c] { return static_cast<double>(c.connections.load()); }));
  }

  // ------------------------------------------------------------------ run and stop
  // The timers of a generation: outlier ticks on every worker, health checks on worker 0. They
  // end when a reload replaces the generation or the server stops.
  void start_loops(const std::shared_ptr<const Generation>& g) {
    for (std::size_t c = 0; c < g->clusters.size(); ++c) {
      for (std::size_t w = 0; w < workers.size(); ++w) {
        if (g->worker_clusters[w][c]->outlier) {
          net::co_spawn(workers[w]->io, outlier_loop(g, w, c), net::detached);
        }
      }
      if (g->worker_clusters[0][c]->health) {
        net::co_spawn(workers[0]->io, health_loop(g, c), net::detached);
      }
    }
  }

  // Sleeps `delay` on worker `w`; false when the generation is no longer the current one.
  awaitable<bool> sleep_while_current(std::size_t w, const Generation* g, Duration delay) {
    net::steady_timer timer(workers[w]->io, delay);
    error_code ec;
    co_await timer.async_wait(net::redirect_error(use_awaitable, ec));
    co_return !ec && !stopping.load() && current().get() == g;
  }

  awaitable<void> outlier_loop(std::weak_ptr<const Generation> weak, std::size_t w, std::size_t c) {
    const Duration interval = weak.lock()->clusters[c]->config->outlier_detection->interval;
    const Generation* id = weak.lock().get();
    while (co_await sleep_while_current(w, id, interval)) {
      auto g = weak.lock();
      if (!g) co_return;
      WorkerCluster& cluster = *g->worker_clusters[w][c];
      for (std::size_t i : cluster.outlier->tick()) cluster.shared->endpoint_ejections[i]->inc();
    }
  }

  awaitable<void> health_loop(std::weak_ptr<const Generation> weak, std::size_t c) {
    const Generation* id = weak.lock().get();
    Duration wait = 0ms;
    while (co_await sleep_while_current(0, id, wait)) {
      auto g = weak.lock();
      if (!g) co_return;
      WorkerCluster& cluster = *g->worker_clusters[0][c];
      for (std::size_t i : cluster.health->due()) {
        net::co_spawn(workers[0]->io, probe(g, c, i), net::detached);
      }
      const TimePoint next = cluster.health->next_due();
      wait = next == TimePoint::max() ? Duration(100ms)
                                      : std::clamp<Duration>(next - clock.now(), 1ms, 60s);
    }
  }

  // One active check: GET the cluster's health path on endpoint i; a 2xx passes. A change of
  // health goes to every worker's endpoint set.
  awaitable<void> probe(std::shared_ptr<const Generation> g, std::size_t c, std::size_t i) {
    ClusterShared& shared = *g->clusters[c];
    const balance::HealthCheckConfig& check = *shared.config->health_check;
    Stream stream(workers[0]->io.get_executor());
    error_code ec;
    stream.expires_after(check.timeout);
    co_await stream.async_connect(shared.addresses[i], net::redirect_error(use_awaitable, ec));
    bool passed = false;
    if (!ec) {
      http::request<http::empty_body> request{http::verb::get, check.path, 11};
      request.set(http::field::host, shared.config->endpoints[i].address);
      request.set(http::field::user_agent, "keel-health-check");
      request.keep_alive(false);
      co_await http::async_write(stream, request, net::redirect_error(use_awaitable, ec));
    }
    if (!ec) {
      // The whole answer (up to 64 KiB) is read, so the endpoint is not cut off mid-write.
      beast::flat_buffer buffer;
      http::response_parser<http::string_body> parser;
      parser.body_limit(64 * 1024);
      co_await http::async_read(stream, buffer, parser, net::redirect_error(use_awaitable, ec));
      passed = !ec && parser.get().result_int() / 100 == 2;
    }
    if (current() != g) co_return;  // a reload came meanwhile
    auto change = g->worker_clusters[0][c]->health->record(i, passed);
    if (!change) co_return;
    shared.healthy[i] = change->healthy;
    shared.health_changes_total->inc();
    for (std::size_t w = 1; w < workers.size(); ++w) {
      net::post(workers[w]->io, [g, c, w, i, healthy = change->healthy] {
        g->worker_clusters[w][c]->endpoints.set_healthy(i, healthy);
      });
    }
  }

  void run() {
    start_loops(generation);
    for (std::size_t w = 0; w < workers.size(); ++w) {
      Worker& worker = *workers[w];
      for (std::size_t l = 0; l < worker.acceptors.size(); ++l) {
        net::co_spawn(worker.io, accept_loop(worker, worker.acceptors[l], *listeners[l]),
                      net::detached);
      }
      const bool mirrors = w == mirror_worker;
      worker.thread = std::thread([&worker, mirrors] {
        if (mirrors) {
          // SCHED_IDLE: any other thread that wakes on this CPU preempts a mirror at once, so
          // copies never delay a client (at nice 10 they did: a mirror ran out its slice while
          // a client's request waited, p99 x5). Copies run on spare CPU only; without any,
          // their bounded queue fills and they are dropped and counted.
          sched_param lowest{};
          (void)::pthread_setschedparam(::pthread_self(), SCHED_IDLE, &lowest);
        }
        worker.io.run();
      });
    }
    if (admin_worker) {
      net::co_spawn(admin_worker->io, admin_loop(admin_worker->acceptors[0]), net::detached);
      admin_worker->thread = std::thread([this] { admin_worker->io.run(); });
    }
  }

  void stop(Duration drain) {
    if (stopping.exchange(true)) return;
    auto close_acceptors = [](Worker& worker) {
      net::post(worker.io, [&worker] {
        for (auto& acceptor : worker.acceptors) acceptor.close();
      });
    };
    for (auto& worker : workers) close_acceptors(*worker);
    if (admin_worker) close_acceptors(*admin_worker);
    // Connections between requests close now; the others after their current response.
    for (auto& worker : workers) {
      net::post(worker->io, [w = worker.get()] {
        for (auto [client, idle] : w->clients) {
          if (idle) client->cancel();
        }
      });
    }
    // In-flight requests finish (sessions end after their current response); then the rest
    // is cut.
    const auto deadline = std::chrono::steady_clock::now() + drain;
    for (auto& worker : workers) {
      while (std::chrono::steady_clock::now() < deadline) {
        std::promise<std::uint64_t> open;
        auto answer = open.get_future();
        net::post(worker->io, [&] { open.set_value(worker->open_sessions); });
        if (answer.wait_for(1s) != std::future_status::ready || answer.get() == 0) break;
        std::this_thread::sleep_for(10ms);
      }
    }
    for (auto& worker : workers) {
      worker->work.reset();
      worker->io.stop();
    }
    if (admin_worker) {
      admin_worker->work.reset();
      admin_worker->io.stop();
    }
    for (auto& worker : workers) {
      if (worker->thread.joinable()) worker->thread.join();
    }
    if (admin_worker && admin_worker->thread.joinable()) admin_worker->thread.join();
  }

  awaitable<void> accept_loop(Worker& worker, tcp::acceptor& acceptor, ListenerShared& listener) {
    for (;;) {
      error_code ec;
      Socket socket = co_await acceptor.async_accept(worker.io.get_executor(),
                                                     net::redirect_error(use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;  // EMFILE and friends: keep accepting
      }
      auto slot = try_hold(listener.connections,
                           current()->config.listeners[listener.index].limits.max_connections);
      if (!slot) continue;  // over max_connections: the socket closes here
      socket.set_option(tcp::no_delay(true), ec);
      net::co_spawn(worker.io,
                    session(worker, listener, Stream(std::move(socket)), std::move(*slot)),
                    net::detached);
    }
  }

  // ------------------------------------------------------------------ downstream
  awaitable<void> session(Worker& worker, ListenerShared& listener, Stream client,
                          Held /*connection_slot: held until the session ends*/) {
    ++worker.open_sessions;
    bool& idle = worker.clients[&client];
    beast::flat_buffer buffer;
    std::string peer;
    {
      error_code ec;
      auto remote = client.socket().remote_endpoint(ec);
      if (!ec) peer = remote.address().to_string();
    }
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
      error_code ec;
      // Idle: wait for the first byte of the next request.
      if (buffer.size() == 0) {
        client.expires_after(limits.idle_timeout);
        auto space = buffer.prepare(kChunk);
        idle = true;
        std::size_t n =
            co_await client.async_read_some(space, net::redirect_error(use_awaitable, ec));
        idle = false;
        if (ec) {
          client_done = true;
          break;
        }
        buffer.commit(n);
      }
      // Slowloris: the whole header within header_timeout.
      http::request_parser<http::buffer_body> parser;
      parser.header_limit(limits.max_header_bytes);
      parser.body_limit(limits.max_body_bytes);
      client.expires_after(limits.header_timeout);
      co_await http::async_read_header(client, buffer, parser,
                                       net::redirect_error(use_awaitable, ec));
      if (ec) {
        if (ec == http::error::end_of_stream || ec == beast::error::timeout) {
          client_done = true;
          break;
        }
        Exchange exchange;
        exchange.flag = Flag::kBadRequest;
        http::status status = http::status::bad_request;
        if (ec == http::error::header_limit) status = http::status::request_header_fields_too_large;
        if (ec == http::error::body_limit) status = http::status::payload_too_large;
        co_await local_reply(client, exchange, 11, false, status, "bad_request: " + ec.message());
        break;
      }
      refresh();  // a reload while this request's header came in takes over for it
      keep_going = co_await handle(worker, listener, held, client, buffer, parser, peer);
    }
    error_code ec;
    client.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (!client_done) {
      // Lingering close: read what the client may still be sending (up to 256 KiB, for 1 s)
      // so that closing does not reset the connection before it has read our last response.
      client.expires_after(1s);
      char sink[kChunk];
      for (std::size_t total = 0; total < 256 * 1024 && !ec;) {
        total += co_await client.async_read_some(net::buffer(sink),
                                                 net::redirect_error(use_awaitable, ec));
      }
    }
    worker.clients.erase(&client);
    --worker.open_sessions;
  }

  // One request, from its parsed header to the end of its response. False: close.
  // `generation_held`: the session's, kept by it until this returns.
  awaitable<bool> handle(Worker& worker, ListenerShared& listener,
                         const std::shared_ptr<const Generation>& generation_held, Stream& client,
                         beast::flat_buffer& buffer,
                         http::request_parser<http::buffer_body>& parser, const std::string& peer) {
    auto& request = parser.get();
    const Generation& generation_now = *generation_held;
    const Limits& limits = generation_now.config.listeners[listener.index].limits;
    Exchange exchange;
    exchange.method = std::string(request.method_string());
    exchange.path = std::string(request.target());
    const unsigned version = request.version();
    bool keep_alive = request.keep_alive();
    if (auto id = request["x-request-id"]; !id.empty() && id.size() <= 200) {
      exchange.request_id = std::string(id);
    } else {
      exchange.request_id = Uuid::random_v4(worker.random).to_string();
    }
    if (request.target().size() > kMaxTarget) {
      exchange.flag = Flag::kBadRequest;
      co_await local_reply(client, exchange, version, false, http::status::uri_too_long,
                           "bad_request: request target longer than " + std::to_string(kMaxTarget));
      co_return false;
    }
    if (request.method() == http::verb::unknown || request.method() == http::verb::connect) {
      exchange.flag = Flag::kBadRequest;
      co_await local_reply(client, exchange, version, false, http::status::not_implemented,
                           "bad_request: method not supported");
      co_return false;
    }

    const Route* route = match(generation_now.config.listeners[listener.index], request);
    if (route == nullptr) {
      exchange.flag = Flag::kNoRoute;
      // The body (if any) is not read: close after the reply unless there is none.
      const bool drained = parser.is_done();
      co_await local_reply(client, exchange, version, keep_alive && drained,
                           http::status::not_found, "no_route");
      co_return keep_alive&& drained;
    }
    // A migrating route's stage decides between legacy and modern.
    std::shared_ptr<MigrationState> migration;
    Stage routed_at = Stage::kLegacy;
    bool to_modern = false;
    std::size_t chosen_cluster = 0;
    if (route->migration) {
      migration = generation_now.migrations.at(route);
      routed_at = migration->stage();
      switch (routed_at) {
        case Stage::kLegacy:
        case Stage::kShadow:
          to_modern = false;
          break;
        case Stage::kCanary:
          to_modern = canary_picks_modern(sticky_key(*route->migration, request, peer),
                                          migration->percent());
          break;
        case Stage::kModern:
        case Stage::kRetired:
          to_modern = true;
          break;
      }
      chosen_cluster = cluster_index(
          generation_now.config, to_modern ? route->migration->modern : route->migration->legacy);
    } else {
      chosen_cluster = pick_cluster(worker, generation_now.config, *route);
    }
    WorkerCluster& cluster = *generation_now.worker_clusters[worker.index][chosen_cluster];
    const Cluster& cluster_config = *cluster.shared->config;
    exchange.cluster = cluster_config.name;
    cluster.shared->requests_total->inc();

    // Expect: 100-continue is answered here, once the request is admitted by routing.
    if (beast::iequals(request[http::field::expect], "100-continue") && !parser.is_done()) {
      http::response<http::empty_body> go_on{http::status::continue_, version};
      error_code ec;
      client.expires_after(limits.idle_timeout);
      co_await http::async_write(client, go_on, net::redirect_error(use_awaitable, ec));
      if (ec) co_return false;
    }

    // The request goes upstream as parsed, its header edited in place (no copy): hop-by-hop
    // headers gone, forwarding headers added. What the client's side needs is kept first.
    const http::verb method = request.method();
    const bool chunked_in = request.chunked();
    strip_hop_by_hop(request.base());
    request.version(11);
    request.keep_alive(true);
    if (auto forwarded = request["x-forwarded-for"]; forwarded.empty()) {
      request.set("x-forwarded-for", peer);
    } else {
      request.set("x-forwarded-for", std::string(sv(forwarded)) + ", " + peer);
    }
    request.set("x-forwarded-proto", "http");
    request.set("x-request-id", exchange.request_id);

    // A body known to be short is held, so that the request can be retried; anything else
    // streams through once.
    std::string held_body;
    bool replayable = true;
    const auto length = parser.content_length();
    if (!parser.is_done()) {
      if (length && *length <= limits.retry_buffer_bytes) {
        auto read = co_await read_body(client, buffer, parser, held_body, limits);
        if (!read) {
          exchange.flag = Flag::kBadRequest;
          co_await local_reply(client, exchange, version, false, http::status::bad_request,
                               "bad_request: " + read.error().message());
          co_return false;
        }
        request.content_length(held_body.size());
      } else {
        replayable = false;
        if (length) {
          request.content_length(*length);
        } else {
          request.chunked(true);
        }
      }
    } else if (length) {
      request.content_length(*length);  // 0
    } else if (chunked_in) {
      request.content_length(0);  // an empty chunked body, already read
    }

    const RetryPolicy& retry = route->retry ? *route->retry : cluster_config.retry;
    const bool may_retry = replayable && (idempotent(method) || retry.allow_non_idempotent);

    // Shadow: a copy of the request goes to modern once legacy has answered, and the two
    // answers are compared. The copy is kept now, before the request goes upstream.
    std::optional<Mirror> mirror;
    if (migration && migration->stage() == Stage::kShadow && replayable &&
        held_body.size() <= route->migration->diff.max_body_bytes &&
        (idempotent(method) || route->migration->mirror_non_idempotent) &&
        migration->begin_mirror()) {
      mirror.emplace(Mirror{.state = migration,
                            .header = request.base(),
                            .body = held_body,
                            .request_line = exchange.method + " " + exchange.path});
    }
    const auto deadline = std::chrono::steady_clock::now() + route->timeout;
    std::vector<std::size_t> avoid;
    std::size_t answered_by = 0;  // the endpoint of the last attempt
    std::unique_ptr<Upstream> upstream;
    std::optional<http::response_parser<http::buffer_body>> response_parser;

    auto request_slot = try_hold(cluster.shared->requests, cluster_config.limits.max_requests);
    if (!request_slot) {
      cluster.shared->overflow_total->inc();
      exchange.flag = Flag::kOverflow;
    }
    std::optional<Held> retry_slot;
    if (request_slot) cluster.shared->retry_budget->deposit();
    while (request_slot) {
      ++exchange.attempts;
      std::optional<resilience::BreakerPermit> permit;
      if (cluster.shared->breaker) {
        auto admission = cluster.shared->breaker->acquire();
        if (!admission) {
          cluster.shared->breaker_rejections_total->inc();
          exchange.flag = Flag::kBreakerOpen;
          break;
        }
        permit.emplace(std::move(admission).permit());
      }
      auto picked = cluster.balancer->pick({.hash = std::nullopt, .avoid = avoid});
      if (!picked) {
        if (permit)
          cluster.shared->breaker->record(std::move(*permit), resilience::Outcome::kIgnored, {});
        exchange.flag = Flag::kNoHealthy;
        break;
      }
      const std::size_t endpoint = *picked;
      exchange.upstream = cluster_config.endpoints[endpoint].address;
      cluster.shared->endpoint_requests[endpoint]->inc();
      cluster.endpoints.on_start(endpoint);
      const auto try_start = std::chrono::steady_clock::now();
      const auto try_deadline = std::min(deadline, try_start + cluster_config.per_try_timeout);
      Flag failure = Flag::kNone;
      response_parser.emplace();
      upstream = co_await send(worker, cluster, endpoint, request, held_body, client, buffer,
                               parser, *response_parser, try_deadline, failure);
      answered_by = endpoint;
      const auto latency = std::chrono::steady_clock::now() - try_start;
      unsigned status = upstream ? response_parser->get().result_int() : 0;
      const bool server_error = status >= 500;
      const bool gateway_error = status == 502 || status == 503 || status == 504;
      const bool failed = failure != Flag::kNone || server_error;
      cluster.endpoints.on_complete(endpoint, !failed, latency);
      cluster.shared->endpoint_latency[endpoint]->observe(
          std::chrono::duration<double>(latency).count());
      if (failed) cluster.shared->endpoint_failures[endpoint]->inc();
      if (cluster.outlier && failure != Flag::kOverflow && failure != Flag::kDownstreamReset &&
          failure != Flag::kBadRequest) {
        const auto kind = (failure != Flag::kNone || gateway_error)
                              ? balance::ResponseClass::kGatewayError
                          : server_error ? balance::ResponseClass::kServerError
                                         : balance::ResponseClass::kSuccess;
        if (cluster.outlier->record(endpoint, kind)) {
          cluster.shared->endpoint_ejections[endpoint]->inc();
        }
      }
      if (permit) {
        cluster.shared->breaker->record(
            std::move(*permit),
            failed ? resilience::Outcome::kFailure : resilience::Outcome::kSuccess, latency);
      }
      const bool retriable =
          (failure == Flag::kConnectFailure && retry.on_connect_failure) ||
          ((failure == Flag::kReset || failure == Flag::kTimeout) && retry.on_reset) ||
          (server_error && retry.on_5xx) || (gateway_error && retry.on_gateway_error) ||
          (status != 0 && std::find(retry.status_codes.begin(), retry.status_codes.end(), status) !=
                              retry.status_codes.end());
      const bool time_left = std::chrono::steady_clock::now() < deadline;
      if (!retriable || !may_retry || exchange.attempts > retry.num_retries || !time_left) {
        exchange.flag = failure;
        break;
      }
      if (!retry_slot) {
        retry_slot = try_hold(cluster.shared->retries, cluster_config.limits.max_retries);
        if (!retry_slot) {  // the retry limit is full: give this answer
          exchange.flag = failure;
          cluster.shared->overflow_total->inc();
          break;
        }
      }
      if (!cluster.shared->retry_budget->try_withdraw()) {  // counted by the budget's metrics
        exchange.flag = failure;
        break;
      }
      cluster.shared->retries_total->inc();
      upstream.reset();  // its response (if any) is dropped with the connection
      avoid.push_back(endpoint);
      co_await backoff(worker, retry, exchange.attempts, deadline);
    }

    // A route at modern with fallback_to_legacy: when modern failed, legacy answers instead.
    WorkerCluster* answering = &cluster;
    if (route->migration && route->migration->fallback_to_legacy && routed_at == Stage::kModern &&
        may_retry && exchange.flag != Flag::kDownstreamReset &&
        exchange.flag != Flag::kBadRequest &&
        (!upstream || response_parser->get().result_int() >= 500) &&
        std::chrono::steady_clock::now() < deadline) {
      WorkerCluster& legacy = *generation_now.worker_clusters[worker.index][cluster_index(
          generation_now.config, route->migration->legacy)];
      if (auto picked = legacy.balancer->pick({})) {
        // Modern's failure still counts for its guard rails.
        migration->count_answer(true, upstream ? response_parser->get().result_int() : 502,
                                std::chrono::steady_clock::now() - exchange.start, routed_at);
        upstream.reset();  // modern's answer, if any, goes with its connection
        ++exchange.attempts;
        Flag failure = Flag::kNone;
        const auto try_start = std::chrono::steady_clock::now();
        legacy.shared->requests_total->inc();
        legacy.endpoints.on_start(*picked);
        response_parser.emplace();
        upstream = co_await send(worker, legacy, *picked, request, held_body, client, buffer,
                                 parser, *response_parser, deadline, failure);
        const unsigned status = upstream ? response_parser->get().result_int() : 0;
        legacy.endpoints.on_complete(*picked, failure == Flag::kNone && status < 500,
                                     std::chrono::steady_clock::now() - try_start);
        answering = &legacy;
        answered_by = *picked;
        to_modern = false;  // legacy traffic at modern: it keeps the route from being retired
        exchange.cluster = legacy.shared->config->name;
        exchange.upstream = legacy.shared->config->endpoints[*picked].address;
        exchange.flag = failure;
      }
    }

    if (!upstream) {
      http::status status = http::status::service_unavailable;
      std::string reason;
      switch (exchange.flag) {
        case Flag::kConnectFailure:
          status = http::status::bad_gateway;
          reason = "upstream_connect_failure";
          break;
        case Flag::kReset:
          status = http::status::bad_gateway;
          reason = "upstream_reset";
          break;
        case Flag::kTimeout:
          status = http::status::gateway_timeout;
          reason = "upstream_timeout";
          break;
        case Flag::kOverflow:
          reason = "overflow";
          break;
        case Flag::kBreakerOpen:
          reason = "breaker_open";
          break;
        case Flag::kDownstreamReset:
          finish(exchange, *answering, 0);
          co_return false;
        case Flag::kBadRequest:
          status = http::status::bad_request;
          reason = "bad_request: malformed request body";
          break;
        default:
          reason = "no_healthy_endpoint";
          break;
      }
      // The request's body may be half read: only a fully read request keeps the connection.
      const bool reusable = keep_alive && parser.is_done();
      co_await local_reply(client, exchange, version, reusable, status, reason, answering);
      if (mirror) mirror->state->end_mirror();  // no answer from legacy to compare with
      if (migration) {
        migration->count_answer(to_modern, static_cast<unsigned>(status),
                                std::chrono::steady_clock::now() - exchange.start, routed_at);
      }
      co_return reusable;
    }

    // Relay the response as parsed, its header edited in place; the body as it comes.
    auto& response = response_parser->get();
    const bool upstream_keeps = response.keep_alive();
    const bool chunked_out = response.chunked();
    const auto content_length = response_parser->content_length();
    strip_hop_by_hop(response.base());
    response.version(version);
    keep_alive = keep_alive && parser.is_done() && !stopping.load(std::memory_order_relaxed);
    if (chunked_out) {
      response.chunked(true);
    } else if (content_length) {
      response.content_length(*content_length);
    } else if (!response_parser->is_done() && !response_parser->skip()) {
      keep_alive = false;  // the body ends when the upstream closes: so must we
    }
    response.keep_alive(keep_alive);
    response.set("x-request-id", exchange.request_id);
    exchange.status = response.result_int();
    if (mirror) {
      mirror->legacy_endpoint = answered_by;
      mirror->legacy = answer_of(response);
    }
    const bool relayed =
        co_await relay_response(client, *upstream, *response_parser, chunked_out || content_length,
                                limits, deadline, mirror ? &mirror->legacy.body : nullptr,
                                route->migration ? route->migration->diff.max_body_bytes : 0);
    finish(exchange, *answering, exchange.status);
    if (migration) {
      migration->count_answer(to_modern, exchange.status,
                              std::chrono::steady_clock::now() - exchange.start, routed_at);
    }
    if (mirror) {
      if (relayed) {
        const std::size_t modern = cluster_index(generation_now.config, route->migration->modern);
        Worker& mirrors = *workers[mirror_worker];
        net::co_spawn(mirrors.io,
                      shadow(mirrors, generation_held, modern,
                             cluster_index(generation_now.config, route->migration->legacy),
                             std::move(*mirror), route->timeout, &route->migration->diff,
                             route->migration->noise_baseline),
                      net::detached);
      } else {
        mirror->state->end_mirror();
      }
    }
    if (relayed && upstream_keeps && response_parser->is_done()) {
      park(worker, std::move(upstream));
    }
    co_return relayed&& keep_alive;
  }

  // ------------------------------------------------------------------ upstream
  // Sends the request on a pooled or new connection and reads the response header. Null, with
  // `failure` set, when that did not work out.
  // A pooled connection to the endpoint, or a new one (within the cluster's max_connections and
  // connect timeout). Null, with `failure` set, when there is none.
  static awaitable<std::unique_ptr<Upstream>> acquire(
      Worker& worker, WorkerCluster& cluster, std::size_t endpoint,
      std::chrono::steady_clock::time_point deadline, Flag& failure) {
    const Cluster& cluster_config = *cluster.shared->config;
    auto& idle = worker.pool(*cluster.shared, endpoint);
    auto take_idle = [&]() -> std::unique_ptr<Upstream> {
      while (!idle.empty()) {
        std::unique_ptr<Upstream> pooled = std::move(idle.back());
        idle.pop_back();
        if (pooled->stream.socket().is_open()) return pooled;
      }
      return nullptr;
    };
    if (auto pooled = take_idle()) co_return pooled;
    auto full = [&] {
      return cluster.shared->connections.load(std::memory_order_relaxed) >=
             cluster_config.limits.max_connections;
    };
    if (full()) {
      // At the connection limit: wait (up to max_pending requests, until the connect timeout or
      // the deadline) for a connection to come back to the pool or to close.
      auto waiting = try_hold(cluster.shared->pending, cluster_config.limits.max_pending);
      if (!waiting) {
        failure = Flag::kOverflow;
        co_return nullptr;
      }
      const auto give_up =
          std::min(deadline, std::chrono::steady_clock::now() + cluster_config.connect_timeout);
      net::steady_timer timer(worker.io);
      while (full() && std::chrono::steady_clock::now() < give_up) {
        timer.expires_after(std::chrono::milliseconds(2));
        error_code ignored;
        co_await timer.async_wait(net::redirect_error(use_awaitable, ignored));
        if (auto pooled = take_idle()) co_return pooled;
      }
      if (full()) {
        failure = Flag::kOverflow;
        co_return nullptr;
      }
    }
    auto upstream = std::make_unique<Upstream>(worker.io, cluster.shared, endpoint);
    error_code ec;
    upstream->stream.expires_after(std::min<Duration>(
        cluster_config.connect_timeout,
        std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now())));
    co_await upstream->stream.async_connect(cluster.shared->addresses[endpoint],
                                            net::redirect_error(use_awaitable, ec));
    if (ec) {
      cluster.shared->connect_failures_total->inc();
      failure = Flag::kConnectFailure;
      co_return nullptr;
    }
    upstream->stream.socket().set_option(tcp::no_delay(true), ec);
    co_return upstream;
  }

  awaitable<std::unique_ptr<Upstream>> send(
      Worker& worker, WorkerCluster& cluster, std::size_t endpoint,
      http::request<http::buffer_body>& request, const std::string& held_body, Stream& client,
      beast::flat_buffer& client_buffer, http::request_parser<http::buffer_body>& client_parser,
      http::response_parser<http::buffer_body>& response_parser,
      std::chrono::steady_clock::time_point deadline, Flag& failure) {
    auto upstream = co_await acquire(worker, cluster, endpoint, deadline, failure);
    if (!upstream) co_return nullptr;
    auto remaining = [&] {
      return std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now());
    };
    error_code ec;
    // `request` is the client parser's own message: the serializer writes what the parser
    // reads into its body buffer.
    http::request_serializer<http::buffer_body> serializer(request);
    upstream->stream.expires_after(remaining());
    if (client_parser.is_done()) {
      // Held or empty: header and body in one write.
      request.body().data = held_body.empty() ? nullptr : const_cast<char*>(held_body.data());
      request.body().size = held_body.size();
      request.body().more = false;
      co_await write(upstream->stream, serializer, ec);
    } else {
      // Streamed: client → upstream, a chunk at a time.
      co_await write(upstream->stream, serializer, ec, true);
      char chunk[kChunk];
      while (!ec && !client_parser.is_done()) {
        request.body().data = chunk;
        request.body().size = sizeof chunk;
        client.expires_after(remaining());
        error_code read_ec;
        co_await http::async_read(client, client_buffer, client_parser,
                                  net::redirect_error(use_awaitable, read_ec));
        if (read_ec == http::error::need_buffer) read_ec = {};
        if (read_ec) {
          // A malformed body (bad chunk, over the limit) is the client's error to hear about;
          // a closed or silent socket means it went away.
          failure = read_ec.category() == error_code(http::error::bad_chunk).category()
                        ? Flag::kBadRequest
                        : Flag::kDownstreamReset;
          co_return nullptr;
        }
        request.body().size = sizeof chunk - request.body().size;
        request.body().data = chunk;
        request.body().more = !client_parser.is_done();
        upstream->stream.expires_after(remaining());
        co_await write(upstream->stream, serializer, ec);
      }
    }
    if (!ec) {
      response_parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      if (request.method() == http::verb::head) response_parser.skip(true);  // no body follows
      upstream->stream.expires_after(remaining());
      co_await http::async_read_header(upstream->stream, upstream->buffer, response_parser,
                                       net::redirect_error(use_awaitable, ec));
    }
    if (ec) {
      // Includes a pooled connection the upstream closed meanwhile: a reset, which
      // retry_on reset covers.
      failure = ec == beast::error::timeout ? Flag::kTimeout : Flag::kReset;
      co_return nullptr;
    }
    co_return upstream;
  }

  // Streams the response body upstream → client. False when either side failed.
  // `framed`: the body has its own length (chunked or Content-Length), rather than ending
  // when the upstream closes.
  // `capture`: keeps a copy of the first `capture_limit` body bytes (for a shadow diff).
  awaitable<bool> relay_response(Stream& client, Upstream& upstream,
                                 http::response_parser<http::buffer_body>& parser, bool framed,
                                 const Limits& limits,
                                 std::chrono::steady_clock::time_point deadline,
                                 std::string* capture = nullptr, std::size_t capture_limit = 0) {
    auto& response = parser.get();
    http::response_serializer<http::buffer_body> serializer(response);
    error_code ec;
    // The header goes with the first body bytes when they are already here (one write, one
    // packet); on its own when the body is yet to come.
    if (upstream.buffer.size() == 0 && !parser.is_done()) {
      client.expires_after(limits.idle_timeout);
      co_await write(client, serializer, ec, true);
      if (ec) co_return false;
    }
    char chunk[kChunk];
    bool wrote_last = false;
    while (!wrote_last) {
      if (!parser.is_done()) {
        response.body().data = chunk;
        response.body().size = sizeof chunk;
        upstream.stream.expires_after(std::max<Duration>(
            1ms,
            std::chrono::duration_cast<Duration>(deadline - std::chrono::steady_clock::now())));
        co_await http::async_read(upstream.stream, upstream.buffer, parser,
                                  net::redirect_error(use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        if (ec == http::error::end_of_stream && !framed) ec = {};  // ended by the close
        if (ec) co_return false;
        response.body().size = sizeof chunk - response.body().size;
        response.body().data = chunk;
        response.body().more = !parser.is_done();
        if (capture != nullptr && capture->size() < capture_limit) {
          capture->append(chunk, std::min(response.body().size, capture_limit - capture->size()));
        }
      } else {
        response.body().data = nullptr;
        response.body().size = 0;
        response.body().more = false;
      }
      wrote_last = !response.body().more;
      client.expires_after(limits.idle_timeout);
      co_await write(client, serializer, ec);
      if (ec) co_return false;
    }
    co_return true;
  }

  // Writes what `serializer` has to give now (the header, body bytes, chunk framing) as one
  // contiguous send when it fits in kFlat bytes: Beast hands out every header field as a
  // buffer of its own, and a dozen small iovecs cost the kernel more than one small copy here.
  // Bigger writes go out as they are. With `header_only`, stops after the header.
  template <bool isRequest>
  static awaitable<void> write(Stream& stream,
                               http::serializer<isRequest, http::buffer_body>& serializer,
                               error_code& ec, bool header_only = false) {
    std::array<char, kFlat> flat;
    std::size_t used = 0;
    bool too_big = false;
    if (header_only) serializer.split(true);
    while (!serializer.is_done() && !(header_only && serializer.is_header_done())) {
      serializer.next(ec, [&](error_code&, const auto& buffers) {
        const std::size_t n = beast::buffer_bytes(buffers);
        if (used + n > flat.size()) {
          too_big = true;
          return;
        }
        net::buffer_copy(net::buffer(flat.data() + used, n), buffers);
        used += n;
        serializer.consume(n);
      });
      if (ec == http::error::need_buffer) {
        ec = {};
        break;
      }
      if (ec || too_big) break;
    }
    if (ec) co_return;
    if (used > 0) {
      co_await net::async_write(stream, net::buffer(flat.data(), used),
                                net::redirect_error(use_awaitable, ec));
    }
    if (ec || !too_big) co_return;
    if (header_only) {
      co_await http::async_write_header(stream, serializer, net::redirect_error(use_awaitable, ec));
    } else {
      co_await http::async_write(stream, serializer, net::redirect_error(use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
    }
  }

  static void park(Worker& worker, std::unique_ptr<Upstream> upstream) {
    auto& idle = worker.pool(*upstream->cluster, upstream->endpoint);
    if (idle.size() < upstream->cluster->config->max_idle_connections) {
      upstream->stream.expires_never();
      idle.push_back(std::move(upstream));
    }
  }

  awaitable<void> backoff(Worker& worker, const RetryPolicy& retry, std::uint32_t attempt,
                          std::chrono::steady_clock::time_point deadline) {
    // Full jitter on base × 2^(attempt-1), capped, and never past the deadline.
    double cap = std::min<double>(static_cast<double>(retry.max_interval.count()),
                                  static_cast<double>(retry.base_interval.count()) *
                                      static_cast<double>(1u << std::min(attempt - 1, 16u)));
    auto wait = std::chrono::steady_clock::duration(
        static_cast<std::int64_t>(cap * worker.random.uniform01()));
    auto until = std::min(deadline, std::chrono::steady_clock::now() + wait);
    net::steady_timer timer(worker.io, until);
    error_code ec;
    co_await timer.async_wait(net::redirect_error(use_awaitable, ec));
  }

  // Sends a shadow copy to the modern cluster, reads its answer and compares it with legacy's.
  // Runs after the client has its answer; nothing here reaches the client.
  awaitable<void> shadow(Worker& worker, std::shared_ptr<const Generation> g,
                         std::size_t modern_cluster, std::size_t legacy_cluster, Mirror mirror,
                         Duration timeout, const DiffConfig* diff, bool noise_baseline) {
    struct Done {
      MigrationState& state;
      ~Done() { state.end_mirror(); }
    } done{*mirror.state};
    WorkerCluster& cluster = *g->worker_clusters[worker.index][modern_cluster];
    auto picked = cluster.balancer->pick({});
    if (!picked) {
      mirror.state->record_mirror_failure();
      co_return;
    }
    auto modern = co_await fetch(worker, cluster, *picked, mirror.header, mirror.body, timeout);
    if (!modern) {
      mirror.state->record_mirror_failure();
      co_return;
    }
    auto fields = diff_answers(mirror.legacy, *modern, *diff);
    std::vector<std::string> noise;
    if (noise_baseline && !fields.empty()) {
      // Legacy once more: where its two answers differ is noise, not modern's fault.
      WorkerCluster& legacy = *g->worker_clusters[worker.index][legacy_cluster];
      const std::size_t first[] = {mirror.legacy_endpoint};
      if (auto again = legacy.balancer->pick({.avoid = first})) {
        auto second = co_await fetch(worker, legacy, *again, mirror.header, mirror.body, timeout);
        if (second) {
          noise = diff_answers(mirror.legacy, *second, *diff);
          std::erase_if(fields, [&](const std::string& field) {
            return std::find(noise.begin(), noise.end(), field) != noise.end();
          });
        }
      }
    }
    DiffSample sample;
    if (!fields.empty()) {
      sample = {.request_line = mirror.request_line,
                .fields = fields,
                .legacy_status = mirror.legacy.status,
                .modern_status = modern->status,
                .legacy_body = mirror.legacy.body,
                .modern_body = modern->body};
    }
    mirror.state->record_diff(fields, std::move(sample), noise);
  }

  // Sends a copy of a request (marked x-keel-shadow) to endpoint i of `cluster` and reads the
  // whole answer; nullopt when that failed. The connection goes back to the pool after.
  static awaitable<std::optional<Answer>> fetch(Worker& worker, WorkerCluster& cluster,
                                                std::size_t endpoint,
                                                const http::request_header<>& header,
                                                const std::string& body, Duration timeout) {
    Flag failure = Flag::kNone;
    cluster.endpoints.on_start(endpoint);
    const auto started = std::chrono::steady_clock::now();
    auto upstream = co_await acquire(worker, cluster, endpoint, started + timeout, failure);
    error_code ec = upstream ? error_code{} : error_code(net::error::connection_refused);
    http::response_parser<http::string_body> parser;
    if (upstream) {
      http::request<http::string_body> request(header);
      request.set("x-keel-shadow", "1");  // so the service can tell a copy from the real thing
      request.body() = body;
      request.prepare_payload();
      upstream->stream.expires_after(timeout);
      co_await http::async_write(upstream->stream, request, net::redirect_error(use_awaitable, ec));
      parser.body_limit(16 * 1024 * 1024);
      if (!ec) {
        co_await http::async_read(upstream->stream, upstream->buffer, parser,
                                  net::redirect_error(use_awaitable, ec));
      }
    }
    cluster.endpoints.on_complete(endpoint, !ec && parser.get().result_int() < 500,
                                  std::chrono::steady_clock::now() - started);
    if (ec) co_return std::nullopt;
    auto& response = parser.get();
    Answer answer = answer_of(response);
    answer.body = std::move(response.body());
    if (response.keep_alive()) park(worker, std::move(upstream));
    co_return answer;
  }

  // ------------------------------------------------------------------ helpers
  static bool path_matches(const Route& route, std::string_view target) {
    std::string_view path = target.substr(0, target.find('?'));
    if (!route.prefix.empty()) return path.substr(0, route.prefix.size()) == route.prefix;
    if (!route.exact.empty()) return path == route.exact;
    return route.regex && std::regex_match(path.begin(), path.end(), *route.regex);
  }

  static const Route* match(const Listener& listener,
                            const http::request<http::buffer_body>& request) {
    for (const auto& route : listener.routes) {
      if (!route.method.empty() && request.method_string() != route.method) continue;
      if (!path_matches(route, sv(request.target()))) continue;
      bool headers_match = true;
      for (const auto& header : route.headers) {
        auto it = request.find(header.name);
        if (it == request.end() || (!header.present && it->value() != header.value)) {
          headers_match = false;
          break;
        }
      }
      if (headers_match) return &route;
    }
    return nullptr;
  }

  static std::size_t pick_cluster(Worker& worker, const ProxyConfig& config, const Route& route) {
    const WeightedCluster* chosen = &route.clusters.front();
    if (route.clusters.size() > 1) {
      std::uint64_t total = 0;
      for (const auto& c : route.clusters) total += c.weight;
      std::uint64_t ticket = worker.random.uniform(total);
      for (const auto& c : route.clusters) {
        if (ticket < c.weight) {
          chosen = &c;
          break;
        }
        ticket -= c.weight;
      }
    }
    return cluster_index(config, chosen->cluster);
  }

  static std::size_t cluster_index(const ProxyConfig& config, const std::string& name) {
    for (std::size_t i = 0; i < config.clusters.size(); ++i) {
      if (config.clusters[i].name == name) return i;
    }
    return 0;  // unreachable: the config was checked
  }

  // The canary's sticky key: the configured header or cookie, else the client's address.
  static std::string sticky_key(const MigrationConfig& migration,
                                const http::request<http::buffer_body>& request,
                                const std::string& peer) {
    if (migration.sticky.kind == StickyKey::Kind::kHeader) {
      if (auto value = request[migration.sticky.name]; !value.empty()) return std::string(value);
    } else if (migration.sticky.kind == StickyKey::Kind::kCookie) {
      const std::string_view cookies = sv(request[http::field::cookie]);
      const std::string wanted = migration.sticky.name + "=";
      for (std::size_t at = 0; at < cookies.size();) {
        std::size_t end = cookies.find(';', at);
        if (end == std::string_view::npos) end = cookies.size();
        std::string_view pair = cookies.substr(at, end - at);
        pair.remove_prefix(std::min(pair.find_first_not_of(' '), pair.size()));
        if (pair.substr(0, wanted.size()) == wanted) return std::string(pair.substr(wanted.size()));
        at = end + 1;
      }
    }
    return peer;
  }

  static awaitable<Status> read_body(Stream& client, beast::flat_buffer& buffer,
                                     http::request_parser<http::buffer_body>& parser,
                                     std::string& out, const Limits& limits) {
    char chunk[kChunk];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      client.expires_after(limits.idle_timeout);
      error_code ec;
      co_await http::async_read(client, buffer, parser, net::redirect_error(use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) co_return Error(errc::io_error, "reading the request body: " + ec.message());
      out.append(chunk, sizeof chunk - parser.get().body().size);
    }
    co_return Status{};
  }

  awaitable<void> local_reply(Stream& client, Exchange& exchange, unsigned version, bool keep_alive,
                              http::status status, std::string reason,
                              WorkerCluster* cluster = nullptr) {
    http::response<http::string_body> response{status, version < 10 ? 11 : version};
    response.set(http::field::content_type, "text/plain");
    response.set("x-keel-reason", reason.substr(0, reason.find(':')));
    if (!exchange.request_id.empty()) response.set("x-request-id", exchange.request_id);
    response.body() = reason + "\n";
    response.keep_alive(keep_alive);
    response.prepare_payload();
    error_code ec;
    client.expires_after(5s);
    co_await http::async_write(client, response, net::redirect_error(use_awaitable, ec));
    exchange.status = static_cast<unsigned>(status);
    if (cluster != nullptr) {
      finish(exchange, *cluster, exchange.status);
    } else {
      log(exchange);
    }
  }

  void finish(Exchange& exchange, WorkerCluster& cluster, unsigned status) {
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - exchange.start).count();
    cluster.shared->latency->observe(seconds);
    if (status >= 100 && status < 600) cluster.shared->responses[status / 100]->inc();
    log(exchange);
  }

  void log(const Exchange& exchange) {
    if (access_log == nullptr) return;
    const auto now = std::chrono::system_clock::now();
    nlohmann::json line = {
        {"time_ms",
         std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count()},
        {"request_id", exchange.request_id},
        {"method", exchange.method},
        {"path", exchange.path},
        {"status", exchange.status},
        {"duration_ms", std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                                  exchange.start)
                            .count()},
        {"cluster", exchange.cluster},
        {"upstream", exchange.upstream},
        {"attempts", exchange.attempts},
        {"flags", flag_code(exchange.flag)}};
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::lock_guard lock(log_mutex);
    *access_log << text << '\n';
    access_log->flush();
  }

  // ------------------------------------------------------------------ admin
  awaitable<void> admin_loop(tcp::acceptor& acceptor) {
    for (;;) {
      error_code ec;
      Socket socket = co_await acceptor.async_accept(admin_worker->io.get_executor(),
                                                     net::redirect_error(use_awaitable, ec));
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;
      }
      net::co_spawn(admin_worker->io, admin_session(Stream(std::move(socket))), net::detached);
    }
  }

  awaitable<void> admin_session(Stream stream) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(16 * 1024);
      parser.body_limit(64 * 1024);
      error_code ec;
      stream.expires_after(30s);
      co_await http::async_read(stream, buffer, parser, net::redirect_error(use_awaitable, ec));
      if (ec) break;
      auto& request = parser.get();
      http::response<http::string_body> response{http::status::ok, request.version()};
      std::string_view path = sv(request.target());
      path = path.substr(0, path.find('?'));
      response.set(http::field::content_type, "text/plain; charset=utf-8");
      if (path == "/healthz") {
        response.body() = "ok\n";
      } else if (path == "/ready") {
        const bool ready = !stopping.load();
        response.result(ready ? http::status::ok : http::status::service_unavailable);
        response.body() = ready ? "ready\n" : "draining\n";
      } else if (path == "/metrics") {
        response.set(http::field::content_type, "text/plain; version=0.0.4");
        response.body() = registry.render_prometheus();
      } else if (path == "/clusters") {
        response.set(http::field::content_type, "application/json");
        response.body() = clusters_json() + "\n";
      } else if (path == "/config") {
        response.set(http::field::content_type, "application/json");
        response.body() = config_json() + "\n";
      } else if (path == "/migration" && request.method() == http::verb::get) {
        response.set(http::field::content_type, "application/json");
        response.body() = migration_store->report_json() + "\n";
      } else if (path == "/migration") {
        // POST /migration?route=NAME&stage=canary&percent=20
        auto query = parse_query(sv(request.target()));
        const std::string route_name = query["route"];
        const auto stage = parse_stage(query["stage"]);
        const double percent = std::atof(query["percent"].c_str());
        Status changed;
        if (request.method() != http::verb::post) {
          changed = Error(errc::invalid_argument, "use POST to change a stage");
        } else if (!stage) {
          changed = Error(errc::invalid_argument,
                          "stage= must be legacy, shadow, canary, modern or retired");
        } else {
          changed = migration_store->set_stage(route_name, *stage, percent);
        }
        if (changed) {
          log_event("migration",
                    route_name + " -> " + to_string(*stage) +
                        (*stage == Stage::kCanary ? " " + query["percent"] + "%" : ""));
          response.set(http::field::content_type, "application/json");
          response.body() = migration_store->find(route_name)->report_json() + "\n";
        } else {
          response.result(http::status::bad_request);
          response.body() = changed.error().message() + "\n";
        }
      } else if (path == "/reload") {
        // POST only: a reload changes what the proxy does.
        std::function<Status()> reloader;
        {
          std::lock_guard lock(reload_mutex);
          reloader = reload_hook;
        }
        if (request.method() != http::verb::post) {
          response.result(http::status::method_not_allowed);
          response.set(http::field::allow, "POST");
          response.body() = "POST /reload re-reads the config file\n";
        } else if (!reloader) {
          response.result(http::status::not_implemented);
          response.body() = "this proxy was not started from a config file\n";
        } else if (auto status = reloader(); !status) {
          response.result(http::status::bad_request);
          response.body() = "reload refused, still serving the previous config:\n" +
                            status.error().message() + "\n";
        } else {
          response.body() = "reloaded\n";
        }
      } else if (path == "/") {
        response.set(http::field::content_type, "text/html; charset=utf-8");
        response.body() = status_page();
      } else {
        response.result(http::status::not_found);
        response.body() =
            "not found; try /, /healthz, /ready, /metrics, /clusters, /config, POST /reload\n";
      }
      response.keep_alive(request.keep_alive());
      response.prepare_payload();
      co_await http::async_write(stream, response, net::redirect_error(use_awaitable, ec));
      if (ec || !response.keep_alive()) break;
    }
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  // "a=1&b=two" after the '?', not percent-decoded (names and stages need no escaping).
  static std::map<std::string, std::string> parse_query(std::string_view target) {
    std::map<std::string, std::string> out;
    const auto question = target.find('?');
    if (question == std::string_view::npos) return out;
    std::string_view query = target.substr(question + 1);
    while (!query.empty()) {
      const auto amp = query.find('&');
      const std::string_view pair = query.substr(0, amp);
      const auto equals = pair.find('=');
      out[std::string(pair.substr(0, equals))] =
          equals == std::string_view::npos ? "" : std::string(pair.substr(equals + 1));
      if (amp == std::string_view::npos) break;
      query.remove_prefix(amp + 1);
    }
    return out;
  }

  // An operator's change, on stderr (the access log is for requests).
  static void log_event(const char* what, const std::string& text) {
    std::fprintf(stderr, "keel proxy: %s: %s\n", what, text.c_str());
  }

  std::string clusters_json() const {
    auto now = current();
    nlohmann::json out = nlohmann::json::array();
    for (const auto& cluster : now->clusters) {
      nlohmann::json endpoints = nlohmann::json::array();
      for (std::size_t i = 0; i < cluster->config->endpoints.size(); ++i) {
        endpoints.push_back({{"address", cluster->config->endpoints[i].address},
                             {"weight", cluster->config->endpoints[i].weight},
                             {"healthy", cluster->healthy[i].load()},
                             {"ejections", cluster->endpoint_ejections[i]->value()},
                             {"requests", cluster->endpoint_requests[i]->value()},
                             {"failures", cluster->endpoint_failures[i]->value()}});
      }
      out.push_back({{"name", cluster->config->name},
                     {"policy", cluster->config->load_balancer.policy},
                     {"breaker", cluster->breaker ? to_string(cluster->breaker->state()) : "none"},
                     {"active_requests", cluster->requests.load()},
                     {"connections", cluster->connections.load()},
                     {"requests", cluster->requests_total->value()},
                     {"retries", cluster->retries_total->value()},
                     {"overflow", cluster->overflow_total->value()},
                     {"endpoints", endpoints}});
    }
    return out.dump(2);
  }

  std::string config_json() const {
    auto now = current();
    nlohmann::json listeners_json = nlohmann::json::array();
    for (const auto& listener : listeners) {
      const Listener& listener_config = now->config.listeners[listener->index];
      nlohmann::json routes = nlohmann::json::array();
      for (const auto& route : listener_config.routes) {
        nlohmann::json targets = nlohmann::json::array();
        for (const auto& c : route.clusters)
          targets.push_back({{"cluster", c.cluster}, {"weight", c.weight}});
        routes.push_back({{"name", route.name},
                          {"method", route.method},
                          {"clusters", targets},
                          {"timeout_ms", route.timeout / 1ms}});
      }
      listeners_json.push_back({{"name", listener_config.name},
                                {"address", listener->bound.address().to_string() + ":" +
                                                std::to_string(listener->bound.port())},
                                {"workers", listener_config.workers},
                                {"routes", routes}});
    }
    return nlohmann::json{{"source", now->config.source}, {"listeners", listeners_json}}.dump(2);
  }

  std::string status_page() const {
    std::string html =
        "<!doctype html><meta charset=utf-8><title>keel proxy</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style>"
        "<h1>keel proxy</h1><p><a href=/metrics>metrics</a> · <a href=/clusters>clusters</a> · "
        "<a href=/config>config</a></p><table><tr><th>cluster<th>breaker<th>active"
        "<th>requests<th>retries<th>overflow<th>endpoints</tr>";
    for (const auto& cluster : current()->clusters) {
      std::string endpoints;
      for (std::size_t i = 0; i < cluster->config->endpoints.size(); ++i) {
        endpoints += cluster->config->endpoints[i].address + " (" +
                     (cluster->healthy[i].load() ? "" : "UNHEALTHY, ") +
                     std::to_string(cluster->endpoint_requests[i]->value()) + " req, " +
                     std::to_string(cluster->endpoint_failures[i]->value()) + " failed, " +
                     std::to_string(cluster->endpoint_ejections[i]->value()) + " ejections) ";
      }
      html += "<tr><td>" + cluster->config->name + "<td>" +
              (cluster->breaker ? to_string(cluster->breaker->state()) : "none") + "<td>" +
              std::to_string(cluster->requests.load()) + "<td>" +
              std::to_string(cluster->requests_total->value()) + "<td>" +
              std::to_string(cluster->retries_total->value()) + "<td>" +
              std::to_string(cluster->overflow_total->value()) + "<td>" + endpoints + "</tr>";
    }
    html += "</table>";
    auto migrations = nlohmann::json::parse(migration_store->report_json());
    if (!migrations.empty()) {
      html +=
          "<h2>migrations</h2><p><a href=/migration>/migration</a> (JSON)</p><table><tr><th>route"
          "<th>stage<th>percent<th>modern share<th>legacy / modern answers<th>diff rate"
          "<th>legacy since modern<th>top differing fields</tr>";
      for (const auto& route : migrations) {
        std::string fields;
        for (const auto& field : route["top_differing_fields"]) {
          fields += field["field"].get<std::string>() + " (" + field["count"].dump() + ") ";
        }
        char row[512];
        std::snprintf(
            row, sizeof row, "<tr><td>%s<td>%s<td>%.1f%%<td>%.1f%%<td>%s / %s<td>%.2f%%<td>%s<td>",
            route["route"].get<std::string>().c_str(), route["stage"].get<std::string>().c_str(),
            route["percent"].get<double>(), 100 * route["modern_share"].get<double>(),
            route["legacy_answers"].dump().c_str(), route["modern_answers"].dump().c_str(),
            100 * route["diff_rate"].get<double>(),
            route["legacy_answers_since_modern"].dump().c_str());
        html += row + fields + "</tr>";
      }
      html += "</table>";
    }
    return html + "\n";
  }
};

Result<std::unique_ptr<Server>> Server::start(ProxyConfig config, Clock& clock,
                                              std::ostream* access_log) {
  auto impl = std::make_unique<Impl>(clock, access_log);
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
  if (!impl_->admin_bound) return std::nullopt;
  return HostPort{impl_->admin_bound->address().to_string(), impl_->admin_bound->port()};
}

std::string Server::metrics_text() const { return impl_->registry.render_prometheus(); }
std::string Server::clusters_json() const { return impl_->clusters_json(); }

}  // namespace keel::proxy

#include "keel/proxy/server.h"

#include <pthread.h>
#include <re2/re2.h>
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
#include <boost/asio/write.hpp>
#include <charconv>
#include <cmath>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "keel/balance/endpoint_set.h"
#include "keel/balance/load_balancer.h"
#include "keel/core/log.h"
#include "keel/core/metrics.h"
#include "keel/core/random.h"
#include "keel/core/spsc_ring.h"
#include "keel/core/text.h"
#include "keel/core/uuid.h"
#include "keel/http/h1.h"
#include "keel/http/server.h"
#include "keel/http/upstream.h"
#include "keel/http/worker.h"
#include "keel/proxy/access_log.h"
#include "keel/proxy/router.h"
#include "keel/resilience/circuit_breaker.h"

namespace keel::proxy {
namespace {

namespace net = boost::asio;
namespace h1 = keel::http::h1;
using http::Buffer;
using http::Conn;
using http::error_code;
using http::Executor;
using http::kChunk;
using http::send_now;
using http::Socket;
using http::Task;
using http::tcp;
using http::use_task;

constexpr std::size_t kMaxTarget = 8 * 1024;         // longer request targets get 414
constexpr std::size_t kMaxResponseHead = 64 * 1024;  // a longer upstream head is a bad answer

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

// Shared by all workers: the breaker, the limit counters, the metrics.
struct ClusterShared {
  const Cluster* config = nullptr;
  std::unique_ptr<resilience::CircuitBreaker> breaker;
  std::unique_ptr<resilience::RetryBudget> retry_budget;
  std::unique_ptr<resilience::ConcurrencyLimiter> concurrency;  // adaptive_concurrency
  std::atomic<std::uint32_t> connections{0};
  std::atomic<std::uint32_t> requests{0};
  std::atomic<std::uint32_t> retries{0};
  std::atomic<std::uint32_t> pending{0};  // waiting for a connection at max_connections
  std::vector<tcp::endpoint> addresses;   // resolved once, at start
  metrics::Counter* requests_total = nullptr;
  metrics::Counter* retries_total = nullptr;
  metrics::Counter* hedges_total = nullptr;
  metrics::Counter* hedge_wins_total = nullptr;
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
  // What each worker's balancer sees of each endpoint ([worker * endpoints + endpoint]),
  // published by the worker as requests start and end, so that /clusters and /metrics can say
  // why an endpoint gets the traffic it gets without reading a worker's state.
  struct EndpointView {
    std::atomic<std::uint32_t> in_flight{0};
    std::atomic<double> latency_cost_ms{0};  // peak_ewma's latency estimate; 0: none yet
  };
  std::unique_ptr<EndpointView[]> views;
  std::size_t view_workers = 0;
  std::uint32_t in_flight(std::size_t endpoint) const {
    std::uint32_t total = 0;
    for (std::size_t w = 0; w < view_workers; ++w)
      total +=
          views[w * config->endpoints.size() + endpoint].in_flight.load(std::memory_order_relaxed);
    return total;
  }
  // The mean over the workers that have an estimate.
  double latency_cost_ms(std::size_t endpoint) const {
    double sum = 0;
    int count = 0;
    for (std::size_t w = 0; w < view_workers; ++w) {
      const double cost = views[w * config->endpoints.size() + endpoint].latency_cost_ms.load(
          std::memory_order_relaxed);
      if (cost > 0) {
        sum += cost;
        ++count;
      }
    }
    return count == 0 ? 0 : sum / count;
  }
  std::vector<metrics::CallbackRegistration> gauges;
};

bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

struct Worker;

// A hedged try's connection while send() works on it, so that the race can cancel the try by
// closing it: the operation waiting on the socket then ends at once.
struct TryHandle {
  Conn* conn = nullptr;
  bool cancelled = false;
};

// An upstream connection. Counted in its cluster's `connections` while it exists; bytes after
// one response in its buffer would belong to the next, so a connection with any is not reused.
struct Upstream {
  Upstream(Worker& w, std::shared_ptr<ClusterShared> c, std::size_t e);
  ~Upstream() { cluster->connections.fetch_sub(1, std::memory_order_relaxed); }
  Upstream(const Upstream&) = delete;
  Upstream& operator=(const Upstream&) = delete;
  Conn conn;
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

// The latencies of a worker's recent tries to a cluster (to the response head; failed tries and
// cancelled hedges left out), for a hedge delay given as a percentile. Bounded: the last kSize
// only, and the percentile is worked out again after every kEvery new samples, not per request.
class LatencyWindow {
 public:
  static constexpr std::size_t kSize = 256;
  static constexpr std::size_t kMinSamples = 32;  // fewer: the hedge policy's initial delay
  static constexpr std::size_t kEvery = 16;

  void add(Duration latency) {
    samples_[next_] = latency;
    next_ = (next_ + 1) % kSize;
    count_ = std::min(count_ + 1, kSize);
    ++since_;
  }
  // The p-th percentile (0 < p < 100) of the window, or nullopt while it has too few samples.
  std::optional<Duration> percentile(double p) {
    if (count_ < kMinSamples) return std::nullopt;
    if (since_ < kEvery && p == cached_percentile_) return cached_;
    std::array<Duration, kSize> sorted;
    std::copy_n(samples_.begin(), count_, sorted.begin());
    const auto rank =
        std::min(count_ - 1, static_cast<std::size_t>(p / 100.0 * static_cast<double>(count_)));
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(rank),
                     sorted.begin() + static_cast<std::ptrdiff_t>(count_));
    cached_ = sorted[rank];
    cached_percentile_ = p;
    since_ = 0;
    return cached_;
  }

 private:
  std::array<Duration, kSize> samples_{};
  std::size_t count_ = 0;
  std::size_t next_ = 0;
  std::size_t since_ = 0;
  double cached_percentile_ = -1;
  Duration cached_{};
};

// A worker's own view of a cluster: endpoint state, the balancer, idle connections.
struct WorkerCluster {
  WorkerCluster(std::shared_ptr<ClusterShared> s, std::size_t worker, Clock& clock, Random& random)
      : shared(std::move(s)),
        endpoints(shared->config->endpoints, shared->config->endpoint_options, clock),
        views(&shared->views[worker * shared->config->endpoints.size()]),
        publish_cost(shared->config->load_balancer.policy == "peak_ewma") {
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
  LatencyWindow latencies;  // for hedge delays given as a percentile

  // endpoints.on_start / on_complete, published for /clusters and /metrics.
  void on_start(std::size_t i) {
    endpoints.on_start(i);
    views[i].in_flight.store(endpoints[i].active_requests, std::memory_order_relaxed);
  }
  // A hedged try that lost: no sample, only the in-flight count goes back.
  void on_cancel(std::size_t i) {
    endpoints.on_cancel(i);
    views[i].in_flight.store(endpoints[i].active_requests, std::memory_order_relaxed);
  }
  void on_complete(std::size_t i, bool success, Duration latency) {
    endpoints.on_complete(i, success, latency);
    views[i].in_flight.store(endpoints[i].active_requests, std::memory_order_relaxed);
    if (publish_cost) {
      views[i].latency_cost_ms.store(endpoints.latency_estimate_ns(i) / 1e6,
                                     std::memory_order_relaxed);
    }
  }

 private:
  ClusterShared::EndpointView* views;  // this worker's row
  bool publish_cost;                   // only peak_ewma keeps a latency estimate
};

// A proxy worker: the core's worker with its request-id generator and idle upstream
// connections.
struct Worker : http::Worker {
  using http::Worker::Worker;
  Random random{0};
  // Idle upstream connections, by cluster and endpoint. They belong to the worker, not to a
  // generation, so that they close before the io_context that owns their sockets.
  std::map<const ClusterShared*, std::vector<std::vector<std::unique_ptr<Upstream>>>> pools;
  std::vector<std::unique_ptr<Upstream>>& pool(const ClusterShared& cluster, std::size_t endpoint) {
    auto& by_endpoint = pools[&cluster];
    by_endpoint.resize(cluster.addresses.size());
    return by_endpoint[endpoint];
  }
};

Upstream::Upstream(Worker& w, std::shared_ptr<ClusterShared> c, std::size_t e)
    : conn(w, Socket(w.io.get_executor()), false), endpoint(e), cluster(std::move(c)) {
  cluster->connections.fetch_add(1, std::memory_order_relaxed);
}

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

// A response's status and headers as a diff sees them (the body is added by the caller), into
// `answer`, reusing what its strings hold.
void fill_answer(const h1::Head& response, Answer& answer) {
  answer.status = response.status;
  answer.headers.resize(response.fields.size());
  for (std::size_t i = 0; i < response.fields.size(); ++i) {
    auto& [name, value] = answer.headers[i];
    name.assign(response.fields[i].name);
    ascii_lower_in_place(name);
    value.assign(response.fields[i].value);
  }
  answer.json = response.find("content-type").find("json") != std::string_view::npos;
}

// A shadow copy of a request: filled by a listener's worker while legacy answers, then compared
// by the mirror thread. Its strings are written by the worker only (their memory is the
// worker's: the mirror thread never frees or grows them), so copies cost no allocation once a
// lane's Mirrors have grown.
struct Mirror {
  std::shared_ptr<MigrationState> state;
  std::shared_ptr<const Generation> generation;
  std::size_t modern_cluster = 0;
  std::size_t legacy_cluster = 0;
  const MigrationConfig* config = nullptr;
  Duration timeout{};
  std::string head;  // as sent to legacy, marked x-keel-shadow
  std::string body;
  std::string request_line;
  bool head_request = false;
  Answer legacy;
  std::size_t legacy_endpoint = 0;  // the noise baseline asks another one when there is one
};

// How one listener's worker hands copies to the mirror thread and gets them back: two
// lock-free rings, so the client path never waits on anything the SCHED_IDLE thread holds (a
// lock of its io_context, a malloc arena). At most kMirrorLane copies per worker are on their
// way; more are dropped and counted.
constexpr std::size_t kMirrorLane = 256;
struct MirrorLane {
  SpscRing<Mirror*, kMirrorLane> to_mirror;    // the worker pushes, the mirror thread pops
  SpscRing<Mirror*, kMirrorLane> returned;     // the mirror thread pushes, the worker pops
  std::vector<std::unique_ptr<Mirror>> owned;  // worker only
  std::vector<Mirror*> free;                   // worker only

  // A Mirror to fill, or null when all are on their way.
  Mirror* take() {
    while (auto back = returned.pop()) free.push_back(*back);
    if (free.empty()) {
      if (owned.size() == kMirrorLane) return nullptr;
      owned.push_back(std::make_unique<Mirror>());
      return owned.back().get();
    }
    Mirror* mirror = free.back();
    free.pop_back();
    return mirror;
  }
};

// One request's record, for the access log. A session keeps one and reuses it.
struct Exchange {
  std::size_t worker = 0;  // whose access log buffer the line goes to
  std::string request_id;
  std::string method;  // method and path are copied only when there is an access log
  std::string path;
  unsigned status = 0;
  std::string_view upstream = "-";  // the config's text
  std::string_view cluster = "-";
  std::uint32_t attempts = 0;
  Flag flag = Flag::kNone;
  TimePoint start;

  void reset(TimePoint now) {
    request_id.clear();
    method.clear();
    path.clear();
    status = 0;
    upstream = "-";
    cluster = "-";
    attempts = 0;
    flag = Flag::kNone;
    start = now;
  }
};

}  // namespace

struct Server::Impl {
  Clock& clock;
  std::uint64_t seed;        // of the workers' generators (request ids, weighted picks, jitter)
  std::ostream* access_log;  // null: no access log
  std::unique_ptr<AccessLog> access_log_writer;
  metrics::Registry registry;
  std::unique_ptr<MigrationStore> migration_store;  // stages outlive reloads
  mutable std::mutex generation_mutex;
  std::shared_ptr<const Generation> generation;
  // Bumped with every new generation: a session compares it (one atomic load per request) and
  // takes the mutex only when a reload happened.
  std::atomic<std::uint64_t> generation_number{0};
  std::vector<std::unique_ptr<ListenerShared>> listeners;
  // One per listener worker, read by the mirror worker. Declared before `workers` so that it
  // outlives them: the mirror worker's unfinished copies point into it.
  std::vector<std::unique_ptr<MirrorLane>> lanes;
  std::vector<std::unique_ptr<Worker>> workers;  // the listeners', then the mirror worker
  std::size_t mirror_worker = 0;
  std::unique_ptr<http::Server> admin;  // the admin listener, when the config has one
  std::atomic<bool> stopping{false};
  std::mutex reload_mutex;
  std::function<Status()> reload_hook;  // what POST /reload on the admin listener runs

  Impl(Clock& k, std::ostream* log, std::uint64_t s) : clock(k), seed(s), access_log(log) {}

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
      }
    }
    for (auto& worker : workers) {
      auto& own = next->worker_clusters.emplace_back();
      for (auto& cluster : next->clusters) {
        own.push_back(
            std::make_unique<WorkerCluster>(cluster, worker->index, clock, worker->random));
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
      auto bound = http::Server::bind(
          options, http::respond_with([this](const http::Request& r) { return admin_answer(r); }),
          clock);
      if (!bound) return bound.error();
      admin = std::move(*bound);
    }
    return {};
  }

  void bind_cluster_metrics(ClusterShared& c) {
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
    c.view_workers = workers.size();
    c.views = std::make_unique<ClusterShared::EndpointView[]>(workers.size() *
                                                              c.config->endpoints.size());
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
  Task<bool> sleep_while_current(std::size_t w, const Generation* g, Duration delay) {
    net::steady_timer timer(workers[w]->io, delay);
    error_code ec;
    co_await timer.async_wait(net::redirect_error(use_task, ec));
    co_return !ec && !stopping.load() && current().get() == g;
  }

  Task<void> outlier_loop(std::weak_ptr<const Generation> weak, std::size_t w, std::size_t c) {
    const Duration interval = weak.lock()->clusters[c]->config->outlier_detection->interval;
    const Generation* id = weak.lock().get();
    while (co_await sleep_while_current(w, id, interval)) {
      auto g = weak.lock();
      if (!g) co_return;
      WorkerCluster& cluster = *g->worker_clusters[w][c];
      for (std::size_t i : cluster.outlier->tick()) cluster.shared->endpoint_ejections[i]->inc();
    }
  }

  Task<void> health_loop(std::weak_ptr<const Generation> weak, std::size_t c) {
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
  Task<void> probe(std::shared_ptr<const Generation> g, std::size_t c, std::size_t i) {
    ClusterShared& shared = *g->clusters[c];
    const balance::HealthCheckConfig& check = *shared.config->health_check;
    const std::string& host = check.host.empty() ? shared.config->endpoints[i].address : check.host;
    auto status = co_await http::fetch_status(*workers[0], shared.addresses[i], check.method,
                                              check.path, host, "keel-health-check", check.timeout);
    const bool passed = status && check.passes(*status);
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
    if (admin) admin->start();
  }

  void stop(Duration drain) {
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
    if (admin) admin->stop(0ms);
    if (access_log_writer) access_log_writer->stop();  // after the last request's line
  }

  Task<void> accept_loop(Worker& worker, tcp::acceptor& acceptor, ListenerShared& listener) {
    for (;;) {
      error_code ec;
      Socket socket = co_await acceptor.async_accept(worker.io.get_executor(),
                                                     net::redirect_error(use_task, ec));
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

  // One try of a hedged request's race, as the race sees it.
  struct Try {
    std::size_t endpoint = 0;
    std::optional<resilience::BreakerPermit> permit;
    TimePoint start;
    h1::Head response;  // points into the upstream's buffer
    Flag failure = Flag::kNone;
    std::unique_ptr<Upstream> upstream;  // the answer's connection, once send() gave one
    TryHandle handle;                    // its connection while send() works: closed to cancel
    bool done = false;                   // send() returned
    bool settled = false;                // its outcome was taken: recorded, or cancelled
  };
  static constexpr std::size_t kMaxTries = 4;  // the first and up to 3 hedges (max_extra)

  // What a session keeps from one request to the next, so that a request allocates nothing
  // once these have grown.
  struct Scratch {
    h1::Head head;              // the request's, pointing into the client's buffer
    h1::Head response;          // the upstream's, pointing into the upstream's buffer
    std::string upstream_head;  // the request head as sent upstream
    std::string client_head;    // the response head as sent to the client
    std::string held_body;
    std::string decoded;        // a chunked body's data, for an HTTP/1.0 client
    std::string request_line;   // for a shadow copy's diff sample
    std::string forwarded_for;  // the client's X-Forwarded-For lines, joined
    Exchange exchange;
    std::array<Try, kMaxTries> tries;  // a hedged request's
  };

  // A request body still on its way from the client (not held): how much is left of it.
  struct BodyLeft {
    h1::Framing framing = h1::Framing::kNone;
    std::uint64_t remaining = 0;  // kLength
    h1::ChunkedReader chunks;     // kChunked
    std::uint64_t limit = 0;      // max_body_bytes
    bool done() const { return framing == h1::Framing::kNone; }
  };

  // ------------------------------------------------------------------ downstream
  Task<void> session(Worker& worker, ListenerShared& listener, Socket socket,
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

  // One request, from its parsed head to the end of its response. False: close.
  // `generation_held`: the session's, kept by it until this returns.
  Task<bool> handle(Worker& worker, ListenerShared& listener,
                    const std::shared_ptr<const Generation>& generation_held, Conn& client,
                    Scratch& scratch, const std::string& peer) {
    const h1::Head& request = scratch.head;
    const Generation& generation_now = *generation_held;
    const Limits& limits = generation_now.config.listeners[listener.index].limits;
    const ForwardedHeaders& forwarded =
        generation_now.config.listeners[listener.index].forwarded_headers;
    Exchange& exchange = scratch.exchange;
    exchange.reset(clock.now());
    exchange.worker = worker.index;
    if (access_log != nullptr) {
      exchange.method = request.method;
      exchange.path = request.target;
    }
    const unsigned version = request.version;
    bool keep_alive = request.keep_alive;
    if (auto id = request.find("x-request-id"); !id.empty() && id.size() <= 200) {
      exchange.request_id = id;
    } else if (forwarded.generate_request_id) {
      Uuid::random_v4(worker.random).append_to(exchange.request_id);  // cleared by reset()
    }
    const bool has_body = request.framing != h1::Framing::kNone;
    if (request.target.size() > kMaxTarget) {
      exchange.flag = Flag::kBadRequest;
      co_await local_reply(client, exchange, version, false, 414,
                           "bad_request: request target longer than " + std::to_string(kMaxTarget));
      co_return false;
    }
    // Methods outside the registered ones are refused, and CONNECT: no tunnels.
    if (!http::known_method(request.method)) {
      exchange.flag = Flag::kBadRequest;
      co_await local_reply(client, exchange, version, false, 501,
                           "bad_request: method not supported");
      co_return false;
    }

    const Route* route = match_route(generation_now.config.listeners[listener.index], request);
    if (route == nullptr) {
      exchange.flag = Flag::kNoRoute;
      // The body (if any) is not read: close after the reply unless there is none.
      client.in.consume(request.size);
      co_await local_reply(client, exchange, version, keep_alive && !has_body, 404, "no_route");
      co_return keep_alive && !has_body;
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

    // The head as it goes upstream: hop-by-hop fields (and Expect, answered here) gone,
    // forwarding fields added, the body's framing restated.
    std::string& out = scratch.upstream_head;
    out.clear();
    out.append(request.method).append(" ").append(request.target).append(" HTTP/1.1\r\n");
    std::string& forwarded_for = scratch.forwarded_for;  // every X-Forwarded-For line, in order
    forwarded_for.clear();
    for (const auto& field : request.fields) {
      if (forwarded.x_forwarded_for && h1::iequals(field.name, "x-forwarded-for")) {
        if (!forwarded_for.empty()) forwarded_for.append(", ");
        forwarded_for.append(field.value);
        continue;
      }
      if (!forwarded.x_forwarded_proto && h1::iequals(field.name, "x-forwarded-proto")) {
        out.append(field.name).append(": ").append(field.value).append("\r\n");
        continue;
      }
      // An absolute-form target's authority replaces Host (RFC 9112 3.2.2).
      if (!request.authority.empty() && h1::iequals(field.name, "host")) continue;
      if (h1::hop_by_hop(request, field.name) || h1::iequals(field.name, "expect") ||
          h1::iequals(field.name, "content-length") ||
          h1::iequals(field.name, "x-forwarded-proto") || h1::iequals(field.name, "x-request-id")) {
        continue;
      }
      out.append(field.name).append(": ").append(field.value).append("\r\n");
    }
    if (!request.authority.empty()) out.append("host: ").append(request.authority).append("\r\n");
    if (forwarded.x_forwarded_for) {
      out.append("x-forwarded-for: ");
      if (!forwarded_for.empty()) out.append(forwarded_for).append(", ");
      out.append(peer).append("\r\n");
    }
    if (forwarded.x_forwarded_proto) out.append("x-forwarded-proto: http\r\n");
    if (!exchange.request_id.empty()) {
      out.append("x-request-id: ").append(exchange.request_id).append("\r\n");
    }
    if (request.framing == h1::Framing::kLength) {
      out.append("content-length: ").append(std::to_string(request.content_length)).append("\r\n");
    } else if (request.framing == h1::Framing::kChunked) {
      out.append("transfer-encoding: chunked\r\n");
    }
    out.append("\r\n");
    const std::string_view method = request.method;  // valid until the head is consumed
    const bool head_request = method == "HEAD";
    const bool method_idempotent = idempotent(method);
    const bool expect_continue = request.expect_continue;
    const bool may_mirror = migration && routed_at == Stage::kShadow &&
                            (method_idempotent || route->migration->mirror_non_idempotent);
    std::string& request_line = scratch.request_line;
    if (may_mirror) request_line.assign(method).append(" ").append(request.target);

    // Done with the head: from here on its bytes may be overwritten.
    BodyLeft body{.framing = request.framing,
                  .remaining = request.content_length,
                  .limit = limits.max_body_bytes};
    client.in.consume(request.size);
    // No deadline on the client while its request is with the upstream (the route's timeouts
    // rule then); reading its body and writing the answer set their own.
    client.expires_never();

    // Expect: 100-continue is answered here, once the request is admitted by routing (an
    // HTTP/1.0 client cannot have asked for it: RFC 9110 10.1.1).
    if (expect_continue && has_body && version == 11 && client.in.size() == 0) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      std::array<net::const_buffer, 1> buffers{net::buffer(kContinue)};
      error_code ec;
      client.expires_after(limits.idle_timeout);
      if (!send_now(client, buffers, ec) && !ec) {
        co_await net::async_write(client.socket, buffers, net::redirect_error(use_task, ec));
      }
      if (ec) co_return false;
    }

    // A body known to be short is held, so that the request can be retried; anything else
    // streams through once.
    std::string& held_body = scratch.held_body;
    held_body.clear();
    bool replayable = true;
    if (body.framing == h1::Framing::kLength && body.remaining <= limits.retry_buffer_bytes) {
      client.expires_after(limits.idle_timeout);
      error_code ec;
      while (body.remaining > 0) {
        if (client.in.size() == 0) {
          std::size_t n = co_await client.socket.async_read_some(client.in.space(kChunk),
                                                                 net::redirect_error(use_task, ec));
          if (ec) break;
          client.in.commit(n);
        }
        const std::size_t take =
            static_cast<std::size_t>(std::min<std::uint64_t>(body.remaining, client.in.size()));
        held_body.append(client.in.view().substr(0, take));
        client.in.consume(take);
        body.remaining -= take;
      }
      if (ec) {
        exchange.flag = Flag::kBadRequest;
        co_await local_reply(
            client, exchange, version, false, 400,
            "bad_request: reading the request body: " + client.failure(ec).message());
        co_return false;
      }
      body.framing = h1::Framing::kNone;
      client.expires_never();
    } else if (has_body) {
      replayable = false;
    }

    const RetryPolicy& retry = route->retry ? *route->retry : cluster_config.retry;
    const bool may_retry = replayable && (method_idempotent || retry.allow_non_idempotent);
    // Hedged only when idempotent, even where the route lets other methods be retried: a hedge
    // goes out while the first try may still be under way, so both could take effect.
    const HedgePolicy* hedge = route->hedge           ? &*route->hedge
                               : cluster_config.hedge ? &*cluster_config.hedge
                                                      : nullptr;
    if (!replayable || !method_idempotent) hedge = nullptr;

    // Shadow: a copy of the request goes to modern once legacy has answered, and the two
    // answers are compared. The copy is kept now, before the request goes upstream.
    MirrorLane& lane = *lanes[worker.index];
    Mirror* mirror = nullptr;
    if (may_mirror && replayable && held_body.size() <= route->migration->diff.max_body_bytes) {
      mirror = lane.take();
      if (mirror == nullptr) {
        migration->count_mirror_dropped();  // this worker's lane is full
      } else if (!migration->begin_mirror()) {
        lane.free.push_back(std::exchange(mirror, nullptr));
      } else {
        mirror->state = migration;
        mirror->head.assign(out, 0, out.size() - 2).append("x-keel-shadow: 1\r\n\r\n");
        mirror->body.assign(held_body);
        mirror->request_line.assign(request_line);
        mirror->head_request = head_request;
      }
    }
    // Gives the copy back unsent (legacy did not answer, or the client went away).
    auto drop_mirror = [&] {
      if (mirror == nullptr) return;
      mirror->state->end_mirror();
      mirror->state.reset();
      lane.free.push_back(std::exchange(mirror, nullptr));
    };
    const auto deadline = clock.now() + route->timeout;
    std::vector<std::size_t> avoid;
    std::size_t answered_by = 0;  // the endpoint of the last attempt
    std::unique_ptr<Upstream> upstream;
    h1::Head& response = scratch.response;

    auto request_slot = try_hold(cluster.shared->requests, cluster_config.limits.max_requests);
    if (!request_slot) {
      cluster.shared->overflow_total->inc();
      exchange.flag = Flag::kOverflow;
    }
    // Adaptive concurrency: one sample per request, its latency to the final answer's head.
    std::optional<resilience::LimiterPermit> concurrency_permit;
    if (request_slot && cluster.shared->concurrency) {
      auto admission = cluster.shared->concurrency->acquire();
      if (admission) {
        concurrency_permit.emplace(std::move(admission).permit());
      } else {
        request_slot.reset();
        cluster.shared->overflow_total->inc();
        exchange.flag = Flag::kOverflow;
      }
    }
    std::optional<Held> retry_slot;
    if (request_slot) cluster.shared->retry_budget->deposit();
    std::uint32_t rounds = 0;       // the first try and each retry: what num_retries counts
    std::uint32_t hedges_sent = 0;  // over the whole request, up to the policy's max_extra
    while (request_slot) {
      ++rounds;
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
      Flag failure = Flag::kNone;
      if (hedge != nullptr && hedges_sent < hedge->max_extra) {
        upstream = co_await race(worker, cluster, *hedge, retry, scratch.tries, endpoint,
                                 std::move(permit), out, held_body, head_request, deadline, avoid,
                                 exchange, hedges_sent, retry_slot, response, failure, answered_by);
      } else {
        cluster.shared->endpoint_requests[endpoint]->inc();
        cluster.on_start(endpoint);
        const auto try_start = clock.now();
        const auto try_deadline = std::min(deadline, try_start + cluster_config.per_try_timeout);
        upstream = co_await send(worker, cluster, endpoint, out, held_body, &client, body,
                                 head_request, response, try_deadline, failure);
        answered_by = endpoint;
        record_try(cluster, endpoint, failure, upstream ? response.status : 0,
                   clock.now() - try_start, permit);
      }
      exchange.upstream = cluster_config.endpoints[answered_by].address;
      const unsigned status = upstream ? response.status : 0;
      const TryEnd end = failure == Flag::kConnectFailure ? TryEnd::kConnectFailure
                         : failure == Flag::kReset        ? TryEnd::kReset
                         : failure == Flag::kTimeout      ? TryEnd::kTimeout
                                                          : TryEnd::kResponse;
      const bool retriable =
          (failure == Flag::kNone || end != TryEnd::kResponse) && retry.retries(end, status);
      const bool time_left = clock.now() < deadline;
      if (!retriable || !may_retry || rounds > retry.num_retries || !time_left) {
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
      avoid.push_back(answered_by);
      co_await backoff(worker, retry, rounds, deadline);
    }

    if (concurrency_permit) {
      const auto outcome = exchange.flag == Flag::kDownstreamReset ? resilience::Outcome::kIgnored
                           : upstream && response.status < 500     ? resilience::Outcome::kSuccess
                                                                   : resilience::Outcome::kFailure;
      cluster.shared->concurrency->record(std::move(*concurrency_permit), outcome,
                                          clock.now() - exchange.start);
    }

    // A route at modern with fallback_to_legacy: when modern failed, legacy answers instead.
    WorkerCluster* answering = &cluster;
    if (route->migration && route->migration->fallback_to_legacy && routed_at == Stage::kModern &&
        may_retry && exchange.flag != Flag::kDownstreamReset &&
        exchange.flag != Flag::kBadRequest && (!upstream || response.status >= 500) &&
        clock.now() < deadline) {
      WorkerCluster& legacy = *generation_now.worker_clusters[worker.index][cluster_index(
          generation_now.config, route->migration->legacy)];
      if (auto picked = legacy.balancer->pick({})) {
        // Modern's failure still counts for its guard rails.
        migration->count_answer(true, upstream ? response.status : 502,
                                clock.now() - exchange.start, routed_at);
        upstream.reset();  // modern's answer, if any, goes with its connection
        ++exchange.attempts;
        Flag failure = Flag::kNone;
        const auto try_start = clock.now();
        legacy.shared->requests_total->inc();
        legacy.on_start(*picked);
        upstream = co_await send(worker, legacy, *picked, out, held_body, &client, body,
                                 head_request, response, deadline, failure);
        const unsigned status = upstream ? response.status : 0;
        legacy.on_complete(*picked, failure == Flag::kNone && status < 500,
                           clock.now() - try_start);
        answering = &legacy;
        answered_by = *picked;
        to_modern = false;  // legacy traffic at modern: it keeps the route from being retired
        exchange.cluster = legacy.shared->config->name;
        exchange.upstream = legacy.shared->config->endpoints[*picked].address;
        exchange.flag = failure;
      }
    }

    if (!upstream) {
      unsigned status = 503;
      std::string reason;
      switch (exchange.flag) {
        case Flag::kConnectFailure:
          status = 502;
          reason = "upstream_connect_failure";
          break;
        case Flag::kReset:
          status = 502;
          reason = "upstream_reset";
          break;
        case Flag::kTimeout:
          status = 504;
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
          drop_mirror();
          co_return false;
        case Flag::kBadRequest:
          status = 400;
          reason = "bad_request: malformed request body";
          break;
        default:
          reason = "no_healthy_endpoint";
          break;
      }
      // The request's body may be half read: only a fully read request keeps the connection.
      const bool reusable = keep_alive && body.done();
      co_await local_reply(client, exchange, version, reusable, status, reason, answering);
      drop_mirror();  // no answer from legacy to compare with
      if (migration) {
        migration->count_answer(to_modern, status, clock.now() - exchange.start, routed_at);
      }
      co_return reusable;
    }

    // The response head as the client gets it: hop-by-hop fields gone, the framing restated.
    // A chunked body goes to an HTTP/1.1 client as it is; an HTTP/1.0 client gets its data,
    // ended by closing.
    keep_alive = keep_alive && body.done() && !stopping.load(std::memory_order_relaxed);
    const bool dechunk = response.framing == h1::Framing::kChunked && version == 10;
    if (response.framing == h1::Framing::kUntilClose || dechunk) keep_alive = false;
    std::string& head_out = scratch.client_head;
    head_out.assign(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
    head_out.append(std::to_string(response.status));
    head_out.append(" ").append(response.reason).append("\r\n");
    for (const auto& field : response.fields) {
      if (h1::hop_by_hop(response, field.name) || h1::iequals(field.name, "x-request-id") ||
          (response.framing != h1::Framing::kNone && h1::iequals(field.name, "content-length"))) {
        continue;
      }
      head_out.append(field.name).append(": ").append(field.value).append("\r\n");
    }
    if (response.framing == h1::Framing::kLength) {
      head_out.append("content-length: ")
          .append(std::to_string(response.content_length))
          .append("\r\n");
    } else if (response.framing == h1::Framing::kChunked && !dechunk) {
      // As it came: codings before chunked (gzip, chunked) are the body's, not the hop's.
      head_out.append("transfer-encoding: ").append(response.transfer_encoding).append("\r\n");
    }
    if (!keep_alive) {
      head_out.append("connection: close\r\n");
    } else if (version == 10) {
      head_out.append("connection: keep-alive\r\n");
    }
    if (!exchange.request_id.empty()) {
      head_out.append("x-request-id: ").append(exchange.request_id).append("\r\n");
    }
    head_out.append("\r\n");
    exchange.status = response.status;
    if (mirror) {
      mirror->legacy_endpoint = answered_by;
      fill_answer(response, mirror->legacy);
      mirror->legacy.body.clear();
    }
    const bool upstream_keeps = response.keep_alive;
    const h1::Framing framing = response.framing;
    const std::uint64_t length = response.content_length;
    upstream->conn.in.consume(response.size);  // the response head's views end here
    const bool relayed = co_await relay_response(
        client, *upstream, head_out, framing, length, dechunk, scratch.decoded, limits, deadline,
        mirror ? &mirror->legacy.body : nullptr,
        route->migration ? route->migration->diff.max_body_bytes : 0);
    finish(exchange, *answering, exchange.status);
    if (migration) {
      migration->count_answer(to_modern, exchange.status, clock.now() - exchange.start, routed_at);
    }
    if (mirror != nullptr && relayed) {
      mirror->generation = generation_held;
      mirror->modern_cluster = cluster_index(generation_now.config, route->migration->modern);
      mirror->legacy_cluster = cluster_index(generation_now.config, route->migration->legacy);
      mirror->config = &*route->migration;
      mirror->timeout = route->timeout;
      lane.to_mirror.push(mirror);  // never full: a lane has as many slots as Mirrors
    } else {
      drop_mirror();
    }
    if (relayed && upstream_keeps) park(worker, std::move(upstream));
    co_return relayed&& keep_alive;
  }

  // ------------------------------------------------------------------ upstream
  // A pooled connection to the endpoint, or a new one (within the cluster's max_connections and
  // connect timeout). Null, with `failure` set, when there is none.
  static Task<std::unique_ptr<Upstream>> acquire(Worker& worker, WorkerCluster& cluster,
                                                 std::size_t endpoint, TimePoint deadline,
                                                 Flag& failure, TryHandle* handle) {
    const Cluster& cluster_config = *cluster.shared->config;
    auto& idle = worker.pool(*cluster.shared, endpoint);
    auto take_idle = [&]() -> std::unique_ptr<Upstream> {
      while (!idle.empty()) {
        std::unique_ptr<Upstream> pooled = std::move(idle.back());
        idle.pop_back();
        if (pooled->conn.socket.is_open()) {
          pooled->conn.expires_never();  // the request sets its own deadlines
          return pooled;
        }
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
      const auto give_up = std::min(deadline, worker.clock->now() + cluster_config.connect_timeout);
      net::steady_timer timer(worker.io);
      while (full() && worker.clock->now() < give_up && (handle == nullptr || !handle->cancelled)) {
        timer.expires_after(std::chrono::milliseconds(2));
        error_code ignored;
        co_await timer.async_wait(net::redirect_error(use_task, ignored));
        if (auto pooled = take_idle()) co_return pooled;
      }
      if (handle != nullptr && handle->cancelled) {
        failure = Flag::kReset;
        co_return nullptr;
      }
      if (full()) {
        failure = Flag::kOverflow;
        co_return nullptr;
      }
    }
    auto upstream = std::make_unique<Upstream>(worker, cluster.shared, endpoint);
    if (handle != nullptr) handle->conn = &upstream->conn;
    upstream->conn.deadline =
        std::min(deadline, worker.clock->now() + cluster_config.connect_timeout);
    if (co_await http::connect(upstream->conn, cluster.shared->addresses[endpoint])) {
      if (handle != nullptr) handle->conn = nullptr;  // goes with `upstream`, now
      if (handle == nullptr || !handle->cancelled) cluster.shared->connect_failures_total->inc();
      failure = Flag::kConnectFailure;
      co_return nullptr;
    }
    co_return upstream;
  }

  // Sends the request (the head, then the held body or the client's body as it comes) on a
  // pooled or new connection and reads the response head into `response`. `client` is read
  // only while `body` streams. Null, with `failure` set, when that did not work out. A hedged
  // try passes `handle`: its connection is there while this runs, for the race to close.
  Task<std::unique_ptr<Upstream>> send(Worker& worker, WorkerCluster& cluster, std::size_t endpoint,
                                       const std::string& head, const std::string& held_body,
                                       Conn* client, BodyLeft& body, bool head_request,
                                       h1::Head& response, TimePoint deadline, Flag& failure,
                                       TryHandle* handle = nullptr) {
    // Cancelled before it began (the race was decided before this coroutine first ran).
    if (handle != nullptr && handle->cancelled) {
      failure = Flag::kReset;
      co_return nullptr;
    }
    struct Forget {  // the connection is the caller's, or closed, once this returns
      TryHandle* handle;
      ~Forget() {
        if (handle != nullptr) handle->conn = nullptr;
      }
    } forget{handle};
    auto upstream = co_await acquire(worker, cluster, endpoint, deadline, failure, handle);
    if (!upstream) co_return nullptr;
    if (handle != nullptr) handle->conn = &upstream->conn;  // a pooled one, too
    Conn& conn = upstream->conn;
    conn.deadline = deadline;
    error_code ec;
    std::array<net::const_buffer, 2> buffers{net::buffer(head), net::buffer(held_body)};
    if (!send_now(conn, buffers, ec) && !ec) {
      co_await net::async_write(conn.socket, buffers, net::redirect_error(use_task, ec));
      ec = conn.failure(ec);
    }
    // A streamed body: client → upstream as it comes, its framing checked on the way.
    while (!ec && !body.done()) {
      if (client->in.size() == 0) {
        client->deadline = deadline;
        error_code read_ec;
        std::size_t n = co_await client->socket.async_read_some(
            client->in.space(kChunk), net::redirect_error(use_task, read_ec));
        if (read_ec) {
          failure = Flag::kDownstreamReset;  // the client closed or went quiet
          co_return nullptr;
        }
        client->in.commit(n);
      }
      const std::string_view available = client->in.view();
      std::size_t take = 0;
      if (body.framing == h1::Framing::kLength) {
        take = static_cast<std::size_t>(std::min<std::uint64_t>(body.remaining, available.size()));
        body.remaining -= take;
        if (body.remaining == 0) body.framing = h1::Framing::kNone;
      } else {
        auto step = body.chunks.feed(available, [](std::string_view) {});
        if (step.error != nullptr || body.chunks.data_bytes() > body.limit) {
          failure = Flag::kBadRequest;  // a malformed chunk or over max_body_bytes
          co_return nullptr;
        }
        take = step.used;
        if (step.done) body.framing = h1::Framing::kNone;
      }
      std::array<net::const_buffer, 1> chunk{net::buffer(available.data(), take)};
      if (!send_now(conn, chunk, ec) && !ec) {
        co_await net::async_write(conn.socket, chunk, net::redirect_error(use_task, ec));
        ec = conn.failure(ec);
      }
      client->in.consume(take);
      if (body.done()) client->expires_never();
    }
    // The response head; informational answers (100 Continue and the like) are passed over,
    // and an upgrade (101) is refused: no protocol upgrades through the proxy.
    if (!ec) ec = co_await http::read_response_head(conn, head_request, response, kMaxResponseHead);
    if (ec) {
      // Includes a pooled connection the upstream closed meanwhile: a reset, which
      // retry_on reset covers.
      failure = ec == net::error::timed_out ? Flag::kTimeout : Flag::kReset;
      co_return nullptr;
    }
    co_return upstream;
  }

  // What a finished try says about its endpoint: its latency and failure counts, the outlier
  // detector, the breaker, and the cluster's window of try latencies (for hedge delays).
  static void record_try(WorkerCluster& cluster, std::size_t endpoint, Flag failure,
                         unsigned status, Duration latency,
                         std::optional<resilience::BreakerPermit>& permit) {
    const bool server_error = status >= 500;
    const bool gateway_error = status == 502 || status == 503 || status == 504;
    const bool failed = failure != Flag::kNone || server_error;
    cluster.on_complete(endpoint, !failed, latency);
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
      permit.reset();
    }
    if (failure == Flag::kNone) cluster.latencies.add(latency);
  }

  // One round of a hedged request: a try to `first` (picked, with its breaker permit) and,
  // while no answer has come, a hedge to another endpoint after each hedge delay — up to the
  // policy's max_extra over the whole request (`hedges_sent`), each within the cluster's
  // max_retries (the request's `retry_slot`), the retry budget and the breaker; one that
  // cannot have them is not sent. The first answer that would not be retried wins. A try that
  // fails, or answers with what would be retried, while others are still out is recorded and
  // dropped; when none is left, the last one's outcome is the round's, for the caller's retry
  // decision. The losers are cancelled: their connections closed, never pooled (a response may
  // be on its way), and their endpoints get no sample (a cancelled try is neither a success
  // nor a failure) — only their in-flight count goes back. Returns the answer's connection,
  // its head in `response`, or null with `failure`; `answered_by` is its endpoint either way.
  Task<std::unique_ptr<Upstream>> race(Worker& worker, WorkerCluster& cluster,
                                       const HedgePolicy& hedge, const RetryPolicy& retry,
                                       std::array<Try, kMaxTries>& tries, std::size_t first,
                                       std::optional<resilience::BreakerPermit> permit,
                                       const std::string& head, const std::string& held_body,
                                       bool head_request, TimePoint deadline,
                                       std::vector<std::size_t>& avoid, Exchange& exchange,
                                       std::uint32_t& hedges_sent, std::optional<Held>& retry_slot,
                                       h1::Head& response, Flag& failure,
                                       std::size_t& answered_by) {
    const Cluster& config = *cluster.shared->config;
    ClusterShared& shared = *cluster.shared;
    // Woken by every try that ends, and at the next hedge's time.
    net::steady_timer wake(worker.io);
    BodyLeft no_body;  // a hedged request's body is held: nothing streams from the client
    std::size_t started = 0;
    std::size_t running = 0;
    auto start_try = [&](std::size_t endpoint, std::optional<resilience::BreakerPermit> admitted) {
      Try& t = tries[started++];
      t.endpoint = endpoint;
      t.permit = std::move(admitted);
      t.failure = Flag::kNone;
      t.upstream.reset();
      t.handle = {};
      t.done = t.settled = false;
      t.start = clock.now();
      shared.endpoint_requests[endpoint]->inc();
      cluster.on_start(endpoint);
      ++running;
      net::co_spawn(worker.io,
                    run_try(worker, cluster, t, head, held_body, head_request,
                            std::min(deadline, t.start + config.per_try_timeout), no_body, wake),
                    net::detached);
    };
    // A hedge: to an endpoint no try of this request went to, with the retry limit's slot, a
    // retry from the budget and the breaker's permit. False when one of them is not to be had.
    auto start_hedge = [&] {
      // The limit and the budget first: a pick that is not used would still move the
      // balancer on (round robin's next turn), skewing what other requests get.
      if (!retry_slot) {
        retry_slot = try_hold(shared.retries, config.limits.max_retries);
        if (!retry_slot) return false;
      }
      if (shared.retry_budget->balance() < 1.0) return false;
      const std::size_t settled = avoid.size();
      for (std::size_t i = 0; i < started; ++i) {
        if (!tries[i].settled) avoid.push_back(tries[i].endpoint);
      }
      auto picked = cluster.balancer->pick({.hash = std::nullopt, .avoid = avoid});
      const bool elsewhere =
          picked && std::find(avoid.begin(), avoid.end(), *picked) == avoid.end();
      avoid.resize(settled);
      if (!elsewhere) return false;
      std::optional<resilience::BreakerPermit> admitted;
      if (shared.breaker) {
        auto admission = shared.breaker->acquire();
        if (!admission) return false;
        admitted.emplace(std::move(admission).permit());
      }
      if (!shared.retry_budget->try_withdraw()) {  // another worker took the last of it
        if (admitted) {
          shared.breaker->record(std::move(*admitted), resilience::Outcome::kIgnored, {});
        }
        return false;
      }
      ++hedges_sent;
      ++exchange.attempts;
      shared.hedges_total->inc();
      start_try(*picked, std::move(admitted));
      return true;
    };

    start_try(first, std::move(permit));
    const Duration delay =
        hedge.after ? *hedge.after
                    : hedge.delay_for(cluster.latencies.percentile(hedge.after_percentile));
    auto next_hedge = clock.now() + delay;
    std::optional<std::size_t> winner;
    std::size_t last = 0;
    while (running > 0) {
      for (std::size_t i = 0; i < started && !winner; ++i) {
        Try& t = tries[i];
        if (!t.done || t.settled) continue;
        t.settled = true;
        --running;
        const unsigned status = t.upstream ? t.response.status : 0;
        record_try(cluster, t.endpoint, t.failure, status, clock.now() - t.start, t.permit);
        avoid.push_back(t.endpoint);
        if (t.upstream && !retry.retries(TryEnd::kResponse, status)) {
          winner = i;
        } else {
          last = i;
          if (running > 0) t.upstream.reset();  // others are still out: this one is dropped
        }
      }
      if (winner || running == 0) break;
      const auto now = clock.now();
      if (now >= next_hedge) {
        const bool sent =
            hedges_sent < hedge.max_extra && started < kMaxTries && now < deadline && start_hedge();
        // Not sent: not later either (what stopped it will not have changed within a round).
        next_hedge = sent ? now + delay : TimePoint::max();
      }
      wake.expires_at(next_hedge);
      error_code ignored;
      co_await wake.async_wait(net::redirect_error(use_task, ignored));
    }

    // The rest are cancelled, and waited for: they use this frame and the request's buffers.
    for (std::size_t i = 0; i < started; ++i) {
      Try& t = tries[i];
      if (t.settled) continue;
      t.handle.cancelled = true;
      if (t.handle.conn != nullptr) {
        error_code ignored;
        t.handle.conn->socket.close(ignored);
      }
    }
    auto all_done = [&] {
      for (std::size_t i = 0; i < started; ++i) {
        if (!tries[i].done) return false;
      }
      return true;
    };
    while (!all_done()) {
      wake.expires_at(TimePoint::max());
      error_code ignored;
      co_await wake.async_wait(net::redirect_error(use_task, ignored));
    }
    for (std::size_t i = 0; i < started; ++i) {
      Try& t = tries[i];
      if (t.settled) continue;
      t.settled = true;
      t.upstream.reset();  // closed, not pooled: its answer may be half read, or on its way
      cluster.on_cancel(t.endpoint);
      if (t.permit) {
        shared.breaker->record(std::move(*t.permit), resilience::Outcome::kIgnored, {});
        t.permit.reset();
      }
    }
    Try& chosen = tries[winner ? *winner : last];
    if (winner && *winner > 0) shared.hedge_wins_total->inc();
    answered_by = chosen.endpoint;
    failure = chosen.failure;
    std::swap(response, chosen.response);
    co_return std::move(chosen.upstream);
  }

  // A hedged request's try: send() into its Try, then wakes the race.
  Task<void> run_try(Worker& worker, WorkerCluster& cluster, Try& t, const std::string& head,
                     const std::string& held_body, bool head_request, TimePoint deadline,
                     BodyLeft& no_body, net::steady_timer& wake) {
    t.upstream = co_await send(worker, cluster, t.endpoint, head, held_body, nullptr, no_body,
                               head_request, t.response, deadline, t.failure, &t.handle);
    t.done = true;
    wake.cancel();
  }

  // Sends `head` and streams the response body upstream → client. False when either side
  // failed. `dechunk`: the client gets a chunked body's data only (HTTP/1.0), via `decoded`.
  // `capture`: keeps a copy of the first `capture_limit` body bytes (for a shadow diff).
  Task<bool> relay_response(Conn& client, Upstream& upstream, const std::string& head,
                            h1::Framing framing, std::uint64_t length, bool dechunk,
                            std::string& decoded, const Limits& limits, TimePoint deadline,
                            std::string* capture = nullptr, std::size_t capture_limit = 0) {
    Conn& conn = upstream.conn;
    http::BodyWalker body{.framing = framing, .length = length};
    std::string_view pending_head = head;  // goes out with the first body bytes
    auto keep = [&](std::string_view data) {
      if (capture != nullptr && capture->size() < capture_limit) {
        capture->append(data.substr(0, capture_limit - capture->size()));
      }
    };
    for (;;) {
      const std::string_view available = conn.in.view();
      decoded.clear();
      const auto step = body.next(available, [&](std::string_view data) {
        keep(data);
        if (dechunk) decoded.append(data);
      });
      if (step.broken) co_return false;  // the upstream broke its framing
      const std::size_t take = step.take;
      const bool done = step.done;
      const std::string_view out = dechunk ? std::string_view(decoded) : available.substr(0, take);
      if (!pending_head.empty() || !out.empty()) {
        std::array<net::const_buffer, 2> buffers{net::buffer(pending_head), net::buffer(out)};
        error_code ec;
        client.expires_after(limits.idle_timeout);
        if (!send_now(client, buffers, ec) && !ec) {
          co_await net::async_write(client.socket, buffers, net::redirect_error(use_task, ec));
        }
        if (ec) co_return false;
        pending_head = {};
      }
      conn.in.consume(take);
      if (done) co_return true;
      conn.deadline = std::max(deadline, clock.now() + 1ms);
      const http::More more = co_await http::read_more(conn, framing);
      if (more != http::More::kMore) co_return more == http::More::kClosed;
    }
  }

  static void park(Worker& worker, std::unique_ptr<Upstream> upstream) {
    // Bytes after the response are not an answer to anything: such a connection is not reused.
    if (upstream->conn.in.size() > 0 || !upstream->conn.socket.is_open()) return;
    auto& idle = worker.pool(*upstream->cluster, upstream->endpoint);
    // Connections the sweep closed for idling too long (or the upstream closed) make room.
    std::erase_if(idle, [](const auto& pooled) { return !pooled->conn.socket.is_open(); });
    if (idle.size() < upstream->cluster->config->max_idle_connections) {
      upstream->conn.expires_after(upstream->cluster->config->idle_timeout);
      idle.push_back(std::move(upstream));
    }
  }

  Task<void> backoff(Worker& worker, const RetryPolicy& retry, std::uint32_t attempt,
                     TimePoint deadline) {
    // Full jitter on base × 2^(attempt-1), capped, and never past the deadline.
    double cap = std::min<double>(static_cast<double>(retry.max_interval.count()),
                                  static_cast<double>(retry.base_interval.count()) *
                                      static_cast<double>(1u << std::min(attempt - 1, 16u)));
    auto wait = std::chrono::steady_clock::duration(
        static_cast<std::int64_t>(cap * worker.random.uniform01()));
    auto until = std::min(deadline, clock.now() + wait);
    net::steady_timer timer(worker.io, until);
    error_code ec;
    co_await timer.async_wait(net::redirect_error(use_task, ec));
  }

  // The mirror worker's loop: takes the copies the listener workers queued and compares each
  // in a coroutine of its own. Polls (1 ms while copies come, backing off to 32 ms when none
  // do), so that a worker queueing a copy makes no system call and takes no lock.
  Task<void> mirror_loop(Worker& mirrors) {
    net::steady_timer timer(mirrors.io);
    Duration interval = 1ms;
    while (!stopping.load(std::memory_order_relaxed)) {
      bool found = false;
      for (auto& lane : lanes) {
        while (auto mirror = lane->to_mirror.pop()) {
          found = true;
          net::co_spawn(mirrors.io, shadow(mirrors, *lane, **mirror), net::detached);
        }
      }
      interval = found ? Duration(1ms) : std::min<Duration>(interval * 2, 32ms);
      timer.expires_after(interval);
      error_code ec;
      co_await timer.async_wait(net::redirect_error(use_task, ec));
    }
  }

  // Sends a shadow copy to the modern cluster, reads its answer and compares it with legacy's.
  // Runs after the client has its answer; nothing here reaches the client. The Mirror goes
  // back to its lane at the end, unchanged.
  Task<void> shadow(Worker& worker, MirrorLane& lane, Mirror& mirror) {
    struct Done {
      MirrorLane& lane;
      Mirror& mirror;
      ~Done() {
        mirror.state->end_mirror();
        // Not kept until the worker reuses it: a reload's old generation would live on.
        mirror.state.reset();
        mirror.generation.reset();
        lane.returned.push(&mirror);
      }
    } done{lane, mirror};
    const Generation& g = *mirror.generation;
    const DiffConfig* diff = &mirror.config->diff;
    const Duration timeout = mirror.timeout;
    WorkerCluster& cluster = *g.worker_clusters[worker.index][mirror.modern_cluster];
    auto picked = cluster.balancer->pick({});
    if (!picked) {
      mirror.state->record_mirror_failure();
      co_return;
    }
    auto modern = co_await fetch(worker, cluster, *picked, mirror, diff->max_body_bytes, timeout);
    if (!modern) {
      mirror.state->record_mirror_failure();
      co_return;
    }
    auto fields = diff_answers(mirror.legacy, *modern, *diff);
    std::vector<std::string> noise;
    if (mirror.config->noise_baseline && !fields.empty()) {
      // Legacy once more: where its two answers differ is noise, not modern's fault.
      WorkerCluster& legacy = *g.worker_clusters[worker.index][mirror.legacy_cluster];
      const std::size_t first[] = {mirror.legacy_endpoint};
      if (auto again = legacy.balancer->pick({.avoid = first})) {
        auto second = co_await fetch(worker, legacy, *again, mirror, diff->max_body_bytes, timeout);
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

  // Sends the shadow copy to endpoint i of `cluster` and reads the whole answer, keeping the
  // first `capture_limit` body bytes; nullopt when that failed. The connection goes back to the
  // pool after.
  Task<std::optional<Answer>> fetch(Worker& worker, WorkerCluster& cluster, std::size_t endpoint,
                                    const Mirror& mirror, std::size_t capture_limit,
                                    Duration timeout) {
    Flag failure = Flag::kNone;
    cluster.on_start(endpoint);
    const auto started = clock.now();
    BodyLeft held;  // the copy's body is held: nothing streams
    h1::Head response;
    auto upstream = co_await send(worker, cluster, endpoint, mirror.head, mirror.body, nullptr,
                                  held, mirror.head_request, response, started + timeout, failure);
    std::optional<Answer> answer;
    if (upstream) {
      fill_answer(response, answer.emplace());
      const bool keeps = response.keep_alive;
      const h1::Framing framing = response.framing;
      upstream->conn.in.consume(response.size);
      if (co_await http::read_to_end(upstream->conn, framing, response.content_length, answer->body,
                                     capture_limit)) {
        if (keeps) park(worker, std::move(upstream));
      } else {
        answer.reset();
      }
    }
    cluster.on_complete(endpoint, answer && answer->status < 500, clock.now() - started);
    co_return answer;
  }

  // ------------------------------------------------------------------ helpers
  static std::size_t pick_cluster(Worker& worker, const ProxyConfig& config, const Route& route) {
    if (route.clusters.size() == 1) return cluster_index(config, route.clusters.front().cluster);
    return pick_weighted_cluster(config, route, worker.random.uniform(total_weight(route)));
  }

  // A reply made here: text/plain, the reason in x-keel-reason (up to its first colon) and in
  // the body.
  Task<void> local_reply(Conn& client, Exchange& exchange, unsigned version, bool keep_alive,
                         unsigned status, std::string reason, WorkerCluster* cluster = nullptr) {
    const std::string body = reason + "\n";
    std::string head = version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
    head.append(std::to_string(status)).append(" ");
    head.append(http::reason_phrase(status));
    head.append("\r\ncontent-type: text/plain\r\nx-keel-reason: ");
    head.append(reason.substr(0, reason.find(':')));
    if (!exchange.request_id.empty()) head.append("\r\nx-request-id: ").append(exchange.request_id);
    head.append("\r\ncontent-length: ").append(std::to_string(body.size()));
    head.append(keep_alive ? (version == 10 ? "\r\nconnection: keep-alive" : "")
                           : "\r\nconnection: close");
    head.append("\r\n\r\n").append(body);
    std::array<net::const_buffer, 1> buffers{net::buffer(head)};
    error_code ec;
    client.expires_after(5s);
    if (!send_now(client, buffers, ec) && !ec) {
      co_await net::async_write(client.socket, buffers, net::redirect_error(use_task, ec));
    }
    exchange.status = status;
    if (cluster != nullptr) {
      finish(exchange, *cluster, exchange.status);
    } else {
      log(exchange);
    }
  }

  void finish(Exchange& exchange, WorkerCluster& cluster, unsigned status) {
    const double seconds = std::chrono::duration<double>(clock.now() - exchange.start).count();
    cluster.shared->latency->observe(seconds);
    if (status >= 100 && status < 600) cluster.shared->responses[status / 100]->inc();
    log(exchange);
  }

  // One JSON line into the worker's access log buffer; written out by the log's own thread.
  void log(const Exchange& exchange) {
    if (access_log_writer == nullptr) return;
    thread_local std::string line;
    line.clear();
    const auto now = std::chrono::system_clock::now();
    auto number = [&](auto value) {
      char digits[32];
      auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
      line.append(digits, ec == std::errc() ? end : digits);
    };
    auto text = [&](const char* key, std::string_view value) {
      line.append(",\"").append(key).append("\":\"");
      append_json_string(line, value);
      line.push_back('"');
    };
    line.append("{\"time_ms\":");
    number(std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count());
    text("request_id", exchange.request_id);
    text("method", exchange.method);
    text("path", exchange.path);
    line.append(",\"status\":");
    number(exchange.status);
    line.append(",\"duration_ms\":");
    const double milliseconds =
        std::chrono::duration<double, std::milli>(clock.now() - exchange.start).count();
    number(std::round(milliseconds * 1000) / 1000);
    text("cluster", exchange.cluster);
    text("upstream", exchange.upstream);
    line.append(",\"attempts\":");
    number(exchange.attempts);
    text("flags", flag_code(exchange.flag));
    line.push_back('}');
    access_log_writer->append(exchange.worker, line);
  }

  // ------------------------------------------------------------------ admin
  // With admin.token set, a request that changes state must carry it. Compared in time that
  // does not depend on where the first difference is.
  bool admin_token_matches(std::string_view authorization) const {
    const std::string& token = current()->config.admin_token;
    if (token.empty()) return true;
    constexpr std::string_view kBearer = "Bearer ";
    if (authorization.size() != kBearer.size() + token.size() ||
        !h1::iequals(authorization.substr(0, kBearer.size()), kBearer)) {
      return false;
    }
    unsigned char difference = 0;
    for (std::size_t i = 0; i < token.size(); ++i)
      difference |= static_cast<unsigned char>(authorization[kBearer.size() + i] ^ token[i]);
    return difference == 0;
  }

  http::Response admin_answer(const http::Request& request) {
    using http::Response;
    const std::string& path = request.path;
    const bool changes_state =
        request.method != "GET" && (path == "/reload" || path == "/migration");
    if (changes_state && !admin_token_matches(request.header("authorization"))) {
      Response response =
          Response::text(401, "this admin endpoint needs Authorization: Bearer <admin.token>\n");
      response.headers.emplace_back("www-authenticate", "Bearer realm=\"keel proxy admin\"");
      return response;
    }
    if (path == "/healthz") return Response::text(200, "ok\n");
    if (path == "/ready") {
      const bool ready = !stopping.load();
      return Response::text(ready ? 200 : 503, ready ? "ready\n" : "draining\n");
    }
    if (path == "/metrics") {
      Response response = Response::text(200, registry.render_prometheus());
      response.content_type = "text/plain; version=0.0.4";
      return response;
    }
    if (path == "/clusters") return Response::json(200, clusters_json() + "\n");
    if (path == "/config") return Response::json(200, config_json() + "\n");
    if (path == "/migration" && request.method == "GET") {
      return Response::json(200, migration_store->report_json() + "\n");
    }
    if (path == "/migration") {
      // POST /migration?route=NAME&stage=canary&percent=20
      const std::string route_name = request.param("route").value_or("");
      const std::string stage_text = request.param("stage").value_or("");
      const std::string percent_text = request.param("percent").value_or("");
      const auto stage = parse_stage(stage_text);
      const double percent = std::atof(percent_text.c_str());
      Status changed;
      if (request.method != "POST") {
        changed = Error(errc::invalid_argument, "use POST to change a stage");
      } else if (!stage) {
        changed = Error(errc::invalid_argument,
                        "stage= must be legacy, shadow, canary, modern or retired");
      } else {
        changed = migration_store->set_stage(route_name, *stage, percent);
      }
      if (!changed) return Response::text(400, changed.error().message() + "\n");
      log_event("migration", route_name + " -> " + to_string(*stage) +
                                 (*stage == Stage::kCanary ? " " + percent_text + "%" : ""));
      return Response::json(200, migration_store->find(route_name)->report_json() + "\n");
    }
    if (path == "/reload") {
      // POST only: a reload changes what the proxy does.
      std::function<Status()> reloader;
      {
        std::lock_guard lock(reload_mutex);
        reloader = reload_hook;
      }
      if (request.method != "POST") {
        Response response = Response::text(405, "POST /reload re-reads the config file\n");
        response.headers.emplace_back("allow", "POST");
        return response;
      }
      if (!reloader) return Response::text(501, "this proxy was not started from a config file\n");
      if (auto status = reloader(); !status) {
        return Response::text(400, "reload refused, still serving the previous config:\n" +
                                       status.error().message() + "\n");
      }
      return Response::text(200, "reloaded\n");
    }
    if (path == "/") {
      Response response = Response::text(200, status_page());
      response.content_type = "text/html; charset=utf-8";
      return response;
    }
    return Response::text(
        404, "not found; try /, /healthz, /ready, /metrics, /clusters, /config, POST /reload\n");
  }

  // An operator's change, on stderr (the access log is for requests).
  static void log_event(const char* what, const std::string& text) {
    log::get("proxy")->info("{}: {}", what, text);
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
                             {"failures", cluster->endpoint_failures[i]->value()},
                             {"in_flight", cluster->in_flight(i)},
                             {"latency_cost_ms", cluster->latency_cost_ms(i)}});
      }
      out.push_back({{"name", cluster->config->name},
                     {"policy", cluster->config->load_balancer.policy},
                     {"breaker", cluster->breaker ? to_string(cluster->breaker->state()) : "none"},
                     {"active_requests", cluster->requests.load()},
                     {"concurrency_limit", cluster->concurrency
                                               ? nlohmann::json(cluster->concurrency->limit())
                                               : nlohmann::json(nullptr)},
                     {"connections", cluster->connections.load()},
                     {"requests", cluster->requests_total->value()},
                     {"retries", cluster->retries_total->value()},
                     {"hedges", cluster->hedges_total->value()},
                     {"hedge_wins", cluster->hedge_wins_total->value()},
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

// Inside `keel proxy`'s server: the state shared by the files that implement it (server.cc:
// setup, workers, sessions; handle.cc: one request; upstream.cc: connections, tries, hedges,
// retries; shadow.cc: Strangler Fig copies; health.cc: active checks and outlier ejection;
// admin.cc: the admin listener). Not installed; included by those files only.
#pragma once

// Asio's awaitable.hpp uses std::exchange without including <utility> (Boost 1.74).
#include <utility>
//

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "keel/balance/endpoint_set.h"
#include "keel/balance/load_balancer.h"
#include "keel/console/console.h"
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
#include "keel/proxy/messages.h"
#include "keel/proxy/router.h"
#include "keel/proxy/server.h"
#include "keel/resilience/circuit_breaker.h"

namespace keel::proxy {

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

// Sets `timer` to fire at `at` on `clock`'s timeline (Asio's timers run on the real steady
// clock; the proxy's decisions on its injected Clock). TimePoint::max(): never.
inline void arm(net::steady_timer& timer, const Clock& clock, TimePoint at) {
  if (at == TimePoint::max()) {
    timer.expires_at(net::steady_timer::time_point::max());
  } else {
    timer.expires_after(std::max(Duration::zero(), at - clock.now()));
  }
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
    // The worker's outlier ejection, as nanoseconds on the clock's timeline; min(): none.
    std::atomic<TimePoint::rep> ejected_until{TimePoint::min().time_since_epoch().count()};
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
  // How much longer the endpoint stays ejected on the worker that ejected it longest; zero
  // when no worker has it ejected.
  Duration ejected_for(std::size_t endpoint, TimePoint now) const {
    Duration longest = Duration::zero();
    for (std::size_t w = 0; w < view_workers; ++w) {
      const TimePoint until(
          Duration(views[w * config->endpoints.size() + endpoint].ejected_until.load(
              std::memory_order_relaxed)));
      if (until > now) longest = std::max(longest, until - now);  // min() - now would overflow
    }
    return longest;
  }
  std::vector<metrics::CallbackRegistration> gauges;
};

inline bool idempotent(std::string_view method) {
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
inline std::optional<Held> try_hold(std::atomic<std::uint32_t>& counter, std::uint32_t limit) {
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

  // The ejections of this worker's outlier detector, published for the console.
  void publish_ejection(std::size_t i) {
    views[i].ejected_until.store(endpoints[i].ejected_until.time_since_epoch().count(),
                                 std::memory_order_relaxed);
  }
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

inline Upstream::Upstream(Worker& w, std::shared_ptr<ClusterShared> c, std::size_t e)
    : conn(w, Socket(w.io.get_executor()), false), endpoint(e), cluster(std::move(c)) {
  cluster->connections.fetch_add(1, std::memory_order_relaxed);
}

// What a config makes: the clusters' shared state and each worker's own view of them. A
// reload builds a new one; a request keeps the one it started with until it ends.
// A route's own figures, for the console (the cluster's are in ClusterShared).
struct RouteMetrics {
  std::string listener;
  std::string name;
  metrics::Counter* requests = nullptr;
  std::array<metrics::Counter*, 6> responses{};  // by status class: [1] 1xx .. [5] 5xx
  metrics::Histogram* latency = nullptr;
};

struct Generation {
  ProxyConfig config;
  std::vector<std::shared_ptr<ClusterShared>> clusters;
  std::vector<std::vector<std::unique_ptr<WorkerCluster>>> worker_clusters;  // [worker][cluster]
  std::map<const Route*, std::shared_ptr<MigrationState>> migrations;  // outlive reloads by name
  std::map<const Route*, RouteMetrics> route_metrics;
};

// What the console's log shows: breaker transitions, health changes, ejections, stage changes.
// Bounded: the last kKept.
struct ConsoleEvents {
  static constexpr std::size_t kKept = 200;
  struct Event {
    std::int64_t unix_ms = 0;
    std::string what;  // breaker, health, ejection, migration
    std::string cluster;
    std::string text;
    std::string from, to;  // a breaker's states
  };
  void push(Event event);
  std::vector<Event> recent() const;

 private:
  mutable std::mutex mutex;
  std::deque<Event> events;
};

// A listener's sockets outlive reloads; its limits and routes come from the current config.
struct ListenerShared {
  std::size_t index = 0;
  std::atomic<std::uint32_t> connections{0};
  tcp::endpoint bound;
};

// A response's status and headers as a diff sees them (the body is added by the caller), into
// `answer`, reusing what its strings hold.
inline void fill_answer(const h1::Head& response, Answer& answer) {
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
  const RouteMetrics* route = nullptr;  // none when no route matched
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
    route = nullptr;
    attempts = 0;
    flag = Flag::kNone;
    start = now;
  }
};

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
  std::unique_ptr<http::Server> admin;          // the admin listener, when the config has one
  std::unique_ptr<console::Feed> console_feed;  // with the admin listener
  ConsoleEvents console_events;
  // The previous sample's values, for rates and interval p99s (the Feed's tick only).
  struct EndpointSeen {
    bool healthy = true;
    std::uint64_t ejections = 0;
  };
  TimePoint console_previous_at{};
  std::unordered_map<const metrics::Counter*, double> console_counters;
  std::unordered_map<const metrics::Histogram*, metrics::Histogram::Snapshot> console_histograms;
  std::unordered_map<std::string, EndpointSeen> console_endpoints;
  std::atomic<bool> stopping{false};
  std::mutex reload_mutex;
  std::function<Status()> reload_hook;  // what POST /reload on the admin listener runs

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

  Impl(Clock& k, std::ostream* log, std::uint64_t s) : clock(k), seed(s), access_log(log) {}

  std::shared_ptr<const Generation> current() const;

  // ------------------------------------------------------------------ setup (server.cc)
  Result<std::shared_ptr<const Generation>> build(ProxyConfig config);

  Status setup(ProxyConfig initial);

  void bind_cluster_metrics(ClusterShared& c);

  // ------------------------------------------------------------------ health.cc
  // The timers of a generation: outlier ticks on every worker, health checks on worker 0. They
  // end when a reload replaces the generation or the server stops.
  void start_loops(const std::shared_ptr<const Generation>& g);

  // Sleeps `delay` on worker `w`; false when the generation is no longer the current one.
  Task<bool> sleep_while_current(std::size_t w, const Generation* g, Duration delay);

  Task<void> outlier_loop(std::weak_ptr<const Generation> weak, std::size_t w, std::size_t c);

  Task<void> health_loop(std::weak_ptr<const Generation> weak, std::size_t c);

  // One active check: GET the cluster's health path on endpoint i; a 2xx passes. A change of
  // health goes to every worker's endpoint set.
  Task<void> probe(std::shared_ptr<const Generation> g, std::size_t c, std::size_t i);

  // ------------------------------------------------------------------ run and stop (server.cc)
  void run();

  void stop(Duration drain);

  Task<void> accept_loop(Worker& worker, tcp::acceptor& acceptor, ListenerShared& listener);

  // ------------------------------------------------------------------ downstream (server.cc)
  Task<void> session(Worker& worker, ListenerShared& listener, Socket socket,
                     Held /*connection_slot: held until the session ends*/);

  // One request, from its parsed head to the end of its response (handle.cc). False: close.
  // `generation_held`: the session's, kept by it until this returns.
  Task<bool> handle(Worker& worker, ListenerShared& listener,
                    const std::shared_ptr<const Generation>& generation_held, Conn& client,
                    Scratch& scratch, const std::string& peer);

  // ------------------------------------------------------------------ upstream (upstream.cc)
  // A pooled connection to the endpoint, or a new one (within the cluster's max_connections and
  // connect timeout). Null, with `failure` set, when there is none.
  static Task<std::unique_ptr<Upstream>> acquire(Worker& worker, WorkerCluster& cluster,
                                                 std::size_t endpoint, TimePoint deadline,
                                                 Flag& failure, TryHandle* handle);

  // Sends the request (the head, then the held body or the client's body as it comes) on a
  // pooled or new connection and reads the response head into `response`. `client` is read
  // only while `body` streams. Null, with `failure` set, when that did not work out. A hedged
  // try passes `handle`: its connection is there while this runs, for the race to close.
  Task<std::unique_ptr<Upstream>> send(Worker& worker, WorkerCluster& cluster, std::size_t endpoint,
                                       const std::string& head, const std::string& held_body,
                                       Conn* client, BodyLeft& body, bool head_request,
                                       h1::Head& response, TimePoint deadline, Flag& failure,
                                       TryHandle* handle = nullptr);

  // What a finished try says about its endpoint: its latency and failure counts, the outlier
  // detector, the breaker, and the cluster's window of try latencies (for hedge delays).
  static void record_try(WorkerCluster& cluster, std::size_t endpoint, Flag failure,
                         unsigned status, Duration latency,
                         std::optional<resilience::BreakerPermit>& permit);

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
                                       h1::Head& response, Flag& failure, std::size_t& answered_by);

  // A hedged request's try: send() into its Try, then wakes the race.
  Task<void> run_try(Worker& worker, WorkerCluster& cluster, Try& t, const std::string& head,
                     const std::string& held_body, bool head_request, TimePoint deadline,
                     BodyLeft& no_body, net::steady_timer& wake);

  // Sends `head` and streams the response body upstream → client. False when either side
  // failed. `dechunk`: the client gets a chunked body's data only (HTTP/1.0), via `decoded`.
  // `capture`: keeps a copy of the first `capture_limit` body bytes (for a shadow diff).
  Task<bool> relay_response(Conn& client, Upstream& upstream, const std::string& head,
                            h1::Framing framing, std::uint64_t length, bool dechunk,
                            std::string& decoded, const Limits& limits, TimePoint deadline,
                            std::string* capture = nullptr, std::size_t capture_limit = 0);

  static void park(Worker& worker, std::unique_ptr<Upstream> upstream);

  Task<void> backoff(Worker& worker, const RetryPolicy& retry, std::uint32_t attempt,
                     TimePoint deadline);

  // ------------------------------------------------------------------ shadow (shadow.cc)
  // The mirror worker's loop: takes the copies the listener workers queued and compares each
  // in a coroutine of its own. Polls (1 ms while copies come, backing off to 32 ms when none
  // do), so that a worker queueing a copy makes no system call and takes no lock.
  Task<void> mirror_loop(Worker& mirrors);

  // Sends a shadow copy to the modern cluster, reads its answer and compares it with legacy's.
  // Runs after the client has its answer; nothing here reaches the client. The Mirror goes
  // back to its lane at the end, unchanged.
  Task<void> shadow(Worker& worker, MirrorLane& lane, Mirror& mirror);

  // Sends the shadow copy to endpoint i of `cluster` and reads the whole answer, keeping the
  // first `capture_limit` body bytes; nullopt when that failed. The connection goes back to the
  // pool after.
  Task<std::optional<Answer>> fetch(Worker& worker, WorkerCluster& cluster, std::size_t endpoint,
                                    const Mirror& mirror, std::size_t capture_limit,
                                    Duration timeout);

  // ------------------------------------------------------------------ handle.cc
  static std::size_t pick_cluster(Worker& worker, const ProxyConfig& config, const Route& route);

  // A reply made here: text/plain, the reason in x-keel-reason (up to its first colon) and in
  // the body.
  Task<void> local_reply(Conn& client, Exchange& exchange, unsigned version, bool keep_alive,
                         unsigned status, std::string reason, WorkerCluster* cluster = nullptr);

  void finish(Exchange& exchange, WorkerCluster& cluster, unsigned status);

  // One JSON line into the worker's access log buffer; written out by the log's own thread.
  void log(const Exchange& exchange);

  // ------------------------------------------------------------------ admin (admin.cc)
  // With admin.token set, a request that changes state must carry it. Compared in time that
  // does not depend on where the first difference is.
  bool admin_token_matches(std::string_view authorization) const;

  http::Response admin_answer(const http::Request& request);

  // An operator's change, on stderr (the access log is for requests).
  static void log_event(const char* what, const std::string& text);

  std::string clusters_json() const;

  std::string config_json() const;

  // ------------------------------------------------------------------ console (console.cc)
  void console_event(ConsoleEvents::Event event);
  std::string console_sample();
  std::string console_body() const;
};

}  // namespace keel::proxy

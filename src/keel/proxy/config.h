// `keel proxy`'s configuration: listeners with their limits and routes, clusters with their
// endpoints and policies, the admin listener. Read from YAML; every mistake is reported with
// file, line, column and field, and a config with any mistake is refused as a whole.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "keel/balance/endpoint_set.h"
#include "keel/balance/health_checker.h"
#include "keel/balance/load_balancer.h"
#include "keel/balance/outlier_detector.h"
#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/http/address.h"
#include "keel/http/limits.h"
#include "keel/proxy/migration.h"
#include "keel/resilience/adaptive_limiter.h"
#include "keel/resilience/circuit_breaker.h"
#include "keel/resilience/retry.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace keel::proxy {

using http::HostPort;
using http::parse_host_port;

// Hard limits on what a client may send, each configurable per listener.
struct Limits : http::ServerLimits {
  // A request body up to this size is held so that the request can be retried; a longer one
  // is streamed, and is not retried once its first byte went upstream.
  std::uint64_t retry_buffer_bytes = 64 * 1024;
};

struct HeaderMatch {
  std::string name;   // lower case
  std::string value;  // exact; empty with `present` = only that the header exists
  bool present = false;
};

struct WeightedCluster {
  std::string cluster;
  std::uint32_t weight = 1;
};

// How one try ended, as far as retrying is concerned.
enum class TryEnd {
  kResponse,        // a response head arrived (its status decides)
  kConnectFailure,  // could not connect: nothing was sent
  kReset,           // the upstream closed or reset the connection before a response
  kTimeout,         // no response within the per-try timeout
};

// Envoy's retry conditions, with Envoy's meaning (x-envoy-retry-on), plus `timeout`:
//
//   condition               5xx answer  502/503/504  connect failure  reset  per-try timeout
//   5xx                         yes         yes            yes          yes         yes
//   gateway-error                           yes            yes          yes         yes
//   reset                                                  yes          yes         yes
//   connect-failure                                        yes
//   timeout                                                                         yes
//   retriable-status-codes  the statuses in retriable_status_codes
//
// (Envoy counts a reset, and a per-try timeout, as the 5xx / 504 it turns into.)
struct RetryPolicy {
  std::uint32_t num_retries = 1;
  bool on_5xx = false;
  bool on_gateway_error = true;
  bool on_connect_failure = true;
  bool on_reset = true;
  bool on_timeout = false;
  bool on_status_codes = false;  // retriable-status-codes
  std::vector<unsigned> status_codes;
  bool allow_non_idempotent = false;  // POST, PATCH: only when the route says so
  Duration base_interval = 25ms;      // backoff: full jitter on base × 2^n, capped
  Duration max_interval = 250ms;

  // Whether a try that ended this way (with `status` when kResponse) is retried, as far as
  // the conditions go (attempts, idempotency, the budget and the deadline are the caller's).
  bool retries(TryEnd end, unsigned status) const;
};

// Hedged requests (Envoy's hedge_policy, Finagle's backup requests): when a try has produced no
// response head after a delay, another try goes to a different endpoint, and the first answer
// wins; the others are cancelled. For idempotent requests with a held body only. A hedge is a
// retry as far as the retry budget and the cluster's max_retries go (one that cannot get them
// is not sent), but does not use up num_retries.
struct HedgePolicy {
  // The delay: fixed (after_ms), or this percentile (after_percentile, e.g. 95) of the recent
  // try latencies to the cluster as one worker saw them — never below min_after, and
  // initial_after until the worker has enough samples.
  std::optional<Duration> after;
  double after_percentile = 0;
  Duration min_after = 5ms;
  Duration initial_after = 50ms;
  std::uint32_t max_extra = 1;  // hedges per request, 1..3

  Duration delay_for(std::optional<Duration> percentile_value) const {
    if (after) return *after;
    return percentile_value ? std::max(*percentile_value, min_after) : initial_after;
  }
};

struct Route {
  std::string name;  // for logs: the match, when no name is given
  // Path match: exactly one of these.
  std::string prefix;
  std::string exact;
  std::string regex_text;
  // RE2, matched against the whole path (no query): linear in the path, whatever the pattern.
  std::shared_ptr<const re2::RE2> regex;
  std::string method;  // empty: any
  std::vector<HeaderMatch> headers;
  std::vector<WeightedCluster> clusters;  // one entry for `cluster:`
  Duration timeout = 15s;                 // the whole request, across retries
  std::optional<RetryPolicy> retry;       // overrides the cluster's
  std::optional<HedgePolicy> hedge;       // overrides the cluster's
  // A Strangler Fig route: legacy and modern clusters and a stage, instead of `cluster`.
  std::optional<MigrationConfig> migration;
};

// What the proxy adds to a request on its way upstream. Turned off, a field the client sent
// passes through unchanged (and none is added).
struct ForwardedHeaders {
  bool x_forwarded_for = true;      // append the client's address to X-Forwarded-For
  bool x_forwarded_proto = true;    // set X-Forwarded-Proto: http
  bool generate_request_id = true;  // make an X-Request-Id when the client sent none
};

struct Listener {
  std::string name;
  HostPort address;
  std::uint32_t workers = 1;  // threads, each with its own io_context and SO_REUSEPORT socket
  Limits limits;
  ForwardedHeaders forwarded_headers;
  std::vector<Route> routes;
};

// Envoy's circuit-breaker thresholds: over any of them a request gets a 503 (overflow). At
// max_connections a request first waits for a connection, as one of at most max_pending.
struct ClusterLimits {
  std::uint32_t max_connections = 1024;  // upstream connections, open or being opened
  std::uint32_t max_pending = 1024;      // requests waiting for a connection at that limit
  std::uint32_t max_requests = 1024;     // requests in flight to the cluster
  std::uint32_t max_retries = 3;         // retries in flight at once
};

struct Cluster {
  std::string name;
  std::vector<balance::EndpointConfig> endpoints;
  balance::PolicyConfig load_balancer;
  balance::EndpointSet::Options endpoint_options;
  Duration connect_timeout = 1s;
  Duration per_try_timeout = 5s;
  std::uint32_t max_idle_connections = 64;  // kept per worker and endpoint
  Duration idle_timeout = 60s;              // a pooled connection unused this long is closed
  RetryPolicy retry;
  std::optional<HedgePolicy> hedge;  // off unless given
  // Retries as a share of requests (Finagle's and Linkerd's budget): on by default, 20% of the
  // requests of the last 10 s plus 3 a second, so a failing cluster is not hit with n × the load.
  resilience::RetryBudget::Config retry_budget;
  ClusterLimits limits;
  std::optional<resilience::CircuitBreakerConfig> circuit_breaker;
  std::optional<balance::HealthCheckConfig> health_check;  // active HTTP checks
  std::optional<balance::OutlierConfig> outlier_detection;
  // Envoy's adaptive concurrency: a limit on requests in flight to the cluster that follows
  // their latency (gradient) or their drops (aimd); over it, 503 overflow at once.
  std::optional<std::variant<resilience::GradientLimit::Config, resilience::AimdLimit::Config>>
      adaptive_concurrency;
};

struct ProxyConfig {
  std::vector<Listener> listeners;
  std::vector<Cluster> clusters;
  std::optional<HostPort> admin;
  // Required by the admin endpoints that change state (POST /reload, POST /migration) as
  // `Authorization: Bearer TOKEN`; the config must set one when the admin listener is not on
  // loopback.
  std::string admin_token;
  bool access_log = true;  // JSON lines on stdout
  // Where migrating routes' stages are kept across restarts (JSON); empty: not kept.
  std::string migration_state_file;
  std::string source;  // the file it came from, for /config and messages

  const Cluster* cluster(std::string_view name) const;
};

// Reads and checks a config: every listener has routes, every route names known clusters, no
// two listeners or clusters share a name, addresses parse. All errors at once, each with its
// place.
Result<ProxyConfig> parse_config(std::string_view yaml, const std::string& source_name);
Result<ProxyConfig> load_config(const std::string& path);

// "127.0.0.1:8080" or "[::1]:8080" or "localhost:80"; port 0 (any free port) only with
// `any_port`, for listeners.

}  // namespace keel::proxy

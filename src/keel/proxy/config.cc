#include "keel/proxy/config.h"

#include <re2/re2.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "keel/core/config.h"
#include "keel/core/text.h"

namespace keel::proxy {
namespace {

using config::Node;

constexpr std::string_view kMethods[] = {"GET",     "HEAD",  "POST",  "PUT",    "DELETE",
                                         "OPTIONS", "PATCH", "TRACE", "CONNECT"};

// True when `key` holds a valid address (port 0 only where `any_port`: a listener).
bool read_address(const Node& node, std::string_view key, HostPort& out, bool any_port = false) {
  std::string text;
  node.read(key, text);
  if (text.empty()) return false;
  auto parsed = parse_host_port(text, any_port);
  if (!parsed) {
    node.fail(key, parsed.error().message());
    return false;
  }
  out = *parsed;
  return true;
}

Limits read_limits(const Node& node) {
  Limits limits;
  node.expect_only({"max_connections", "max_header_bytes", "max_body_bytes", "header_timeout_ms",
                    "idle_timeout_ms", "retry_buffer_bytes"});
  node.read("max_connections", limits.max_connections, 1, 1000000);
  node.read("max_header_bytes", limits.max_header_bytes, 1024, 1024 * 1024);
  std::int64_t body = static_cast<std::int64_t>(limits.max_body_bytes);
  node.read("max_body_bytes", body, 0, std::int64_t{1} << 40);
  limits.max_body_bytes = static_cast<std::uint64_t>(body);
  node.read_ms("header_timeout_ms", limits.header_timeout, 1ms, 3600s);
  node.read_ms("idle_timeout_ms", limits.idle_timeout, 1ms, 24h);
  std::int64_t retry_buffer = static_cast<std::int64_t>(limits.retry_buffer_bytes);
  node.read("retry_buffer_bytes", retry_buffer, 0, 64 * 1024 * 1024);
  limits.retry_buffer_bytes = static_cast<std::uint64_t>(retry_buffer);
  return limits;
}

// Envoy's retry conditions, as a comma-separated string like its x-envoy-retry-on header.
RetryPolicy read_retry(const Node& node, RetryPolicy policy) {
  node.expect_only({"num_retries", "retry_on", "retriable_status_codes", "allow_non_idempotent",
                    "base_interval_ms", "max_interval_ms"});
  node.read("num_retries", policy.num_retries, 0, 10);
  const bool conditions_given = node.child("retry_on").present();
  if (conditions_given) {
    policy.on_5xx = policy.on_gateway_error = policy.on_connect_failure = policy.on_reset =
        policy.on_timeout = policy.on_status_codes = false;
    std::string list;
    node.read("retry_on", list);
    for (const auto& word : split_list(list)) {
      if (word == "5xx") {
        policy.on_5xx = true;
      } else if (word == "gateway-error") {
        policy.on_gateway_error = true;
      } else if (word == "connect-failure") {
        policy.on_connect_failure = true;
      } else if (word == "reset") {
        policy.on_reset = true;
      } else if (word == "timeout") {
        policy.on_timeout = true;
      } else if (word == "retriable-status-codes") {
        policy.on_status_codes = true;
      } else {
        node.fail("retry_on", "unknown condition \"" + word +
                                  "\"; expected a comma-separated list of 5xx, gateway-error, "
                                  "reset, connect-failure, timeout, retriable-status-codes");
      }
    }
  }
  std::string codes;
  node.read("retriable_status_codes", codes);
  if (!codes.empty()) {
    // Envoy ignores the codes unless retry_on lists the condition; a silent no-op is a trap.
    if (!conditions_given) {
      policy.on_status_codes = true;
    } else if (!policy.on_status_codes) {
      node.fail("retriable_status_codes",
                "is set, but retry_on does not list retriable-status-codes");
    }
  }
  for (const auto& word : split_list(codes)) {
    unsigned value = 0;
    auto [ptr, ec] = std::from_chars(word.data(), word.data() + word.size(), value);
    if (ec != std::errc() || ptr != word.data() + word.size() || value < 100 || value > 599) {
      node.fail("retriable_status_codes",
                "expected comma-separated status codes from 100 to 599, got \"" + word + "\"");
    } else {
      policy.status_codes.push_back(value);
    }
  }
  node.read("allow_non_idempotent", policy.allow_non_idempotent);
  node.read_ms("base_interval_ms", policy.base_interval, 0ms, 60s);
  node.read_ms("max_interval_ms", policy.max_interval, 0ms, 600s);
  if (policy.max_interval < policy.base_interval) {
    node.fail("max_interval_ms", "must not be below base_interval_ms");
  }
  return policy;
}

// Exactly one of after_ms and after_percentile; the floor and the initial delay only go with a
// percentile (with a fixed delay they would mean nothing, and silently so).
HedgePolicy read_hedge(const Node& node) {
  HedgePolicy hedge;
  node.expect_only(
      {"after_ms", "after_percentile", "min_after_ms", "initial_after_ms", "max_extra"});
  const bool fixed = node.child("after_ms").present();
  const bool percentile = node.child("after_percentile").present();
  if (fixed == percentile) node.fail("", "give exactly one of after_ms or after_percentile");
  if (fixed) {
    Duration after = 0ms;
    node.read_ms("after_ms", after, 1ms, 60s);
    hedge.after = after;
  }
  if (percentile) node.read("after_percentile", hedge.after_percentile, 50.0, 99.9);
  for (std::string_view key : {"min_after_ms", "initial_after_ms"}) {
    if (node.child(key).present() && !percentile) node.fail(key, "goes with after_percentile only");
  }
  node.read_ms("min_after_ms", hedge.min_after, 1ms, 60s);
  node.read_ms("initial_after_ms", hedge.initial_after, 1ms, 60s);
  node.read("max_extra", hedge.max_extra, 1, 3);
  return hedge;
}

Route read_route(const Node& node, std::size_t index) {
  Route route;
  node.expect_only({"name", "match", "cluster", "weighted_clusters", "migration", "timeout_ms",
                    "retry", "hedge"});
  node.read("name", route.name);
  const Node match = node.child("match");
  if (!match.present()) node.require("match");
  match.expect_only({"prefix", "exact", "regex", "method", "headers"});
  match.read("prefix", route.prefix);
  match.read("exact", route.exact);
  match.read("regex", route.regex_text);
  const int kinds = !route.prefix.empty() + !route.exact.empty() + !route.regex_text.empty();
  if (match.present() && kinds != 1) {
    match.fail("", "give exactly one of prefix, exact or regex");
  }
  for (const std::string* path : {&route.prefix, &route.exact}) {
    if (!path->empty() && (*path)[0] != '/') match.fail("", "a path must start with '/'");
  }
  if (!route.regex_text.empty()) {
    re2::RE2::Options options;
    options.set_log_errors(false);
    auto regex = std::make_shared<const re2::RE2>(route.regex_text, options);
    if (regex->ok()) {
      route.regex = std::move(regex);
    } else {
      match.fail("regex", "not a valid regular expression (RE2 syntax): " + regex->error());
    }
  }
  match.read("method", route.method);
  if (!route.method.empty() &&
      std::find(std::begin(kMethods), std::end(kMethods), route.method) == std::end(kMethods)) {
    match.fail("method",
               "expected an HTTP method in capitals, such as GET, got \"" + route.method + "\"");
  }
  for (const auto& [name, value] : match.child("headers").entries()) {
    HeaderMatch header{.name = ascii_lower(name)};
    std::string text;
    match.child("headers").read(name, text);
    if (text == "*") {
      header.present = true;
    } else {
      header.value = text;
    }
    route.headers.push_back(std::move(header));
  }
  std::string cluster;
  node.read("cluster", cluster);
  if (!cluster.empty()) route.clusters.push_back({cluster, 1});
  for (const Node& item : node.child("weighted_clusters").items()) {
    item.expect_only({"cluster", "weight"});
    item.require("cluster");
    WeightedCluster weighted;
    item.read("cluster", weighted.cluster);
    item.read("weight", weighted.weight, 1, 1000000);
    route.clusters.push_back(std::move(weighted));
  }
  if (Node migration = node.child("migration"); migration.present()) {
    route.migration = MigrationConfig::read(migration);
    if (!route.clusters.empty()) {
      node.fail("migration", "a migrating route names its clusters in `migration` only");
    }
  } else if (route.clusters.empty()) {
    node.fail("", "a route needs `cluster`, `weighted_clusters` or `migration`");
  } else if (!cluster.empty() && route.clusters.size() > 1) {
    node.fail("", "give `cluster` or `weighted_clusters`, not both");
  }
  node.read_ms("timeout_ms", route.timeout, 1ms, 3600s);
  if (Node retry = node.child("retry"); retry.present()) route.retry = read_retry(retry, {});
  if (Node hedge = node.child("hedge"); hedge.present()) route.hedge = read_hedge(hedge);
  if (route.name.empty()) {
    route.name = !route.prefix.empty()  ? "prefix:" + route.prefix
                 : !route.exact.empty() ? "exact:" + route.exact
                                        : "regex:" + route.regex_text;
    if (route.name.size() <= 7) route.name = "route-" + std::to_string(index);
  }
  return route;
}

Cluster read_cluster(const Node& node) {
  Cluster cluster;
  node.expect_only({"name", "endpoints", "load_balancer", "endpoint_options", "connect_timeout_ms",
                    "per_try_timeout_ms", "max_idle_connections", "idle_timeout_ms", "retry",
                    "hedge", "retry_budget", "limits", "adaptive_concurrency", "circuit_breaker",
                    "health_check", "outlier_detection"});
  node.require("name");
  node.read("name", cluster.name);
  node.require("endpoints");
  for (const Node& item : node.child("endpoints").items()) {
    item.expect_only({"address", "weight"});
    item.require("address");
    balance::EndpointConfig endpoint;
    HostPort address;
    const bool valid = read_address(item, "address", address);
    endpoint.address = address.to_string();
    item.read("weight", endpoint.weight, 1, 1000000);
    if (valid) cluster.endpoints.push_back(std::move(endpoint));
  }
  if (node.child("endpoints").present() && node.child("endpoints").items().empty()) {
    node.fail("endpoints", "a cluster needs at least one endpoint");
  }
  if (Node lb = node.child("load_balancer"); lb.present()) {
    cluster.load_balancer = balance::PolicyConfig::read(lb);
  }
  if (Node options = node.child("endpoint_options"); options.present()) {
    cluster.endpoint_options = balance::EndpointSet::Options::read(options);
  }
  node.read_ms("connect_timeout_ms", cluster.connect_timeout, 1ms, 600s);
  node.read_ms("per_try_timeout_ms", cluster.per_try_timeout, 1ms, 3600s);
  node.read("max_idle_connections", cluster.max_idle_connections, 0, 100000);
  node.read_ms("idle_timeout_ms", cluster.idle_timeout, 1ms, 24h);
  if (Node retry = node.child("retry"); retry.present()) {
    cluster.retry = read_retry(retry, cluster.retry);
  }
  if (Node hedge = node.child("hedge"); hedge.present()) cluster.hedge = read_hedge(hedge);
  if (Node budget = node.child("retry_budget"); budget.present()) {
    cluster.retry_budget = resilience::RetryBudget::read_config(budget);
  }
  if (Node limits = node.child("limits"); limits.present()) {
    limits.expect_only({"max_connections", "max_pending", "max_requests", "max_retries"});
    limits.read("max_pending", cluster.limits.max_pending, 0, 1000000);
    limits.read("max_connections", cluster.limits.max_connections, 1, 1000000);
    limits.read("max_requests", cluster.limits.max_requests, 1, 1000000);
    limits.read("max_retries", cluster.limits.max_retries, 0, 1000000);
  }
  if (Node breaker = node.child("circuit_breaker"); breaker.present()) {
    cluster.circuit_breaker = resilience::CircuitBreakerConfig::read(breaker);
  }
  if (Node check = node.child("health_check"); check.present()) {
    cluster.health_check = balance::HealthCheckConfig::read(check);
  }
  if (Node adaptive = node.child("adaptive_concurrency"); adaptive.present()) {
    // One algorithm, named by its key: {gradient: {...}} or {aimd: {...}}.
    adaptive.expect_only({"gradient", "aimd"});
    const Node gradient = adaptive.child("gradient");
    const Node aimd = adaptive.child("aimd");
    if (gradient.present() == aimd.present()) {
      adaptive.fail("", "needs exactly one of gradient: {...} or aimd: {...}");
    } else if (gradient.present()) {
      cluster.adaptive_concurrency = resilience::GradientLimit::read_config(gradient);
    } else {
      cluster.adaptive_concurrency = resilience::AimdLimit::read_config(aimd);
    }
  }
  if (Node outlier = node.child("outlier_detection"); outlier.present()) {
    cluster.outlier_detection = balance::OutlierConfig::read(outlier);
  }
  return cluster;
}

}  // namespace

bool RetryPolicy::retries(TryEnd end, unsigned status) const {
  switch (end) {
    case TryEnd::kConnectFailure:
      return on_connect_failure || on_reset || on_5xx || on_gateway_error;
    case TryEnd::kReset:
      return on_reset || on_5xx || on_gateway_error;
    case TryEnd::kTimeout:
      return on_timeout || on_reset || on_5xx || on_gateway_error;
    case TryEnd::kResponse:
      break;
  }
  const bool gateway_error = status == 502 || status == 503 || status == 504;
  return (on_5xx && status >= 500 && status <= 599) || (on_gateway_error && gateway_error) ||
         (on_status_codes &&
          std::find(status_codes.begin(), status_codes.end(), status) != status_codes.end());
}

const Cluster* ProxyConfig::cluster(std::string_view name) const {
  for (const auto& c : clusters) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

Result<ProxyConfig> parse_config(std::string_view yaml, const std::string& source_name) {
  auto document = config::Document::parse(yaml, source_name);
  if (!document) return document.error();
  const Node root = document->root();
  ProxyConfig proxy;
  proxy.source = source_name;
  root.expect_only({"listeners", "clusters", "admin", "access_log", "migration_state_file"});
  root.read("migration_state_file", proxy.migration_state_file);
  root.require("listeners");
  root.require("clusters");
  root.read("access_log", proxy.access_log);
  if (Node admin = root.child("admin"); admin.present()) {
    admin.expect_only({"address", "token"});
    admin.require("address");
    admin.read("token", proxy.admin_token);
    HostPort address;
    if (read_address(admin, "address", address, true)) {
      proxy.admin = address;
      const bool loopback =
          address.host == "localhost" || address.host == "::1" || address.host.starts_with("127.");
      if (!loopback && proxy.admin_token.empty()) {
        admin.fail("token", "is required when the admin listener is not on loopback (" +
                                address.to_string() + "): it guards reload and migration changes");
      }
    }
  }
  for (const Node& item : root.child("clusters").items()) {
    proxy.clusters.push_back(read_cluster(item));
  }
  std::set<std::string> names;
  for (std::size_t i = 0; i < proxy.clusters.size(); ++i) {
    if (!proxy.clusters[i].name.empty() && !names.insert(proxy.clusters[i].name).second) {
      root.child("clusters").items()[i].fail("name", "another cluster has this name");
    }
  }
  names.clear();
  const auto listener_nodes = root.child("listeners").items();
  for (std::size_t l = 0; l < listener_nodes.size(); ++l) {
    const Node& node = listener_nodes[l];
    Listener listener;
    node.expect_only({"name", "address", "workers", "limits", "forwarded_headers", "routes"});
    if (Node forwarded = node.child("forwarded_headers"); forwarded.present()) {
      forwarded.expect_only({"x_forwarded_for", "x_forwarded_proto", "generate_request_id"});
      forwarded.read("x_forwarded_for", listener.forwarded_headers.x_forwarded_for);
      forwarded.read("x_forwarded_proto", listener.forwarded_headers.x_forwarded_proto);
      forwarded.read("generate_request_id", listener.forwarded_headers.generate_request_id);
    }
    node.require("address");
    node.read("name", listener.name);
    if (listener.name.empty()) listener.name = "listener-" + std::to_string(l);
    if (!names.insert(listener.name).second) node.fail("name", "another listener has this name");
    read_address(node, "address", listener.address, true);
    node.read("workers", listener.workers, 1, 256);
    if (Node limits = node.child("limits"); limits.present()) listener.limits = read_limits(limits);
    node.require("routes");
    const auto route_nodes = node.child("routes").items();
    for (std::size_t r = 0; r < route_nodes.size(); ++r) {
      Route route = read_route(route_nodes[r], r);
      for (const auto& target : route.clusters) {
        if (proxy.cluster(target.cluster) == nullptr) {
          route_nodes[r].fail(route.clusters.size() == 1 ? "cluster" : "weighted_clusters",
                              "no cluster is named \"" + target.cluster + "\"");
        }
      }
      if (route.migration) {
        for (const std::string* name : {&route.migration->legacy, &route.migration->modern}) {
          if (!name->empty() && proxy.cluster(*name) == nullptr) {
            route_nodes[r]
                .child("migration")
                .fail(name == &route.migration->legacy ? "legacy" : "modern",
                      "no cluster is named \"" + *name + "\"");
          }
        }
      }
      listener.routes.push_back(std::move(route));
    }
    if (node.child("routes").present() && route_nodes.empty()) {
      node.fail("routes", "a listener needs at least one route");
    }
    proxy.listeners.push_back(std::move(listener));
  }
  // A migrating route's state is found by its name, so the name must say which route it is.
  std::set<std::string> migrating;
  for (std::size_t l = 0; l < proxy.listeners.size(); ++l) {
    for (std::size_t r = 0; r < proxy.listeners[l].routes.size(); ++r) {
      const Route& route = proxy.listeners[l].routes[r];
      if (route.migration && !migrating.insert(route.name).second) {
        listener_nodes[l].child("routes").items()[r].fail(
            "name", "another migrating route is named \"" + route.name + "\"");
      }
    }
  }
  if (auto status = document->status(); !status) return status.error();
  return proxy;
}

Result<ProxyConfig> load_config(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return Error(errc::io_error, "cannot open " + path + ": " + std::strerror(errno));
  }
  std::stringstream text;
  text << file.rdbuf();
  return parse_config(text.str(), path);
}

}  // namespace keel::proxy

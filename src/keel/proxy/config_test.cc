#include "keel/proxy/config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <functional>

namespace keel::proxy {
namespace {

constexpr const char* kGood = R"(
admin:
  address: 127.0.0.1:9901
listeners:
  - name: edge
    address: 127.0.0.1:10000
    workers: 2
    limits: {max_header_bytes: 8192, header_timeout_ms: 2000}
    routes:
      - match: {prefix: /api, method: GET, headers: {x-canary: "1"}}
        cluster: api
        retry: {num_retries: 2, retry_on: "5xx,connect-failure,retriable-status-codes", retriable_status_codes: "429"}
      - match: {regex: "/v[0-9]+/.*"}
        weighted_clusters: [{cluster: api, weight: 90}, {cluster: legacy, weight: 10}]
      - match: {prefix: /}
        cluster: legacy
        timeout_ms: 500
clusters:
  - name: api
    endpoints: [{address: 127.0.0.1:8081, weight: 2}, {address: "[::1]:8082"}]
    load_balancer: {policy: least_request}
    circuit_breaker: {failure_rate_threshold: 50}
    limits: {max_requests: 100, max_retries: 5}
  - name: legacy
    endpoints: [{address: localhost:8083}]
)";

TEST(ProxyConfigTest, ReadsListenersRoutesAndClusters) {
  auto config = parse_config(kGood, "good.yaml");
  ASSERT_TRUE(config) << config.error().message();
  ASSERT_EQ(config->listeners.size(), 1u);
  const Listener& edge = config->listeners[0];
  EXPECT_EQ(edge.address.to_string(), "127.0.0.1:10000");
  EXPECT_EQ(edge.workers, 2u);
  EXPECT_EQ(edge.limits.max_header_bytes, 8192u);
  EXPECT_EQ(edge.limits.header_timeout, 2s);
  ASSERT_EQ(edge.routes.size(), 3u);
  EXPECT_EQ(edge.routes[0].prefix, "/api");
  EXPECT_EQ(edge.routes[0].method, "GET");
  ASSERT_EQ(edge.routes[0].headers.size(), 1u);
  EXPECT_EQ(edge.routes[0].headers[0].name, "x-canary");
  ASSERT_TRUE(edge.routes[0].retry);
  EXPECT_EQ(edge.routes[0].retry->num_retries, 2u);
  EXPECT_TRUE(edge.routes[0].retry->on_5xx);
  EXPECT_TRUE(edge.routes[0].retry->on_connect_failure);
  EXPECT_FALSE(edge.routes[0].retry->on_reset);
  EXPECT_EQ(edge.routes[0].retry->status_codes, std::vector<unsigned>{429});
  EXPECT_TRUE(edge.routes[1].regex);
  EXPECT_EQ(edge.routes[1].clusters.size(), 2u);
  EXPECT_EQ(edge.routes[2].timeout, 500ms);
  ASSERT_EQ(config->clusters.size(), 2u);
  EXPECT_EQ(config->clusters[0].endpoints[1].address, "::1:8082");
  EXPECT_EQ(config->clusters[0].load_balancer.policy, "least_request");
  EXPECT_TRUE(config->clusters[0].circuit_breaker);
  EXPECT_EQ(config->clusters[0].limits.max_requests, 100u);
  ASSERT_TRUE(config->admin);
  EXPECT_EQ(config->admin->port, 9901);
}

// Every mistake is reported, each with its line and field.
TEST(ProxyConfigTest, ReportsEveryMistakeWithItsPlace) {
  const char* bad = R"(listeners:
  - address: 127.0.0.1:99999
    routes:
      - match: {prefix: api}
        cluster: nowhere
      - match: {regex: "("}
        cluster: api
        retry: {retry_on: "5xx,sometimes"}
clusters:
  - name: api
    endpoints: [{address: 127.0.0.1}]
    load_balancer: {policy: fastest}
)";
  auto config = parse_config(bad, "bad.yaml");
  ASSERT_FALSE(config);
  const std::string& message = config.error().message();
  for (const char* expected :
       {"bad.yaml:2:", "listeners[0].address", "the port must be a number from 0", "bad.yaml:4:",
        "must start with '/'", "no cluster is named \"nowhere\"", "not a valid regular expression",
        "unknown condition \"sometimes\"", "bad.yaml:11:", "no port", "fastest"}) {
    EXPECT_NE(message.find(expected), std::string::npos) << expected << " in:\n" << message;
  }
}

TEST(ProxyConfigTest, RefusesUnknownFieldsAndMissingOnes) {
  auto config = parse_config("listeners: []\nclustres: []\n", "typo.yaml");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("clustres"), std::string::npos);
  EXPECT_NE(config.error().message().find("clusters"), std::string::npos);
}

TEST(ProxyConfigTest, AMissingFileIsNamed) {
  auto config = load_config("/nonexistent/keel.yaml");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("/nonexistent/keel.yaml"), std::string::npos);
}

TEST(ProxyConfigTest, RetryConditionsMeanWhatTheyMeanInEnvoy) {
  auto policy = [](const std::string& retry_on) {
    auto config = parse_config(
        "listeners: [{address: 127.0.0.1:1, routes: [{match: {prefix: /}, cluster: c, retry: "
        "{retry_on: \"" +
            retry_on +
            "\", retriable_status_codes: \"429\"}}]}]\n"
            "clusters: [{name: c, endpoints: [{address: 127.0.0.1:2}]}]\n",
        "retry.yaml");
    EXPECT_TRUE(config) << config.error().message();
    return config ? *config->listeners[0].routes[0].retry : RetryPolicy{};
  };
  struct Row {
    std::string condition;
    bool server_error, gateway_error, connect_failure, reset, timeout, status_429;
  };
  for (const Row& row :
       std::vector<Row>{{"5xx", true, true, true, true, true, false},
                        {"gateway-error", false, true, true, true, true, false},
                        {"reset", false, false, true, true, true, false},
                        {"connect-failure", false, false, true, false, false, false},
                        {"timeout", false, false, false, false, true, false},
                        {"retriable-status-codes", false, false, false, false, false, true}}) {
    const std::string retry_on = row.condition == "retriable-status-codes"
                                     ? row.condition
                                     : row.condition + ",retriable-status-codes";
    RetryPolicy p = policy(retry_on);
    SCOPED_TRACE(row.condition);
    EXPECT_EQ(p.retries(TryEnd::kResponse, 500), row.server_error);
    EXPECT_EQ(p.retries(TryEnd::kResponse, 503), row.gateway_error);
    EXPECT_EQ(p.retries(TryEnd::kConnectFailure, 0), row.connect_failure);
    EXPECT_EQ(p.retries(TryEnd::kReset, 0), row.reset);
    EXPECT_EQ(p.retries(TryEnd::kTimeout, 0), row.timeout);
    EXPECT_TRUE(p.retries(TryEnd::kResponse, 429));  // listed with every condition here
    EXPECT_FALSE(p.retries(TryEnd::kResponse, 200));
    EXPECT_FALSE(p.retries(TryEnd::kResponse, 404));
  }
  // Codes without their condition in a given retry_on would be ignored: an error instead.
  auto config = parse_config(
      "listeners: [{address: 127.0.0.1:1, routes: [{match: {prefix: /}, cluster: c, retry: "
      "{retry_on: \"5xx\", retriable_status_codes: \"429\"}}]}]\n"
      "clusters: [{name: c, endpoints: [{address: 127.0.0.1:2}]}]\n",
      "retry.yaml");
  ASSERT_FALSE(config);
  EXPECT_NE(config.error().message().find("retry_on does not list retriable-status-codes"),
            std::string::npos);
}

// hedge: exactly one of after_ms / after_percentile, max_extra 1..3, the percentile's floor and
// initial delay only with a percentile; a route's overrides its cluster's.
TEST(ProxyConfigTest, HedgingIsReadAndValidated) {
  auto parse = [](const std::string& route_hedge, const std::string& cluster_hedge) {
    return parse_config(
        "listeners: [{address: 127.0.0.1:1, routes: [{match: {prefix: /a}, cluster: c" +
            (route_hedge.empty() ? "" : ", hedge: " + route_hedge) +
            "}, {match: {prefix: /}, cluster: c}]}]\n"
            "clusters: [{name: c, endpoints: [{address: 127.0.0.1:2}]" +
            (cluster_hedge.empty() ? "" : ", hedge: " + cluster_hedge) + "}]\n",
        "hedge.yaml");
  };
  auto config = parse("{after_ms: 50, max_extra: 3}",
                      "{after_percentile: 95, min_after_ms: 2, initial_after_ms: 30}");
  ASSERT_TRUE(config) << config.error().message();
  const HedgePolicy& route = *config->listeners[0].routes[0].hedge;
  EXPECT_EQ(route.after, 50ms);
  EXPECT_EQ(route.max_extra, 3u);
  EXPECT_EQ(route.delay_for(7ms), 50ms);               // fixed: the window does not matter
  EXPECT_FALSE(config->listeners[0].routes[1].hedge);  // the cluster's applies
  const HedgePolicy& cluster = *config->clusters[0].hedge;
  EXPECT_FALSE(cluster.after);
  EXPECT_EQ(cluster.after_percentile, 95);
  EXPECT_EQ(cluster.max_extra, 1u);                  // the default
  EXPECT_EQ(cluster.delay_for(std::nullopt), 30ms);  // too few samples yet
  EXPECT_EQ(cluster.delay_for(1ms), 2ms);            // the floor
  EXPECT_EQ(cluster.delay_for(80ms), 80ms);
  EXPECT_FALSE(parse("", "")->clusters[0].hedge);  // off unless given

  struct Bad {
    std::string hedge;
    std::string says;
  };
  for (const Bad& bad : std::vector<Bad>{
           {"{max_extra: 1}", "exactly one of after_ms or after_percentile"},
           {"{after_ms: 50, after_percentile: 95}", "exactly one of after_ms or after_percentile"},
           {"{after_ms: 50, max_extra: 0}", "max_extra"},
           {"{after_ms: 50, max_extra: 4}", "max_extra"},
           {"{after_ms: 0}", "after_ms"},
           {"{after_percentile: 100}", "after_percentile"},
           {"{after_percentile: 10}", "after_percentile"},
           {"{after_ms: 50, min_after_ms: 5}", "goes with after_percentile only"},
           {"{after_ms: 50, initial_after_ms: 5}", "goes with after_percentile only"},
           {"{after_ms: 50, delay_ms: 5}", "delay_ms: unknown field"},
       }) {
    SCOPED_TRACE(bad.hedge);
    for (bool on_route : {true, false}) {
      auto refused = on_route ? parse(bad.hedge, "") : parse("", bad.hedge);
      ASSERT_FALSE(refused);
      EXPECT_NE(refused.error().message().find(bad.says), std::string::npos)
          << refused.error().message();
      EXPECT_NE(refused.error().message().find("hedge"), std::string::npos)
          << refused.error().message();
    }
  }
}

// Every section the proxy's config has, each at least once. A new section goes here too: the
// test below then checks that a typo in it is reported.
constexpr const char* kEverySection = R"(
admin: {address: 127.0.0.1:9901, token: t}
access_log: true
migration_state_file: /tmp/keel-migration-state.json
listeners:
  - name: edge
    address: 127.0.0.1:10000
    workers: 1
    limits: {max_connections: 100, max_header_bytes: 8192, max_body_bytes: 1048576,
             header_timeout_ms: 2000, idle_timeout_ms: 60000, retry_buffer_bytes: 65536}
    forwarded_headers: {x_forwarded_for: true, x_forwarded_proto: true, generate_request_id: true}
    routes:
      - name: api
        match: {prefix: /api, method: GET, headers: {x-canary: "1"}}
        cluster: api
        timeout_ms: 500
        retry: {num_retries: 2, retry_on: "5xx,retriable-status-codes", retriable_status_codes: "429",
                allow_non_idempotent: false, base_interval_ms: 25, max_interval_ms: 250}
        hedge: {after_ms: 50, max_extra: 2}
      - match: {regex: "/v[0-9]+/.*"}
        weighted_clusters: [{cluster: api, weight: 90}, {cluster: legacy, weight: 10}]
      - name: prices
        match: {exact: /prices}
        migration:
          legacy: legacy
          modern: api
          stage: shadow
          percent: 0
          sticky: {header: x-user}
          mirror_non_idempotent: false
          max_in_flight: 10
          noise_baseline: true
          fallback_to_legacy: true
          diff: {compare_headers: "content-type", ignore_json_paths: "$.at", max_body_bytes: 4096}
          guard: {window_ms: 1000, min_requests: 5, max_error_rate: 0.5, max_p99_ms: 100,
                  max_diff_rate: 0.5}
          ramp: {step_percent: 10, every_ms: 1000}
clusters:
  - name: api
    endpoints: [{address: 127.0.0.1:8081, weight: 2}]
    load_balancer: {policy: peak_ewma, choice_count: 2, stale_probe_percent: 1}
    endpoint_options: {panic_threshold_percent: 50, latency_decay_ms: 10000,
                       latency_stale_after_ms: 500}
    connect_timeout_ms: 500
    per_try_timeout_ms: 1000
    max_idle_connections: 8
    idle_timeout_ms: 30000
    retry: {num_retries: 1}
    hedge: {after_percentile: 95, min_after_ms: 5, initial_after_ms: 40, max_extra: 1}
    retry_budget: {budget_ratio: 0.2, min_retries_per_second: 3, window_ms: 10000}
    limits: {max_connections: 10, max_pending: 10, max_requests: 100, max_retries: 5}
    circuit_breaker: {failure_rate_threshold: 50, minimum_calls: 10}
    health_check: {path: /healthz, method: HEAD, host: api.internal, expected_statuses: "200-299,404",
                   interval_ms: 1000}
    outlier_detection: {consecutive_5xx: 5, interval_ms: 1000}
    adaptive_concurrency: {gradient: {initial_limit: 20, max_limit: 200}}
  - name: legacy
    adaptive_concurrency: {aimd: {initial_limit: 10, timeout_ms: 500}}
    endpoints: [{address: 127.0.0.1:8083}]
)";

TEST(ProxyConfigTest, ATypoInAnySectionIsReportedWithItsPlace) {
  auto complete = parse_config(kEverySection, "every.yaml");
  ASSERT_TRUE(complete) << complete.error().message();
  // Every mapping of the document, by its path; header matches are names the user chooses.
  std::vector<std::string> paths;
  std::function<void(const YAML::Node&, const std::string&)> walk = [&](const YAML::Node& node,
                                                                        const std::string& path) {
    if (node.IsMap()) {
      if (!path.ends_with(".headers")) paths.push_back(path);
      for (const auto& entry : node) walk(entry.second, path + "." + entry.first.as<std::string>());
    } else if (node.IsSequence()) {
      for (std::size_t i = 0; i < node.size(); ++i)
        walk(node[i], path + "[" + std::to_string(i) + "]");
    }
  };
  walk(YAML::Load(kEverySection), "");
  ASSERT_GT(paths.size(), 25u);
  for (std::size_t target = 0; target < paths.size(); ++target) {
    YAML::Node document = YAML::Load(kEverySection);
    std::size_t seen = 0;
    std::function<void(YAML::Node, const std::string&)> add_typo = [&](YAML::Node node,
                                                                       const std::string& path) {
      if (node.IsMap()) {
        if (!path.ends_with(".headers") && seen++ == target) {
          node["zzz_typo"] = 1;
          return;
        }
        for (auto entry : node) add_typo(entry.second, path + "." + entry.first.as<std::string>());
      } else if (node.IsSequence()) {
        for (std::size_t i = 0; i < node.size(); ++i) add_typo(node[i], path);
      }
    };
    add_typo(document, "");
    YAML::Emitter out;
    out << document;
    auto config = parse_config(out.c_str(), "typo.yaml");
    ASSERT_FALSE(config) << "a typo in "
                         << (paths[target].empty() ? "the top level" : paths[target]) << " passed";
    EXPECT_NE(config.error().message().find("zzz_typo: unknown field"), std::string::npos)
        << paths[target] << ": " << config.error().message();
    EXPECT_NE(config.error().message().find("typo.yaml:"), std::string::npos)
        << config.error().message();
  }
}

}  // namespace
}  // namespace keel::proxy

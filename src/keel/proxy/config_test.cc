#include "keel/proxy/config.h"

#include <gtest/gtest.h>

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
        retry: {num_retries: 2, retry_on: "5xx,connect-failure", retriable_status_codes: "429"}
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

}  // namespace
}  // namespace keel::proxy

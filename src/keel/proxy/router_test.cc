#include "keel/proxy/router.h"

#include <gtest/gtest.h>

namespace keel::proxy {
namespace {

namespace h1 = http::h1;

ProxyConfig config_of(const std::string& routes, const std::string& clusters) {
  auto config = parse_config(
      "listeners:\n  - address: 127.0.0.1:1\n    routes:\n" + routes + "clusters:\n" + clusters,
      "router.yaml");
  EXPECT_TRUE(config) << config.error().message();
  return config ? *config : ProxyConfig{};
}

h1::Head head_of(const std::string& raw, std::string& storage) {
  storage = raw;
  h1::Head head;
  EXPECT_EQ(h1::parse_request(storage, head).state, h1::Parsed::kDone) << raw;
  return head;
}

constexpr const char* kClusters =
    "  - {name: a, endpoints: [{address: 127.0.0.1:2}]}\n"
    "  - {name: b, endpoints: [{address: 127.0.0.1:3}]}\n";

TEST(RouterTest, FirstRouteWhoseMethodPathAndHeadersMatchWins) {
  const ProxyConfig config = config_of(
      "      - {match: {prefix: /api, method: POST}, cluster: b}\n"
      "      - {match: {prefix: /api, headers: {x-canary: \"1\"}}, cluster: b}\n"
      "      - {match: {exact: /health}, cluster: a}\n"
      "      - {match: {regex: \"/v[0-9]+/items\"}, cluster: b}\n",
      kClusters);
  const Listener& listener = config.listeners[0];
  std::string storage;
  auto route_of = [&](const std::string& raw) {
    h1::Head head = head_of(raw, storage);
    const Route* route = match_route(listener, head);
    return route == nullptr ? -1 : static_cast<int>(route - listener.routes.data());
  };
  EXPECT_EQ(route_of("POST /api/x HTTP/1.1\r\nHost: h\r\n\r\n"), 0);
  EXPECT_EQ(route_of("GET /api/x HTTP/1.1\r\nHost: h\r\nX-Canary: 1\r\n\r\n"), 1);
  EXPECT_EQ(route_of("GET /api/x HTTP/1.1\r\nHost: h\r\nX-Canary: 2\r\n\r\n"), -1);
  EXPECT_EQ(route_of("GET /health?verbose=1 HTTP/1.1\r\nHost: h\r\n\r\n"), 2);  // query ignored
  EXPECT_EQ(route_of("GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n"), -1);          // exact is exact
  EXPECT_EQ(route_of("GET /v2/items HTTP/1.1\r\nHost: h\r\n\r\n"), 3);
  EXPECT_EQ(route_of("GET /v2/items/7 HTTP/1.1\r\nHost: h\r\n\r\n"), -1);  // the whole path
  // An absolute-form target is routed on its path.
  EXPECT_EQ(route_of("GET http://example.com/v9/items HTTP/1.1\r\nHost: h\r\n\r\n"), 3);
}

TEST(RouterTest, WeightedClustersSplitByTicket) {
  const ProxyConfig config = config_of(
      "      - {match: {prefix: /}, weighted_clusters: [{cluster: a, weight: 3}, "
      "{cluster: b, weight: 1}]}\n",
      kClusters);
  const Route& route = config.listeners[0].routes[0];
  ASSERT_EQ(total_weight(route), 4u);
  EXPECT_EQ(pick_weighted_cluster(config, route, 0), 0u);
  EXPECT_EQ(pick_weighted_cluster(config, route, 2), 0u);
  EXPECT_EQ(pick_weighted_cluster(config, route, 3), 1u);
  EXPECT_EQ(cluster_index(config, "b"), 1u);
}

TEST(RouterTest, StickyKeyComesFromTheHeaderOrCookieElseThePeer) {
  MigrationConfig by_header;
  by_header.sticky = {StickyKey::Kind::kHeader, "x-user"};
  MigrationConfig by_cookie;
  by_cookie.sticky = {StickyKey::Kind::kCookie, "session"};
  std::string storage;
  h1::Head head = head_of(
      "GET / HTTP/1.1\r\nHost: h\r\nX-User: u7\r\nCookie: a=1; session=s9; sessionx=no\r\n\r\n",
      storage);
  EXPECT_EQ(sticky_key(by_header, head, "10.0.0.1"), "u7");
  EXPECT_EQ(sticky_key(by_cookie, head, "10.0.0.1"), "s9");
  std::string other;
  h1::Head bare = head_of("GET / HTTP/1.1\r\nHost: h\r\n\r\n", other);
  EXPECT_EQ(sticky_key(by_header, bare, "10.0.0.1"), "10.0.0.1");
  EXPECT_EQ(sticky_key(by_cookie, bare, "10.0.0.1"), "10.0.0.1");
}

}  // namespace
}  // namespace keel::proxy

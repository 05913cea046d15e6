// keel proxy against real upstream servers on loopback (healthy, failing, slow, resetting,
// never answering, echoing), driven by a raw-socket client: routing and load spreading,
// forwarded headers, retries on another endpoint, timeouts, the breaker, the cluster limits,
// malformed requests, streamed bodies and the admin listener.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "keel/core/text.h"
#include "keel/proxy/server.h"
#include "keel/testing/scripted_server.h"

namespace keel::proxy {
namespace {

using keel::testing::Behaviour;
using keel::testing::connect_to;
using keel::testing::Message;
using keel::testing::read_message;
using keel::testing::send_all;
using Upstream = keel::testing::ScriptedServer;

using keel::ascii_lower;

// ---------------------------------------------------------------- the proxy under test
class ProxyTest : public ::testing::Test {
 protected:
  void start(const std::string& yaml) {
    auto config = parse_config(yaml, "test.yaml");
    ASSERT_TRUE(config) << config.error().message();
    auto started = Server::start(std::move(*config), clock, &log);
    ASSERT_TRUE(started) << started.error().message();
    server = std::move(*started);
    port = server->listening().at(0).port;
  }
  void TearDown() override {
    if (server) server->stop(1s);
  }

  // One request on a new connection; the response.
  Message request(const std::string& raw, bool head = false) {
    int fd = connect_to(port);
    EXPECT_GE(fd, 0);
    EXPECT_TRUE(send_all(fd, raw));
    std::string buffer;
    Message response = read_message(fd, buffer, true, head);
    ::close(fd);
    return response;
  }
  Message get(const std::string& path, const std::string& extra_headers = "") {
    return request("GET " + path + " HTTP/1.1\r\nHost: test\r\n" + extra_headers + "\r\n");
  }

  static std::string cluster_yaml(const std::string& name, const std::vector<Upstream*>& upstreams,
                                  const std::string& extra = "") {
    std::string yaml = "  - name: " + name + "\n    endpoints:\n";
    for (auto* upstream : upstreams) yaml += "      - address: " + upstream->address() + "\n";
    return yaml + extra;
  }

  SteadyClock clock;
  std::ostringstream log;
  std::unique_ptr<Server> server;
  std::uint16_t port = 0;
};

constexpr const char* kListener = R"(listeners:
  - address: 127.0.0.1:0
    limits: {max_header_bytes: 2048, max_body_bytes: 8388608, header_timeout_ms: 1000}
    routes:
)";

TEST_F(ProxyTest, SpreadsRequestsRoundRobinAndKeepsUpstreamConnectionsAlive) {
  Upstream a("a"), b("b"), c("c");
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&a, &b, &c}));
  int fd = connect_to(port);
  std::string buffer;
  std::map<std::string, int> seen;
  for (int i = 0; i < 30; ++i) {
    ASSERT_TRUE(send_all(fd, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n"));
    Message response = read_message(fd, buffer, true);
    ASSERT_EQ(response.status(), 200) << response.start_line;
    ++seen[response.body];
    EXPECT_FALSE(response.header("x-request-id").empty());
    EXPECT_EQ(response.header("x-secret"), "");  // named in Connection: hop-by-hop
  }
  ::close(fd);
  EXPECT_EQ(seen, (std::map<std::string, int>{{"a", 10}, {"b", 10}, {"c", 10}}));
  // One keep-alive connection per upstream carried its ten requests.
  EXPECT_EQ(a.connections() + b.connections() + c.connections(), 3);
}

TEST_F(ProxyTest, ForwardsHeadersAndStripsHopByHopOnes) {
  Upstream echo("echo", Behaviour::kEcho);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: echo}\nclusters:\n" +
        cluster_yaml("echo", {&echo}));
  Message response = get("/path?q=1",
                         "Connection: keep-alive, x-private\r\nX-Private: 1\r\nTE: trailers\r\n"
                         "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
                         "x-request-id: given-id\r\nX-Forwarded-For: 10.0.0.9\r\n"
                         "x-forwarded-for: 10.0.0.10, 10.0.0.11\r\n");
  ASSERT_EQ(response.status(), 200);
  EXPECT_EQ(response.header("x-request-id"), "given-id");
  Message seen = echo.last_request();
  EXPECT_EQ(seen.start_line, "GET /path?q=1 HTTP/1.1");
  EXPECT_EQ(seen.header("x-private"), "");
  EXPECT_EQ(seen.header("te"), "");
  EXPECT_EQ(seen.header("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  EXPECT_EQ(seen.header("x-request-id"), "given-id");
  // Several lines are one list (RFC 9110 5.3), not the first line only.
  EXPECT_EQ(seen.header("x-forwarded-for"), "10.0.0.9, 10.0.0.10, 10.0.0.11, 127.0.0.1");
  EXPECT_EQ(seen.header("x-forwarded-proto"), "http");
  // Without one, the proxy makes the request id.
  get("/");
  EXPECT_EQ(echo.last_request().header("x-request-id").size(), 36u);
}

TEST_F(ProxyTest, AbsoluteFormTargetsAreRoutedOnTheirPathAndForwardedInOriginForm) {
  // RFC 9112 3.2.2: a server MUST accept the absolute form; the authority replaces Host.
  Upstream echo("echo", Behaviour::kEcho);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: echo}\nclusters:\n" +
        cluster_yaml("echo", {&echo}));
  Message response = request("GET http://Example.com:8080/a/b?q=1 HTTP/1.1\r\nHost: other\r\n\r\n");
  ASSERT_EQ(response.status(), 200) << response.header("x-keel-reason");
  Message seen = echo.last_request();
  EXPECT_EQ(seen.start_line, "GET /a/b?q=1 HTTP/1.1");
  EXPECT_EQ(seen.header("host"), "Example.com:8080");
  EXPECT_EQ(request("GET https://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n").status(), 200);
  EXPECT_EQ(echo.last_request().start_line, "GET / HTTP/1.1");
  EXPECT_EQ(request("GET ftp://example.com/x HTTP/1.1\r\nHost: x\r\n\r\n").status(), 400);
  EXPECT_EQ(request("GET http://user@example.com/x HTTP/1.1\r\nHost: x\r\n\r\n").status(), 400);
}

TEST_F(ProxyTest, ARouteRegexTakesLinearTimeOnAHostilePath) {
  // (a*)*b backtracks exponentially in a backtracking engine; RE2 matches in linear time.
  Upstream web("web");
  start(std::string(kListener) + "      - {match: {regex: \"/(a*)*b\"}, cluster: web}\n" +
        "      - {match: {prefix: /}, cluster: web}\nclusters:\n" + cluster_yaml("web", {&web}));
  EXPECT_EQ(get("/" + std::string(1500, 'a')).status(), 200);  // the prefix route
  EXPECT_EQ(get("/aab").status(), 200);
}

TEST_F(ProxyTest, ForwardingHeadersCanEachBeTurnedOff) {
  Upstream echo("echo", Behaviour::kEcho);
  std::string listener = kListener;
  listener.replace(listener.find("    limits:"), 0,
                   "    forwarded_headers: {x_forwarded_for: false, x_forwarded_proto: false, "
                   "generate_request_id: false}\n");
  start(listener + "      - {match: {prefix: /}, cluster: echo}\nclusters:\n" +
        cluster_yaml("echo", {&echo}));
  Message response = get("/", "X-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: https\r\n");
  ASSERT_EQ(response.status(), 200);
  EXPECT_EQ(response.header("x-request-id"), "");
  Message seen = echo.last_request();
  EXPECT_EQ(seen.header("x-forwarded-for"), "10.0.0.9");  // passed through, nothing appended
  EXPECT_EQ(seen.header("x-forwarded-proto"), "https");
  EXPECT_EQ(seen.header("x-request-id"), "");
  get("/", "x-request-id: mine\r\n");
  EXPECT_EQ(echo.last_request().header("x-request-id"), "mine");  // a given one still passes
}

TEST_F(ProxyTest, RoutesByPathMethodAndHeaderAndSaysWhenNothingMatches) {
  Upstream api("api"), canary("canary"), web("web");
  start(std::string(kListener) +
        "      - {match: {prefix: /api, headers: {x-canary: \"1\"}}, cluster: canary}\n"
        "      - {match: {prefix: /api, method: GET}, cluster: api}\n"
        "      - {match: {regex: \"/static/[a-z]+\\\\.css\"}, cluster: web}\n"
        "clusters:\n" +
        cluster_yaml("api", {&api}) + cluster_yaml("canary", {&canary}) +
        cluster_yaml("web", {&web}));
  EXPECT_EQ(get("/api/users").body, "api");
  EXPECT_EQ(get("/api/users", "X-Canary: 1\r\n").body, "canary");
  EXPECT_EQ(get("/static/site.css").body, "web");
  Message none = get("/static/site.js");
  EXPECT_EQ(none.status(), 404);
  EXPECT_EQ(none.header("x-keel-reason"), "no_route");
  Message post = request("POST /api/users HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(post.status(), 404);
  server->stop(1s);  // the access log is complete once the server stopped
  EXPECT_NE(log.str().find("\"flags\":\"NR\""), std::string::npos) << log.str();
}

TEST_F(ProxyTest, RetriesAFailedConnectAndA503OnAnotherEndpoint) {
  Upstream failing("failing", Behaviour::kFail), good("good");
  Upstream dead("dead");
  const std::string dead_address = dead.address();
  dead.stop();  // nothing listens there any more
  start(std::string(kListener) +
        "      - {match: {prefix: /}, cluster: web}\nclusters:\n"
        "  - name: web\n    endpoints:\n      - address: " +
        dead_address + "\n      - address: " + failing.address() +
        "\n      - address: " + good.address() +
        "\n    retry: {num_retries: 2, retry_on: \"connect-failure,gateway-error\"}\n");
  for (int i = 0; i < 9; ++i) {
    Message response = get("/");
    EXPECT_EQ(response.status(), 200) << i;
    EXPECT_EQ(response.body, "good");
  }
  EXPECT_NE(server->metrics_text().find("keel_proxy_retries_total{cluster=\"web\"}"),
            std::string::npos);
  // A POST is not retried unless the route allows it: the failure comes back.
  int failures = 0;
  for (int i = 0; i < 6; ++i) {
    Message response = request("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
    failures += response.status() != 200;
  }
  EXPECT_GT(failures, 0);
}

TEST_F(ProxyTest, RetriesStayWithinTheRetryBudget) {
  Upstream failing("failing", Behaviour::kFail), also_failing("also", Behaviour::kFail);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&failing, &also_failing},
                     "    retry: {num_retries: 1, base_interval_ms: 1, max_interval_ms: 1}\n"
                     "    retry_budget: {budget_ratio: 0.1, min_retries_per_second: 0}\n"));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(get("/").status(), 503);
  // Without the budget every request would have been retried once: 100 attempts.
  const int attempts = failing.requests() + also_failing.requests();
  EXPECT_GE(attempts, 50 + 4);
  EXPECT_LE(attempts, 50 + 6);
  EXPECT_NE(server->metrics_text().find("keel_retry_budget_rejected_total{budget=\"web\"}"),
            std::string::npos);
}

TEST_F(ProxyTest, TimeoutsResetsAndRefusedConnectionsGetTheirOwnLocalReply) {
  Upstream hang("hang", Behaviour::kHang), reset("reset", Behaviour::kReset);
  Upstream dead("dead");
  const std::string dead_address = dead.address();
  dead.stop();
  start(std::string(kListener) +
        "      - {match: {prefix: /hang}, cluster: hang, timeout_ms: 300}\n"
        "      - {match: {prefix: /reset}, cluster: reset}\n"
        "      - {match: {prefix: /dead}, cluster: dead}\n"
        "clusters:\n" +
        cluster_yaml("hang", {&hang}, "    retry: {num_retries: 0}\n") +
        cluster_yaml("reset", {&reset}, "    retry: {num_retries: 0}\n") +
        "  - name: dead\n    retry: {num_retries: 0}\n    endpoints: [{address: " + dead_address +
        "}]\n");
  Message timed_out = get("/hang");
  EXPECT_EQ(timed_out.status(), 504);
  EXPECT_EQ(timed_out.header("x-keel-reason"), "upstream_timeout");
  Message was_reset = get("/reset");
  EXPECT_EQ(was_reset.status(), 502);
  EXPECT_EQ(was_reset.header("x-keel-reason"), "upstream_reset");
  Message refused = get("/dead");
  EXPECT_EQ(refused.status(), 502);
  EXPECT_EQ(refused.header("x-keel-reason"), "upstream_connect_failure");
  server->stop(1s);  // the access log is complete once the server stopped
  for (const char* flag : {"\"flags\":\"UT\"", "\"flags\":\"UR\"", "\"flags\":\"UF\""}) {
    EXPECT_NE(log.str().find(flag), std::string::npos) << flag << "\n" << log.str();
  }
}

// Deadlines are read from the proxy's Clock: on a manual clock a minute-long route timeout
// fires when the test moves the clock past it, not a minute later.
TEST(ProxyClockTest, RouteTimeoutsFollowTheInjectedClock) {
  Upstream hang("hang", Behaviour::kHang);
  ManualClock clock;
  auto config = parse_config(std::string(kListener) +
                                 "      - {match: {prefix: /}, cluster: hang, timeout_ms: 60000}\n"
                                 "clusters:\n  - name: hang\n    retry: {num_retries: 0}\n"
                                 "    endpoints: [{address: " +
                                 hang.address() + "}]\n",
                             "test.yaml");
  ASSERT_TRUE(config) << config.error().message();
  auto server = Server::start(std::move(*config), clock);
  ASSERT_TRUE(server) << server.error().message();
  int fd = connect_to((*server)->listening().at(0).port);
  ASSERT_TRUE(send_all(fd, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
  while (hang.requests() == 0) std::this_thread::sleep_for(1ms);  // the request is upstream
  clock.advance(61s);
  std::string buffer;
  Message response = read_message(fd, buffer, true);  // within connect_to's 10 s receive timeout
  ::close(fd);
  EXPECT_EQ(response.status(), 504);
  EXPECT_EQ(response.header("x-keel-reason"), "upstream_timeout");
  (*server)->stop(1s);
}

TEST_F(ProxyTest, AFailingEndpointIsEjectedAndComesBack) {
  Upstream failing("failing", Behaviour::kFail), good("good");
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml(
            "web", {&failing, &good},
            "    retry: {num_retries: 0}\n"
            "    outlier_detection: {consecutive_gateway_errors: 3, interval_ms: 100,\n"
            "                        base_ejection_time_ms: 600, max_ejection_percent: 50}\n"));
  for (int i = 0; i < 6; ++i) get("/");  // round robin: three 503s from `failing`
  EXPECT_EQ(failing.requests(), 3);
  const int before = failing.requests();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("/").body, "good");  // ejected: all to `good`
  EXPECT_EQ(failing.requests(), before);
  EXPECT_NE(server->metrics_text().find("keel_proxy_endpoint_ejections_total{cluster=\"web\","
                                        "endpoint=\"" +
                                        failing.address() + "\"} 1"),
            std::string::npos);
  // It recovers; once the ejection has run out it gets traffic again.
  failing.set(Behaviour::kOk);
  std::this_thread::sleep_for(900ms);
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) ++seen[get("/").body];
  EXPECT_GT(seen["failing"], 0);
}

TEST_F(ProxyTest, HealthChecksTakeTheirMethodHostAndExpectedStatuses) {
  // A 503 counts as healthy when the check says so; the probe is a HEAD with its own Host.
  Upstream answering_503("busy", Behaviour::kFail);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&answering_503},
                     "    endpoint_options: {panic_threshold_percent: 0}\n"
                     "    health_check: {path: /ping, method: HEAD, host: health.internal,\n"
                     "                   expected_statuses: \"200-299,503\", interval_ms: 50,\n"
                     "                   healthy_threshold: 1, unhealthy_threshold: 1}\n"));
  for (int i = 0; i < 100 && answering_503.requests() < 3; ++i) std::this_thread::sleep_for(20ms);
  Message probe = answering_503.last_request();
  EXPECT_EQ(probe.start_line, "HEAD /ping HTTP/1.1");
  EXPECT_EQ(probe.header("host"), "health.internal");
  EXPECT_TRUE(
      nlohmann::json::parse(server->clusters_json())[0]["endpoints"][0]["healthy"].get<bool>());
}

TEST_F(ProxyTest, ClustersAndMetricsShowEachEndpointsCostAndInFlight) {
  Upstream a("a"), slow("slow", Behaviour::kSlow);
  slow.set_slow_delay(300ms);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&a, &slow}, "    load_balancer: {policy: peak_ewma}\n"));
  auto in_flight_request = std::async(std::launch::async, [&] { return get("/"); });
  for (int i = 0; i < 20; ++i) get("/");
  auto endpoints = nlohmann::json::parse(server->clusters_json())[0]["endpoints"];
  for (const auto& endpoint : endpoints) {
    EXPECT_TRUE(endpoint.contains("in_flight")) << endpoint.dump();
    EXPECT_TRUE(endpoint.contains("latency_cost_ms")) << endpoint.dump();
  }
  EXPECT_GT(endpoints[0]["latency_cost_ms"].get<double>(), 0);
  EXPECT_EQ(in_flight_request.get().status(), 200);
  endpoints = nlohmann::json::parse(server->clusters_json())[0]["endpoints"];
  EXPECT_EQ(endpoints[0]["in_flight"].get<int>() + endpoints[1]["in_flight"].get<int>(), 0);
  EXPECT_GT(endpoints[1]["latency_cost_ms"].get<double>(),
            endpoints[0]["latency_cost_ms"].get<double>());
}

TEST_F(ProxyTest, AdaptiveConcurrencyShrinksWhenLatencyGrowsAndGrowsBackWhenItFalls) {
  // aimd: an answer slower than timeout_ms is a drop; drops halve the limit, fast answers
  // raise it by one.
  Upstream web("web", Behaviour::kSlow);
  web.set_slow_delay(150ms);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&web},
                     "    adaptive_concurrency: {aimd: {initial_limit: 8, min_limit: 1,\n"
                     "                                  backoff_ratio: 0.5, timeout_ms: 50}}\n"));
  auto limit = [&] {
    return nlohmann::json::parse(server->clusters_json())[0]["concurrency_limit"].get<int>();
  };
  EXPECT_EQ(limit(), 8);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(get("/").status(), 200);  // slow: 8 → 4 → 2 → 1 → 1
  EXPECT_EQ(limit(), 1);
  std::vector<std::future<Message>> at_once;
  for (int i = 0; i < 3; ++i)
    at_once.push_back(std::async(std::launch::async, [&] { return get("/"); }));
  int refused = 0;
  for (auto& answer : at_once) {
    Message message = answer.get();
    if (message.status() == 503) {
      EXPECT_EQ(message.header("x-keel-reason"), "overflow");
      ++refused;
    }
  }
  EXPECT_GE(refused, 1) << "three at once through a limit of one";
  web.set(Behaviour::kOk);  // fast again
  for (int i = 0; i < 6; ++i) EXPECT_EQ(get("/").status(), 200);
  EXPECT_GT(limit(), 1);
}

TEST_F(ProxyTest, PooledUpstreamConnectionsCloseAfterTheirIdleTimeout) {
  Upstream web("web");
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&web}, "    idle_timeout_ms: 100\n"));
  EXPECT_EQ(get("/").status(), 200);
  EXPECT_EQ(get("/").status(), 200);
  EXPECT_EQ(web.connections(), 1);     // reused while fresh
  std::this_thread::sleep_for(400ms);  // past the idle timeout and the 10 ms sweep
  EXPECT_EQ(get("/").status(), 200);
  EXPECT_EQ(web.connections(), 2);  // the idle one was closed, a new one opened
}

TEST_F(ProxyTest, ActiveHealthChecksTakeAnEndpointOutAndBringItBack) {
  Upstream sick("sick", Behaviour::kFail), well("well");
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&sick, &well},
                     "    endpoint_options: {panic_threshold_percent: 0}\n"
                     "    health_check: {path: /healthz, interval_ms: 50, timeout_ms: 200,\n"
                     "                   healthy_threshold: 1, unhealthy_threshold: 2}\n"));
  auto healthy = [&](int endpoint) {
    return nlohmann::json::parse(server->clusters_json())[0]["endpoints"][endpoint]["healthy"]
        .get<bool>();
  };
  for (int i = 0; i < 100 && healthy(0); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_FALSE(healthy(0));
  EXPECT_TRUE(healthy(1));
  EXPECT_EQ(sick.last_request().start_line, "GET /healthz HTTP/1.1");
  const int probes = sick.requests();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get("/").body, "well");
  // Only probes reached `sick` while it was out (none of the ten requests).
  sick.set(Behaviour::kOk);
  for (int i = 0; i < 100 && !healthy(0); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(healthy(0));
  EXPECT_GT(sick.requests(), probes);
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) ++seen[get("/").body];
  EXPECT_GT(seen["sick"], 0);
}

TEST_F(ProxyTest, TheBreakerOpensOnFailuresAndStopsTraffic) {
  Upstream failing("failing", Behaviour::kFail);
  start(
      std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
      cluster_yaml("web", {&failing},
                   "    retry: {num_retries: 0}\n"
                   "    circuit_breaker: {window_size: 10, minimum_calls: 5,\n"
                   "                      failure_rate_threshold: 50, open_duration_ms: 60000}\n"));
  for (int i = 0; i < 5; ++i) EXPECT_EQ(get("/").status(), 503);
  const int reached = failing.requests();
  Message refused = get("/");
  EXPECT_EQ(refused.status(), 503);
  EXPECT_EQ(refused.header("x-keel-reason"), "breaker_open");
  EXPECT_EQ(failing.requests(), reached);  // the open breaker kept it from the upstream
  EXPECT_NE(server->clusters_json().find("\"breaker\": \"OPEN\""), std::string::npos)
      << server->clusters_json();
}

TEST_F(ProxyTest, TheClusterLimitRejectsBeyondItAndRecovers) {
  Upstream slow("slow", Behaviour::kSlow);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&slow}, "    limits: {max_requests: 1}\n"));
  auto first = std::async(std::launch::async, [&] { return get("/"); });
  // Wait until the first request is at the upstream.
  for (int i = 0; i < 200 && slow.requests() == 0; ++i) std::this_thread::sleep_for(5ms);
  Message second = get("/");
  EXPECT_EQ(second.status(), 503);
  EXPECT_EQ(second.header("x-keel-reason"), "overflow");
  EXPECT_EQ(first.get().status(), 200);
  EXPECT_EQ(get("/").status(), 200);  // the slot came back
}

TEST_F(ProxyTest, APerTryTimeoutIsRetriedUnderGatewayErrorAsInEnvoy) {
  // An upstream that does not answer in time becomes a 504: `gateway-error` (and `5xx`) cover
  // it without `reset` being listed.
  Upstream slow("slow", Behaviour::kSlow), web("web");
  slow.set_slow_delay(3000ms);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&slow, &web},
                     "    per_try_timeout_ms: 200\n"
                     "    retry: {num_retries: 1, retry_on: gateway-error}\n"));
  for (int i = 0; i < 4; ++i) {
    Message response = get("/");
    EXPECT_EQ(response.status(), 200) << response.header("x-keel-reason");
    EXPECT_EQ(response.body, "web");
  }
  EXPECT_GE(slow.requests(), 1);
}

// ---------------------------------------------------------------- hedged requests
// A cluster of one upstream that takes far too long (kSlow, 2 s: a hang as far as these tests
// go) and one healthy, round robin, hedged after 50 ms. Only correctness is asserted, no times.
class HedgeTest : public ProxyTest {
 protected:
  static constexpr int kHangMs = 2000;
  Upstream hanging{"hanging", Behaviour::kSlow};
  Upstream healthy{"healthy"};
  void SetUp() override { hanging.set_slow_delay(std::chrono::milliseconds(kHangMs)); }
  void start_hedged(const std::string& route_extra, const std::string& cluster_extra) {
    start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web" + route_extra +
          "}\nclusters:\n" +
          cluster_yaml("web", {&hanging, &healthy},
                       "    load_balancer: {policy: round_robin}\n"
                       "    per_try_timeout_ms: 10000\n" +
                           cluster_extra));
  }
  nlohmann::json cluster() { return nlohmann::json::parse(server->clusters_json())[0]; }
  Message post(const std::string& body) {
    return request("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
                   "\r\n\r\n" + body);
  }
};

TEST_F(HedgeTest, AHangingEndpointIsHedgedToTheHealthyOne) {
  start_hedged("", "    hedge: {after_ms: 50}\n");
  for (int i = 0; i < 10; ++i) {
    Message response = get("/");
    EXPECT_EQ(response.status(), 200) << i << " " << response.header("x-keel-reason");
    EXPECT_EQ(response.body, "healthy") << i;
  }
  EXPECT_GT(hanging.requests(), 0);  // first tries went there, and lost to their hedges
  const auto web = cluster();
  EXPECT_GT(web["hedges"].get<int>(), 0);
  EXPECT_EQ(web["hedge_wins"], web["hedges"]);
  EXPECT_EQ(web["retries"], 0);
  // A cancelled try is neither a success nor a failure of its endpoint.
  EXPECT_EQ(web["endpoints"][0]["failures"], 0);
  EXPECT_EQ(web["endpoints"][0]["requests"].get<int>(), hanging.requests());
  server->stop(1s);  // the access log is complete once the server stopped
  EXPECT_NE(log.str().find("\"attempts\":2"), std::string::npos) << log.str();
}

TEST_F(HedgeTest, ARouteHedgeOverridesTheClustersAndAPercentileDelayWorksToo) {
  // The cluster's hedge would wait longer than the hang; the route's, a percentile of the
  // cluster's recent tries (the initial delay until there are enough), does not.
  start_hedged(", hedge: {after_percentile: 95, initial_after_ms: 50, max_extra: 1}",
               "    hedge: {after_ms: 60000}\n");
  for (int i = 0; i < 6; ++i) {
    Message response = get("/");
    EXPECT_EQ(response.status(), 200) << i;
    EXPECT_EQ(response.body, "healthy") << i;
  }
  EXPECT_GT(hanging.requests(), 0);
  EXPECT_GT(cluster()["hedge_wins"].get<int>(), 0);
}

TEST_F(HedgeTest, ANonIdempotentPostIsNotHedged) {
  // Even where the route lets a POST be retried: a hedge would run beside the first try.
  hanging.set_slow_delay(300ms);
  start_hedged(", retry: {allow_non_idempotent: true}", "    hedge: {after_ms: 50}\n");
  std::map<std::string, int> answered_by;
  for (int i = 0; i < 4; ++i) {
    Message response = post("hi");
    EXPECT_EQ(response.status(), 200);
    ++answered_by[response.body];
  }
  EXPECT_EQ(answered_by, (std::map<std::string, int>{{"hanging", 2}, {"healthy", 2}}));
  EXPECT_EQ(cluster()["hedges"], 0);
  EXPECT_EQ(get("/").status(), 200);  // a GET after them is hedged as usual
}

TEST_F(HedgeTest, TheRetryLimitStopsHedges) {
  hanging.set_slow_delay(300ms);
  start_hedged("", "    hedge: {after_ms: 50}\n    limits: {max_retries: 0}\n");
  std::map<std::string, int> answered_by;
  for (int i = 0; i < 4; ++i) ++answered_by[get("/").body];
  EXPECT_EQ(answered_by, (std::map<std::string, int>{{"hanging", 2}, {"healthy", 2}}));
  EXPECT_EQ(cluster()["hedges"], 0);
}

TEST_F(HedgeTest, TheRetryBudgetStopsHedges) {
  hanging.set_slow_delay(300ms);
  start_hedged("",
               "    hedge: {after_ms: 50, max_extra: 3}\n"
               "    retry_budget: {budget_ratio: 0.0, min_retries_per_second: 0}\n");
  std::map<std::string, int> answered_by;
  for (int i = 0; i < 4; ++i) ++answered_by[get("/").body];
  EXPECT_EQ(answered_by, (std::map<std::string, int>{{"hanging", 2}, {"healthy", 2}}));
  EXPECT_EQ(cluster()["hedges"], 0);
}

TEST_F(HedgeTest, ACancelledTrysConnectionIsClosedNotReused) {
  start_hedged("", "    hedge: {after_ms: 50}\n");
  // One client connection, so that the proxy's pool is the only thing that could reuse one.
  int fd = connect_to(port);
  std::string buffer;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(send_all(fd, "GET / HTTP/1.1\r\nHost: t\r\n\r\n"));
    Message response = read_message(fd, buffer, true);
    EXPECT_EQ(response.status(), 200);
    EXPECT_EQ(response.body, "healthy");
  }
  ::close(fd);
  // Every try to the hanging endpoint was cancelled, each on a connection of its own: had a
  // cancelled one gone back to the pool, a later try would have sent its request on it, behind
  // the one still being answered (and would have read that answer as its own).
  const int tries = cluster()["endpoints"][0]["requests"].get<int>();
  EXPECT_GT(tries, 0);
  EXPECT_EQ(hanging.connections(), tries);
  EXPECT_EQ(hanging.requests(), tries);
  EXPECT_EQ(healthy.connections(), 1);  // the winners' connections are pooled as usual
}

TEST_F(ProxyTest, AtTheConnectionLimitRequestsWaitUpToMaxPendingThenOverflow) {
  Upstream slow("slow", Behaviour::kSlow);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&slow},
                     "    connect_timeout_ms: 2000\n"
                     "    limits: {max_connections: 1, max_pending: 1}\n"));
  auto first = std::async(std::launch::async, [&] { return get("/"); });
  for (int i = 0; i < 200 && slow.requests() == 0; ++i) std::this_thread::sleep_for(5ms);
  auto second = std::async(std::launch::async, [&] { return get("/"); });  // waits its turn
  std::this_thread::sleep_for(50ms);
  Message third = get("/");  // the one waiting place is taken
  EXPECT_EQ(third.status(), 503);
  EXPECT_EQ(third.header("x-keel-reason"), "overflow");
  EXPECT_EQ(first.get().status(), 200);
  EXPECT_EQ(second.get().status(), 200);  // on the connection the first gave back
  EXPECT_EQ(slow.connections(), 1);
}

TEST_F(ProxyTest, MalformedRequestsGetTheRightStatusAndTheProxyKeepsServing) {
  Upstream web("web");
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&web}));
  struct Case {
    std::string raw;
    int status;
  };
  const std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + std::string(4000, 'x') + "\r\n\r\n", 431},
      {"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n", 413},
      {"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400},
      {"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: t\r\n\r\n", 431},
      {"BREW / HTTP/1.1\r\nHost: t\r\n\r\n", 501},
      {"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400},
      {"\x01\x02\x03 garbage\r\n\r\n", 400},
      // An empty coding list: the body would be unframed, and a request smuggled inside it.
      {"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: ,\r\n\r\n0 /x HTTP/1.1\r\nHost: t\r\n\r\n",
       400},
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      // A request line and Host in the trailer section: a second request to a lenient upstream.
      {"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n"
       "GET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
       400},
  };
  const int before = web.requests();
  for (const auto& c : cases) {
    Message response = request(c.raw);
    EXPECT_EQ(response.status(), c.status) << c.raw.substr(0, 80);
    EXPECT_EQ(ascii_lower(response.header("connection")), "close") << c.raw.substr(0, 80);
  }
  EXPECT_EQ(web.requests(), before);  // none was passed on
  EXPECT_EQ(get("/").status(), 200);
}

TEST_F(ProxyTest, AClientThatSendsItsHeaderTooSlowlyIsCutOff) {
  Upstream web("web");
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: web}\nclusters:\n" +
        cluster_yaml("web", {&web}));
  int fd = connect_to(port);
  ASSERT_TRUE(send_all(fd, "GET / HTTP/1.1\r\nHost: t\r\n"));  // and never the blank line
  char c;
  const auto start_time = std::chrono::steady_clock::now();
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0);  // closed by the proxy (header_timeout_ms 1000)
  EXPECT_LT(std::chrono::steady_clock::now() - start_time, 5s);
  ::close(fd);
}

TEST_F(ProxyTest, AnAnswerSlowerThanTheHeaderTimeoutStillReachesTheClient) {
  // The client's header timeout (1 s here) covers its header only: while its request is with
  // the upstream, the route's timeout rules.
  Upstream slow("slow", Behaviour::kSlow);
  slow.set_slow_delay(1500ms);
  start(std::string(kListener) +
        "      - {match: {prefix: /}, cluster: slow, timeout_ms: 4000}\nclusters:\n" +
        cluster_yaml("slow", {&slow}));
  Message response = get("/");
  EXPECT_EQ(response.status(), 200);
  EXPECT_EQ(response.body, "slow");
}

TEST_F(ProxyTest, StreamsLargeBodiesBothWays) {
  Upstream echo("echo", Behaviour::kEcho);
  start(std::string(kListener) + "      - {match: {prefix: /}, cluster: echo}\nclusters:\n" +
        cluster_yaml("echo", {&echo}));
  std::string body(5 * 1024 * 1024, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>('a' + i % 26);
  Message response =
      request("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body);
  ASSERT_EQ(response.status(), 200);
  EXPECT_EQ(response.body.size(), body.size());
  EXPECT_TRUE(response.body == body);
  // Chunked in, with Expect: 100-continue answered by the proxy.
  int fd = connect_to(port);
  ASSERT_TRUE(send_all(fd,
                       "POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                       "Expect: 100-continue\r\n\r\n"));
  std::string buffer;
  Message go_on = read_message(fd, buffer, true);
  EXPECT_EQ(go_on.status(), 100);
  ASSERT_TRUE(send_all(fd, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"));
  Message echoed = read_message(fd, buffer, true);
  EXPECT_EQ(echoed.status(), 200);
  EXPECT_EQ(echoed.body, "hello world");
  ::close(fd);
}

// An upstream that answers every request head it reads with the same bytes, whatever they are:
// for answers ScriptedServer would not give (1xx first, chunked, malformed). One connection at
// a time.
class RawUpstream {
 public:
  explicit RawUpstream(std::string answer) : answer_(std::move(answer)) {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 16), 0);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] {
      for (int fd; (fd = ::accept(listener_, nullptr, nullptr)) >= 0;) {
        serving_ = fd;
        std::string in;
        char buffer[4096];
        for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) {
          in.append(buffer, static_cast<std::size_t>(n));
          for (std::size_t end; (end = in.find("\r\n\r\n")) != std::string::npos;) {
            in.erase(0, end + 4);
            send_all(fd, answer_);
          }
        }
        serving_ = -1;
        ::close(fd);
      }
    });
  }
  ~RawUpstream() {
    ::shutdown(listener_, SHUT_RDWR);
    ::shutdown(serving_.load(), SHUT_RDWR);
    ::close(listener_);
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  std::string answer_;
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> serving_{-1};
  std::thread thread_;
};

TEST_F(ProxyTest, UpstreamAnswersAreReframedForTheClientAndBadOnesGet502) {
  RawUpstream chunked(
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n"
      "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
  RawUpstream broken("HTTP/1.1 2xx Nope\r\n\r\n");
  start(std::string(kListener) +
        "      - {match: {prefix: /broken}, cluster: broken}\n"
        "      - {match: {prefix: /}, cluster: chunked}\nclusters:\n"
        "  - name: chunked\n    endpoints: [{address: " +
        chunked.address() +
        "}]\n"
        "  - name: broken\n    endpoints: [{address: " +
        broken.address() + "}]\n");

  // HTTP/1.1: the chunked body as it came, the 100 passed over. Two requests in one write
  // (pipelined) get two answers, in order.
  int fd = connect_to(port);
  ASSERT_TRUE(send_all(fd, "GET /a HTTP/1.1\r\nHost: t\r\n\r\nGET /b HTTP/1.1\r\nHost: t\r\n\r\n"));
  std::string buffer;
  for (int i = 0; i < 2; ++i) {
    Message response = read_message(fd, buffer, true);
    EXPECT_EQ(response.status(), 200);
    EXPECT_EQ(ascii_lower(response.header("transfer-encoding")), "chunked");
    EXPECT_EQ(response.header("x-up"), "1");
    EXPECT_EQ(response.body, "hello world");
  }
  ::close(fd);

  // HTTP/1.0 cannot take chunked: its data, ended by the close.
  Message old = request("GET /c HTTP/1.0\r\nHost: t\r\n\r\n");
  EXPECT_EQ(old.start_line.substr(0, 12), "HTTP/1.0 200");
  EXPECT_EQ(old.header("transfer-encoding"), "");
  EXPECT_EQ(ascii_lower(old.header("connection")), "close");
  EXPECT_EQ(old.body, "hello world");

  // A malformed status line is the upstream's fault: 502, and the proxy goes on.
  Message bad = get("/broken");
  EXPECT_EQ(bad.status(), 502);
  EXPECT_EQ(bad.header("x-keel-reason"), "upstream_reset");
  EXPECT_EQ(get("/a").body, "hello world");
}

TEST_F(ProxyTest, ReloadTakesOverWithoutLosingARequestAndARefusedOneChangesNothing) {
  Upstream blue("blue"), green("green", Behaviour::kSlow);
  auto config_for = [&](Upstream& target) {
    return std::string(kListener) + "      - {match: {prefix: /}, cluster: app}\nclusters:\n" +
           cluster_yaml("app", {&target});
  };
  start(config_for(blue));
  EXPECT_EQ(get("/").body, "blue");
  // Clients keep asking while the config flips between blue and (slow) green.
  std::atomic<bool> done{false};
  std::atomic<int> answered{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 4; ++c) {
    clients.emplace_back([&] {
      while (!done) {
        Message response = get("/");
        (response.status() == 200 ? answered : failed)++;
      }
    });
  }
  for (int i = 0; i < 6; ++i) {
    auto next = parse_config(config_for(i % 2 == 0 ? green : blue), "reload.yaml");
    ASSERT_TRUE(next);
    EXPECT_TRUE(server->reload(std::move(*next)));
    std::this_thread::sleep_for(150ms);
  }
  done = true;
  for (auto& client : clients) client.join();
  EXPECT_EQ(failed, 0);
  EXPECT_GT(answered, 10);
  EXPECT_EQ(get("/").body, "blue");  // the last reload
  // A listener cannot move on reload: refused with the reason, and blue keeps serving.
  std::string moved = config_for(green);
  moved.replace(moved.find("127.0.0.1:0"), 11, "127.0.0.1:1");
  auto refused = server->reload(std::move(*parse_config(moved, "moved.yaml")));
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("restart"), std::string::npos);
  EXPECT_EQ(get("/").body, "blue");
}

TEST_F(ProxyTest, TheAdminListenerServesHealthMetricsAndClusters) {
  Upstream web("web");
  start("admin: {address: 127.0.0.1:0}\n" + std::string(kListener) +
        "      - {match: {prefix: /}, cluster: web}\nclusters:\n" + cluster_yaml("web", {&web}));
  ASSERT_EQ(get("/").status(), 200);
  auto admin = server->admin();
  ASSERT_TRUE(admin);
  auto fetch = [&](const std::string& path) {
    int fd = connect_to(admin->port);
    send_all(fd, "GET " + path + " HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    std::string buffer;
    Message response = read_message(fd, buffer, true);
    ::close(fd);
    return response;
  };
  EXPECT_EQ(fetch("/healthz").body, "ok\n");
  EXPECT_EQ(fetch("/ready").status(), 200);
  Message metrics = fetch("/metrics");
  EXPECT_NE(metrics.body.find("keel_proxy_requests_total{cluster=\"web\"} 1"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("keel_proxy_responses_total{cluster=\"web\",class=\"2xx\"} 1"),
            std::string::npos);
  auto clusters = nlohmann::json::parse(fetch("/clusters").body);
  EXPECT_EQ(clusters[0]["name"], "web");
  EXPECT_EQ(clusters[0]["endpoints"][0]["requests"], 1);
  EXPECT_NE(metrics.body.find(
                "keel_proxy_route_requests_total{listener=\"listener-0\",route=\"prefix:/\"} 1"),
            std::string::npos)
      << metrics.body;
  // The console: a first paint with the endpoint, its assets, and its feed of samples.
  Message page = fetch("/");
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  EXPECT_NE(page.body.find("data-kind=\"proxy\""), std::string::npos);
  EXPECT_NE(page.body.find("data-endpoint=\"" + web.address() + "\" data-health=\"healthy\""),
            std::string::npos)
      << page.body;
  EXPECT_EQ(fetch("/console/console.js").header("content-type"), "text/javascript; charset=utf-8");
  EXPECT_EQ(fetch("/console/console.css").status(), 200);
  int fd = connect_to(admin->port);
  send_all(fd, "GET /console/events HTTP/1.1\r\nHost: a\r\n\r\n");
  std::string buffer;
  Message head = read_message(fd, buffer, true, true);
  EXPECT_EQ(head.status(), 200);
  EXPECT_EQ(head.header("content-type"), "text/event-stream");
  char bytes[4096];
  while (buffer.find("\n\n", buffer.find("event: history")) == std::string::npos) {
    const ssize_t n = ::recv(fd, bytes, sizeof bytes, 0);
    ASSERT_GT(n, 0) << buffer;
    buffer.append(bytes, static_cast<std::size_t>(n));
  }
  ::close(fd);
  EXPECT_NE(buffer.find("\"kind\":\"proxy\""), std::string::npos) << buffer;
  EXPECT_NE(buffer.find("\"address\":\"" + web.address() + "\""), std::string::npos) << buffer;
  EXPECT_EQ(fetch("/nope").status(), 404);
}

TEST_F(ProxyTest, PostReloadOnTheAdminListenerTakesTheNewConfigOrSaysWhyNot) {
  Upstream blue("blue"), green("green");
  auto config_for = [&](Upstream& target, const std::string& extra = "") {
    return "admin: {address: 127.0.0.1:0}\n" + std::string(kListener) +
           "      - {match: {prefix: /}, cluster: app}\nclusters:\n" +
           cluster_yaml("app", {&target}, extra);
  };
  start(config_for(blue));
  std::string next = config_for(green);
  server->on_admin_reload([&]() -> Status {
    auto parsed = parse_config(next, "next.yaml");
    if (!parsed) return parsed.error();
    return server->reload(std::move(*parsed));
  });
  auto call = [&](const std::string& method) {
    int fd = connect_to(server->admin()->port);
    send_all(fd, method +
                     " /reload HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n");
    std::string buffer;
    Message response = read_message(fd, buffer, true);
    ::close(fd);
    return response;
  };
  EXPECT_EQ(call("GET").status(), 405);
  // A keep-alive connection opened before the reload gets the new config for its next request.
  int kept = connect_to(port);
  std::string kept_buffer;
  send_all(kept, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(read_message(kept, kept_buffer, true).body, "blue");
  EXPECT_EQ(call("POST").status(), 200);
  send_all(kept, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
  EXPECT_EQ(read_message(kept, kept_buffer, true).body, "green");
  ::close(kept);
  EXPECT_EQ(get("/").body, "green");
  next = config_for(blue, "    load_balancer: {policy: fastest}\n");
  Message refused = call("POST");
  EXPECT_EQ(refused.status(), 400);
  EXPECT_NE(refused.body.find("fastest"), std::string::npos) << refused.body;
  EXPECT_EQ(get("/").body, "green");
}

TEST_F(ProxyTest, StateChangingAdminEndpointsNeedTheTokenWhenOneIsSet) {
  Upstream app("app");
  start("admin: {address: 127.0.0.1:0, token: s3cret}\n" + std::string(kListener) +
        "      - {match: {prefix: /}, cluster: app}\nclusters:\n" + cluster_yaml("app", {&app}));
  int reloads = 0;
  server->on_admin_reload([&]() -> Status {
    ++reloads;
    return {};
  });
  auto call = [&](const std::string& method, const std::string& target,
                  const std::string& authorization) {
    int fd = connect_to(server->admin()->port);
    send_all(fd, method + " " + target + " HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n" +
                     (authorization.empty() ? "" : "Authorization: " + authorization + "\r\n") +
                     "Connection: close\r\n\r\n");
    std::string buffer;
    Message response = read_message(fd, buffer, true);
    ::close(fd);
    return response;
  };
  EXPECT_EQ(call("POST", "/reload", "").status(), 401);
  EXPECT_EQ(call("POST", "/reload", "Bearer wrong!").status(), 401);
  EXPECT_EQ(call("POST", "/migration?route=x&stage=legacy", "").status(), 401);
  EXPECT_EQ(reloads, 0);
  EXPECT_EQ(call("POST", "/reload", "Bearer s3cret").status(), 200);
  EXPECT_EQ(reloads, 1);
  EXPECT_EQ(call("GET", "/metrics", "").status(), 200);  // reading needs no token
  // Not on loopback without a token: the config is refused.
  auto open_admin = parse_config("admin: {address: 0.0.0.0:9901}\n" + std::string(kListener) +
                                     "      - {match: {prefix: /}, cluster: app}\nclusters:\n" +
                                     cluster_yaml("app", {&app}),
                                 "open.yaml");
  ASSERT_FALSE(open_admin);
  EXPECT_NE(open_admin.error().message().find("admin.token: is required"), std::string::npos)
      << open_admin.error().message();
}

}  // namespace
}  // namespace keel::proxy

#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "keel/cli/demo.h"
#include "keel/proxy/server.h"
#include "keel/testing/scripted_server.h"

namespace keel::cli {
namespace {

using testing::Behaviour;
using testing::ScriptedServer;

// POST or GET on the proxy's admin listener; the body.
std::string admin(std::uint16_t port, const std::string& method, const std::string& target) {
  int fd = testing::connect_to(port);
  if (fd < 0) return {};
  testing::send_all(
      fd, method + " " + target +
              " HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  std::string buffer;
  auto response = testing::read_message(fd, buffer, true);
  ::close(fd);
  return response.body;
}

}  // namespace

int run_strangler_demo(const DemoOptions&) {
  const QuietLog quiet("proxy");  // stage changes and rollbacks: narrated below
  std::printf(
      "\nStrangler Fig: route /price moves from legacy to modern in stages; modern rounds one "
      "price differently, and both stamp their answers with a time (noise)\n");
  // Two legacy endpoints (the noise baseline asks the second) and one modern.
  ScriptedServer legacy_a("legacy-a"), legacy_b("legacy-b"), modern("modern");
  legacy_a.set_body(R"({"item": "tea", "price": 3.10, "generated_at": 1001})", "application/json");
  legacy_b.set_body(R"({"item": "tea", "price": 3.10, "generated_at": 1002})", "application/json");
  modern.set_body(R"({"item": "tea", "price": 3.09, "generated_at": 2001})", "application/json");
  const std::string yaml =
      "admin: {address: 127.0.0.1:0}\n"
      "access_log: false\n"
      "listeners:\n"
      "  - address: 127.0.0.1:0\n"
      "    routes:\n"
      "      - name: price\n"
      "        match: {prefix: /price}\n"
      "        migration:\n"
      "          legacy: legacy\n"
      "          modern: modern\n"
      "          sticky: {header: x-user}\n"
      "          noise_baseline: true\n"
      "          guard: {window_ms: 5000, min_requests: 20, max_error_rate: 0.1}\n"
      "clusters:\n"
      "  - {name: legacy, endpoints: [{address: " +
      legacy_a.address() + "}, {address: " + legacy_b.address() +
      "}]}\n"
      "  - {name: modern, retry: {num_retries: 0}, endpoints: [{address: " +
      modern.address() + "}]}\n";
  auto config = proxy::parse_config(yaml, "demo");
  SteadyClock clock;
  auto server = config ? proxy::Server::start(std::move(*config), clock)
                       : Result<std::unique_ptr<proxy::Server>>(config.error());
  if (!server) {
    std::fprintf(stderr, "keel demo: %s\n", server.error().message().c_str());
    return 1;
  }
  const std::uint16_t port = (*server)->listening().front().port;
  const std::uint16_t admin_port = (*server)->admin()->port;

  // 200 users ask once each; who answered them.
  auto traffic = [&](const char* stage) {
    int from_modern = 0, failed = 0;
    int fd = testing::connect_to(port);
    std::string buffer;
    for (int user = 0; user < 200; ++user) {
      testing::send_all(fd, "GET /price?item=tea HTTP/1.1\r\nHost: shop\r\nx-user: u" +
                                std::to_string(user) + "\r\n\r\n");
      auto answer = testing::read_message(fd, buffer, true);
      from_modern += answer.header("x-upstream") == "modern";
      failed += answer.status() != 200;
    }
    ::close(fd);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // shadow copies finish
    auto report = nlohmann::json::parse(admin(admin_port, "GET", "/migration"))[0];
    std::printf("  %-22s modern answered %3d of 200, %d failed | stage now %s\n", stage,
                from_modern, failed, report["stage"].get<std::string>().c_str());
    return report;
  };

  traffic("legacy");
  admin(admin_port, "POST", "/migration?route=price&stage=shadow");
  auto shadow = traffic("shadow");
  std::printf("    %s copies compared, diff rate %.0f%%\n", shadow["mirrored"].dump().c_str(),
              100 * shadow["diff_rate"].get<double>());
  for (const auto& field : shadow["top_differing_fields"]) {
    std::printf("    differs: %-16s in %s of the copies (held against modern)\n",
                field["field"].get<std::string>().c_str(), field["count"].dump().c_str());
  }
  for (const auto& [field, count] : shadow["noise_fields"].items()) {
    std::printf("    noise:   %-16s legacy differs from itself here too (%s times): not counted\n",
                field.c_str(), count.dump().c_str());
  }
  modern.set_body(R"({"item": "tea", "price": 3.10, "generated_at": 2002})", "application/json");
  std::printf("  modern fixes its rounding\n");
  admin(admin_port, "POST", "/migration?route=price&stage=canary&percent=30");
  traffic("canary 30%");
  admin(admin_port, "POST", "/migration?route=price&stage=modern");
  traffic("modern");
  modern.set(Behaviour::kFail);
  std::printf("  modern starts failing (503)\n");
  auto rolled = traffic("modern, failing");
  std::printf("    guard rail: %s\n", rolled["last_rollback"].get<std::string>().c_str());
  modern.set(Behaviour::kOk);
  (*server)->stop(1s);
  return 0;
}

}  // namespace keel::cli

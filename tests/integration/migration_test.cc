// Strangler Fig in keel proxy, against real upstreams on loopback: each stage routes as it says,
// the canary is sticky and measures up to its percentage, shadow copies reach modern without
// touching the client's answer, their diffs are counted, and stages survive a restart.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "keel/proxy/server.h"
#include "keel/testing/scripted_server.h"

namespace keel::proxy {
namespace {

using keel::testing::Behaviour;
using keel::testing::Message;
using Upstream = keel::testing::ScriptedServer;

class MigrationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_file = (std::filesystem::temp_directory_path() /
                  ("keel-migration-it-" + std::to_string(::getpid()) + ".json"))
                     .string();
    std::filesystem::remove(state_file);
  }
  void TearDown() override {
    if (server) server->stop(1s);
    std::filesystem::remove(state_file);
  }

  void start(const std::string& stage, double percent = 0, const std::string& extra = "",
             const std::string& more_legacy = "") {
    const std::string yaml =
        "admin: {address: 127.0.0.1:0}\n"
        "migration_state_file: " +
        state_file +
        "\n"
        "access_log: false\n"
        "listeners:\n"
        "  - address: 127.0.0.1:0\n"
        "    routes:\n"
        "      - name: prices\n"
        "        match: {prefix: /}\n"
        "        timeout_ms: 500\n"
        "        migration:\n"
        "          legacy: old\n"
        "          modern: new\n"
        "          stage: " +
        stage +
        "\n"
        "          percent: " +
        std::to_string(percent) +
        "\n"
        "          sticky: {header: x-user}\n"
        "          diff: {ignore_json_paths: \"$.served_by\"}\n"
        "          guard: {window_ms: 10000, min_requests: 10, max_error_rate: 0.2}\n" +
        extra +
        "clusters:\n"
        "  - {name: old, retry: {num_retries: 0}, endpoints: [{address: " +
        legacy.address() + "}" + more_legacy +
        "]}\n"
        "  - {name: new, retry: {num_retries: 0}, endpoints: [{address: " +
        modern.address() + "}]}\n";
    auto config = parse_config(yaml, "migration.yaml");
    ASSERT_TRUE(config) << config.error().message();
    auto started = Server::start(std::move(*config), clock);
    ASSERT_TRUE(started) << started.error().message();
    server = std::move(*started);
  }

  // One request on a keep-alive connection of this test (opened on first use).
  Message get(const std::string& user = "") {
    if (fd < 0) {
      fd = keel::testing::connect_to(server->listening().front().port);
      buffer.clear();
    }
    keel::testing::send_all(fd, "GET /price HTTP/1.1\r\nHost: shop\r\n" +
                                    (user.empty() ? std::string() : "x-user: " + user + "\r\n") +
                                    "\r\n");
    return keel::testing::read_message(fd, buffer, true);
  }
  Message admin(const std::string& method, const std::string& target) {
    int admin_fd = keel::testing::connect_to(server->admin()->port);
    keel::testing::send_all(
        admin_fd, method + " " + target +
                      " HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    std::string admin_buffer;
    Message response = keel::testing::read_message(admin_fd, admin_buffer, true);
    ::close(admin_fd);
    return response;
  }
  nlohmann::json report() { return nlohmann::json::parse(admin("GET", "/migration").body)[0]; }
  void restart() {
    if (fd >= 0) ::close(fd);
    fd = -1;
    server->stop(1s);
    server.reset();
  }

  Upstream legacy{"legacy"}, modern{"modern"};
  SteadyClock clock;
  std::string state_file;
  std::unique_ptr<Server> server;
  int fd = -1;
  std::string buffer;
};

TEST_F(MigrationTest, EachStageRoutesAsItSays) {
  start("legacy");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(get("u" + std::to_string(i)).body, "legacy");
  EXPECT_EQ(modern.requests(), 0);
  EXPECT_EQ(admin("POST", "/migration?route=prices&stage=modern").status(), 200);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(get("u" + std::to_string(i)).body, "modern");
  // retired: only from modern, and then legacy is never called again.
  const int legacy_before = legacy.requests();
  EXPECT_EQ(admin("POST", "/migration?route=prices&stage=retired").status(), 200);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(get().body, "modern");
  EXPECT_EQ(legacy.requests(), legacy_before);
  EXPECT_EQ(report()["stage"], "retired");
  // Bad changes are refused with the reason.
  Message skip = admin("POST", "/migration?route=prices&stage=soon");
  EXPECT_EQ(skip.status(), 400);
  EXPECT_NE(skip.body.find("stage= must be"), std::string::npos);
  EXPECT_EQ(admin("POST", "/migration?route=nope&stage=legacy").status(), 400);
  EXPECT_EQ(admin("GET", "/migration?route=prices&stage=legacy").status(), 200);  // GET reads
}

TEST_F(MigrationTest, TheCanaryIsStickyAndItsShareIsWithinTwoPoints) {
  start("canary", 10);
  std::vector<bool> on_modern_at_10(2000);
  for (int i = 0; i < 2000; ++i)
    on_modern_at_10[i] = get("user-" + std::to_string(i)).body == "modern";
  for (double percent : {10.0, 50.0, 90.0}) {
    ASSERT_EQ(admin("POST", "/migration?route=prices&stage=canary&percent=" +
                                std::to_string(static_cast<int>(percent)))
                  .status(),
              200);
    int modern_answers = 0;
    for (int i = 0; i < 10000; ++i) {
      const std::string user = "user-" + std::to_string(i);
      const bool to_modern = get(user).body == "modern";
      modern_answers += to_modern;
      // A user once on modern stays there as the percentage grows.
      if (i < 2000 && on_modern_at_10[i]) {
        EXPECT_TRUE(to_modern) << user << " at " << percent;
      }
    }
    EXPECT_NEAR(modern_answers / 100.0, percent, 2.0) << "at " << percent << "%";
  }
}

TEST_F(MigrationTest, ShadowCopiesReachModernAreComparedAndNeverTouchTheClient) {
  legacy.set_body(R"({"price": 10, "currency": "EUR", "served_by": "legacy"})", "application/json");
  modern.set_body(R"({"price": 11, "currency": "EUR", "served_by": "modern"})", "application/json");
  start("shadow");
  for (int i = 0; i < 20; ++i) {
    Message answer = get();
    ASSERT_EQ(answer.status(), 200);
    EXPECT_NE(answer.body.find("\"served_by\": \"legacy\""), std::string::npos);  // legacy's
  }
  // Copies run on an idle-priority thread: on a busy machine they can take seconds.
  for (int i = 0; i < 1500 && report()["differed"].get<int>() < 20; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  auto shadow = report();
  EXPECT_EQ(shadow["differed"], 20);
  EXPECT_EQ(shadow["matched"], 0);
  ASSERT_EQ(shadow["top_differing_fields"].size(), 1u);  // served_by is on the ignore list
  EXPECT_EQ(shadow["top_differing_fields"][0]["field"], "$.price");
  EXPECT_EQ(modern.last_request().header("x-keel-shadow"), "1");
  EXPECT_EQ(shadow["samples"][0]["request"], "GET /price");
  // Modern stops answering: clients do not notice; the copies fail and are counted. Had the
  // copies been waited for, ten requests would have taken ten 500 ms timeouts.
  modern.set(Behaviour::kHang);
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(get().status(), 200);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2500ms);
  for (int i = 0; i < 1500 && report()["mirror_failed"].get<int>() < 10; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(report()["mirror_failed"], 10);
}

TEST_F(MigrationTest, TheNoiseBaselineKeepsLegacysOwnVariationOutOfTheDiff) {
  // Two legacy endpoints whose answers differ in a timestamp: that field is noise. Modern also
  // differs in the price: that one counts.
  Upstream legacy_too("legacy-too");
  legacy.set_body(R"({"price": 10, "ts": 1})", "application/json");
  legacy_too.set_body(R"({"price": 10, "ts": 2})", "application/json");
  modern.set_body(R"({"price": 11, "ts": 3})", "application/json");
  start("shadow", 0, "          noise_baseline: true\n",
        ", {address: " + legacy_too.address() + "}");
  for (int i = 0; i < 10; ++i) ASSERT_EQ(get().status(), 200);
  for (int i = 0; i < 200 && report()["differed"].get<int>() < 10; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  auto shadow = report();
  EXPECT_EQ(shadow["differed"], 10);
  ASSERT_EQ(shadow["top_differing_fields"].size(), 1u) << shadow.dump();
  EXPECT_EQ(shadow["top_differing_fields"][0]["field"], "$.price");
  EXPECT_EQ(shadow["noise_fields"]["$.ts"], 10) << shadow.dump();
}

TEST_F(MigrationTest, ModernFailingRollsTheRouteBackAndTheRollbackIsKept) {
  start("modern");
  modern.set(Behaviour::kFail);
  for (int i = 0; i < 10; ++i) get("user-" + std::to_string(i));
  auto after = report();  // the tenth answer is judged just after it is relayed
  for (int i = 0; i < 100 && after["stage"] != "canary"; ++i) {
    std::this_thread::sleep_for(10ms);
    after = report();
  }
  EXPECT_EQ(after["stage"], "canary");
  EXPECT_EQ(after["rollbacks"], 1);
  EXPECT_NE(after["last_rollback"].get<std::string>().find("error rate"), std::string::npos);
  restart();
  start("modern");
  EXPECT_EQ(report()["stage"], "canary");  // saved like an operator's change
}

TEST_F(MigrationTest, AtModernLegacyCanAnswerWhenModernFailsAndThatBlocksRetiring) {
  start("modern", 0, "          fallback_to_legacy: true\n");
  modern.set(Behaviour::kFail);
  for (int i = 0; i < 5; ++i) {
    Message answer = get("user-" + std::to_string(i));
    EXPECT_EQ(answer.status(), 200);
    EXPECT_EQ(answer.body, "legacy");
  }
  // An answer is counted just after it is relayed: give the last one a moment.
  auto after = report();
  for (int i = 0; i < 100 && after["legacy_answers_since_modern"] != 5; ++i) {
    std::this_thread::sleep_for(10ms);
    after = report();
  }
  EXPECT_EQ(after["legacy_answers_since_modern"], 5);
  EXPECT_EQ(after["modern_5xx"], 5);  // modern's failures still count for its guard rails
  Message retire = admin("POST", "/migration?route=prices&stage=retired");
  EXPECT_EQ(retire.status(), 400);
  EXPECT_NE(retire.body.find("legacy answered 5 requests"), std::string::npos) << retire.body;
  modern.set(Behaviour::kOk);
  EXPECT_EQ(get("user-9").body, "modern");
}

TEST_F(MigrationTest, StagesSurviveARestart) {
  start("legacy");
  ASSERT_EQ(admin("POST", "/migration?route=prices&stage=canary&percent=35").status(), 200);
  restart();
  start("legacy");  // the config still says legacy; the saved stage wins
  auto after = report();
  EXPECT_EQ(after["stage"], "canary");
  EXPECT_EQ(after["percent"], 35);
}

}  // namespace
}  // namespace keel::proxy

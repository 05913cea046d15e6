#include "keel/proxy/migration.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

namespace keel::proxy {
namespace {

TEST(MigrationTest, TheCanarySplitIsStickyAndOnlyGrows) {
  int on_modern_at_10 = 0;
  for (int user = 0; user < 10000; ++user) {
    const std::string key = "user-" + std::to_string(user);
    const bool at_10 = canary_picks_modern(key, 10);
    on_modern_at_10 += at_10;
    EXPECT_EQ(at_10, canary_picks_modern(key, 10));  // the same answer every time
    if (at_10) {
      EXPECT_TRUE(canary_picks_modern(key, 50)) << key;  // and it stays on modern
    }
  }
  EXPECT_NEAR(on_modern_at_10, 1000, 150);
  EXPECT_FALSE(canary_picks_modern("anyone", 0));
  EXPECT_TRUE(canary_picks_modern("anyone", 100));
}

TEST(MigrationTest, JsonAnswersAreComparedFieldByFieldWithAnIgnoreList) {
  DiffConfig config;
  config.compare_headers = {"content-type"};
  config.ignore_json_paths = {"$.generated_at", "$.items[*].etag"};
  Answer legacy{
      200,
      {{"content-type", "application/json"}},
      R"({"total": 30, "generated_at": 1, "items": [{"sku": "a", "price": 10, "etag": "x"},
                    {"sku": "b", "price": 20, "etag": "y"}], "currency": "EUR"})",
      true};
  Answer modern{
      200,
      {{"content-type", "application/json"}},
      R"({"total": 30, "generated_at": 2, "items": [{"sku": "a", "price": 10, "etag": "z"},
                    {"sku": "b", "price": 21, "etag": "w"}], "tax": 0})",
      true};
  EXPECT_EQ(diff_answers(legacy, modern, config),
            (std::vector<std::string>{"$.currency", "$.items[1].price", "$.tax"}));
  EXPECT_TRUE(diff_answers(legacy, legacy, config).empty());
  // Other bodies compare by bytes; status and chosen headers always.
  Answer text_a{200, {{"content-type", "text/plain"}}, "hello", false};
  Answer text_b{503, {{"content-type", "text/html"}}, "hello!", false};
  EXPECT_EQ(diff_answers(text_a, text_b, config),
            (std::vector<std::string>{"status", "header:content-type", "body"}));
}

TEST(MigrationTest, StagesCannotSkipToRetiredWhileLegacyGetsTraffic) {
  MigrationConfig config;
  ManualClock clock;
  MigrationState state("checkout", config, clock);
  EXPECT_EQ(state.stage(), Stage::kLegacy);
  auto refused = state.set_stage(Stage::kRetired, 0);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("only a route at modern"), std::string::npos);
  ASSERT_TRUE(state.set_stage(Stage::kCanary, 25));
  EXPECT_EQ(state.percent(), 25);
  EXPECT_FALSE(state.set_stage(Stage::kCanary, 120));
  ASSERT_TRUE(state.set_stage(Stage::kModern, 0));
  state.count_answer(false, 200);  // legacy still answered one (a client on an old connection)
  EXPECT_FALSE(state.set_stage(Stage::kRetired, 0));
  ASSERT_TRUE(state.set_stage(Stage::kModern, 0));  // re-entering modern starts the count again
  EXPECT_TRUE(state.set_stage(Stage::kRetired, 0));
}

TEST(MigrationTest, MirrorsAreBoundedAndDiffsCounted) {
  MigrationConfig config;
  config.max_in_flight = 2;
  ManualClock clock;
  MigrationState state("r", config, clock);
  EXPECT_TRUE(state.begin_mirror());
  EXPECT_TRUE(state.begin_mirror());
  EXPECT_FALSE(state.begin_mirror());  // dropped, never waited for
  state.end_mirror();
  EXPECT_TRUE(state.begin_mirror());
  state.record_diff({}, {});
  state.record_diff({"$.price"}, {.request_line = "GET /p", .fields = {"$.price"}});
  auto report = nlohmann::json::parse(state.report_json());
  EXPECT_EQ(report["mirrored"], 3);
  EXPECT_EQ(report["mirror_dropped"], 1);
  EXPECT_EQ(report["matched"], 1);
  EXPECT_EQ(report["differed"], 1);
  EXPECT_EQ(report["top_differing_fields"][0]["field"], "$.price");
  EXPECT_EQ(report["samples"][0]["request"], "GET /p");
}

TEST(MigrationTest, StagesSurviveARestartThroughTheStateFile) {
  const auto file = std::filesystem::temp_directory_path() /
                    ("keel-migration-" + std::to_string(::getpid()) + ".json");
  MigrationConfig config;
  ManualClock clock;
  {
    MigrationStore store(file.string(), clock);
    store.state("checkout", config);
    ASSERT_TRUE(store.set_stage("checkout", Stage::kCanary, 30));
    EXPECT_FALSE(store.set_stage("nowhere", Stage::kShadow, 0));
  }
  MigrationStore restarted(file.string(), clock);
  auto state = restarted.state("checkout", config);
  EXPECT_EQ(state->stage(), Stage::kCanary);
  EXPECT_EQ(state->percent(), 30);
  std::filesystem::remove(file);
}

TEST(MigrationTest, ModernFailingPastTheGuardRailRollsTheRouteBackOneStage) {
  MigrationConfig config;
  config.guard = {.window = 10s, .min_requests = 10, .max_error_rate = 0.2};
  ManualClock clock;
  MigrationState state("r", config, clock);
  std::vector<std::string> events;
  state.on_change([&](const std::string& what) { events.push_back(what); });
  ASSERT_TRUE(state.set_stage(Stage::kModern, 0));
  for (int i = 0; i < 9; ++i) state.count_answer(true, 503);  // below min_requests: no verdict
  EXPECT_EQ(state.stage(), Stage::kModern);
  clock.advance(11s);  // those fall out of the window
  for (int i = 0; i < 8; ++i) state.count_answer(true, 200);
  for (int i = 0; i < 2; ++i) state.count_answer(true, 500);  // 20%: not above the limit
  EXPECT_EQ(state.stage(), Stage::kModern);
  state.count_answer(true, 502);  // 3 of 11
  EXPECT_EQ(state.stage(), Stage::kCanary);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_NE(events[0].find("modern -> canary"), std::string::npos) << events[0];
  auto report = nlohmann::json::parse(state.report_json());
  EXPECT_EQ(report["rollbacks"], 1);
}

TEST(MigrationTest, SlowModernAnswersAndShadowDiffsAreGuardedToo) {
  MigrationConfig config;
  config.guard = {.window = 10s, .min_requests = 10, .max_p99 = 200ms, .max_diff_rate = 0.5};
  ManualClock clock;
  MigrationState state("r", config, clock);
  ASSERT_TRUE(state.set_stage(Stage::kCanary, 20));
  for (int i = 0; i < 150; ++i) state.count_answer(true, 200, 10ms);
  state.count_answer(true, 200, 900ms);  // 1 of 151 slow: p99 still under 200 ms
  EXPECT_EQ(state.stage(), Stage::kCanary);
  state.count_answer(true, 200, 900ms);  // 2 of 152: more than 1% slow, p99 above
  EXPECT_EQ(state.stage(), Stage::kShadow);
  for (int i = 0; i < 10; ++i)
    state.record_diff(i < 6 ? std::vector<std::string>{"$.x"} : std::vector<std::string>{}, {});
  EXPECT_EQ(state.stage(), Stage::kLegacy);
}

TEST(MigrationTest, AScheduledRampStepsUpWhileTheGuardRailsHold) {
  MigrationConfig config;
  config.ramp = {.step_percent = 10, .every = 5min};
  ManualClock clock;
  MigrationState state("r", config, clock);
  ASSERT_TRUE(state.set_stage(Stage::kCanary, 10));
  state.count_answer(false, 200);
  EXPECT_EQ(state.percent(), 10);
  clock.advance(5min);
  state.count_answer(false, 200);
  EXPECT_EQ(state.percent(), 20);
  clock.advance(1min);
  state.count_answer(false, 200);
  EXPECT_EQ(state.percent(), 20);
}

}  // namespace
}  // namespace keel::proxy

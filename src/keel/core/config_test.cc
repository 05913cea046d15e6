#include "keel/core/config.h"

#include <gtest/gtest.h>

namespace keel::config {
namespace {

struct ServerConfig {
  std::string name = "default";
  std::int64_t port = 80;
  double ratio = 0.5;
  bool verbose = false;
  Duration timeout = 1s;
  int mode = 0;
};

Result<ServerConfig> load(std::string_view text) {
  auto document = Document::parse(text, "server.yaml");
  if (!document) return document.error();
  ServerConfig config;
  Node server = document->root().child("server");
  server.require("port");
  server.read("name", config.name);
  server.read("port", config.port, 1, 65535);
  server.read("ratio", config.ratio, 0.0, 1.0);
  server.read("verbose", config.verbose);
  server.read_ms("timeout_ms", config.timeout, 1ms, 60s);
  int mode = server.read_choice("mode", {"fast", "safe"});
  if (mode >= 0) config.mode = mode;
  server.expect_only({"name", "port", "ratio", "verbose", "timeout_ms", "mode"});
  if (auto status = document->status(); !status) return status.error();
  return config;
}

TEST(Config, ReadsTypedFieldsAndKeepsDefaults) {
  auto config = load("server:\n  port: 8080\n  timeout_ms: 250\n  mode: safe\n  verbose: true\n");
  ASSERT_TRUE(config.ok()) << config.error().message();
  EXPECT_EQ(config->port, 8080);
  EXPECT_EQ(config->timeout, 250ms);
  EXPECT_EQ(config->mode, 1);
  EXPECT_TRUE(config->verbose);
  EXPECT_EQ(config->name, "default");
  EXPECT_EQ(config->ratio, 0.5);
}

TEST(Config, ErrorsNameFileLineFieldAndWhatWasExpected) {
  auto config = load(
      "server:\n"
      "  port: 99999\n"
      "  ratio: lots\n"
      "  timeuot_ms: 5\n"
      "  mode: quick\n");
  ASSERT_FALSE(config.ok());
  const std::string& message = config.error().message();
  EXPECT_NE(message.find("server.yaml:2:9: server.port: expected a whole number from 1 to 65535, "
                         "got 99999"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("server.yaml:3:10: server.ratio: expected a number, got \"lots\""),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("server.yaml:4:3: server.timeuot_ms: unknown field (did you mean "
                         "'timeout_ms'?)"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("server.mode: expected one of fast, safe, got \"quick\""),
            std::string::npos)
      << message;
}

TEST(Config, MissingRequiredFieldIsReported) {
  auto config = load("server:\n  name: a\n");
  ASSERT_FALSE(config.ok());
  EXPECT_NE(config.error().message().find("server.port: required field is missing"),
            std::string::npos)
      << config.error().message();
}

TEST(Config, SyntaxErrorGivesPosition) {
  auto config = load("server:\n  port: [1, 2\n");
  ASSERT_FALSE(config.ok());
  EXPECT_TRUE(config.error().is(errc::config_invalid));
  EXPECT_EQ(config.error().message().rfind("server.yaml:", 0), 0u) << config.error().message();
  EXPECT_NE(config.error().message().find("not valid YAML"), std::string::npos);
}

TEST(Config, WrongShapesAreErrorsNotCrashes) {
  EXPECT_FALSE(load("- 1\n- 2\n").ok());
  EXPECT_FALSE(load("server: 5\n").ok());
  EXPECT_FALSE(load("server:\n  port: {a: 1}\n").ok());
  auto list = Document::parse("items: 3\n", "x.yaml");
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->root().child("items").items().empty());
  EXPECT_FALSE(list->status().ok());
}

TEST(Config, MissingFileIsAnIoError) {
  auto document = Document::load_file("/nonexistent/keel.yaml");
  ASSERT_FALSE(document.ok());
  EXPECT_TRUE(document.error().is(errc::io_error));
  EXPECT_NE(document.error().message().find("/nonexistent/keel.yaml: cannot open"),
            std::string::npos);
}

}  // namespace
}  // namespace keel::config

// node.yaml: the example parses, every key lands where it should, and mistakes are reported
// with their line and path.
#include "keel/node/config.h"

#include <gtest/gtest.h>

namespace keel::node {
namespace {

TEST(NodeConfigTest, ReadsEveryKey) {
  auto config = parse_config(R"(data_dir: /var/lib/keel
listen: 0.0.0.0:3113
admin: 127.0.0.1:3114
workers: 4
append_threads: 8
durability: interval
sync_interval_ms: 50
heartbeat_ms: 1000
member_timeout_ms: 2000
limits:
  max_body_bytes: 65536
  max_subscribers: 3
  subscriber_buffer_bytes: 8192
  max_batch_events: 10
)",
                             "node.yaml");
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->data_dir, "/var/lib/keel");
  EXPECT_EQ(config->listen.to_string(), "0.0.0.0:3113");
  EXPECT_EQ(config->admin->port, 3114);
  EXPECT_EQ(config->workers, 4u);
  EXPECT_EQ(config->store.durability, eventlog::Durability::kInterval);
  EXPECT_EQ(config->store.sync_interval, 50ms);
  EXPECT_EQ(config->heartbeat, 1s);
  EXPECT_EQ(config->member_timeout, 2s);
  EXPECT_EQ(config->http.max_body_bytes, 65536u);
  EXPECT_EQ(config->limits.max_subscribers, 3u);
  EXPECT_EQ(config->store.max_append_events, 10u) << "the store enforces the batch limit too";
}

TEST(NodeConfigTest, TheExampleIsValid) {
  auto config = load_config(KEEL_SOURCE_DIR "/examples/node/node.yaml");
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->store.durability, eventlog::Durability::kEveryCommit);
}

TEST(NodeConfigTest, TheKafkaSectionTurnsTheListenerOnAndIsCheckedLikeTheRest) {
  EXPECT_FALSE(parse_config("data_dir: d\n", "node.yaml")->kafka) << "off unless asked for";
  auto config = parse_config(
      "kafka:\n  listen: 0.0.0.0:9093\n  advertised: broker-1:9093\n  default_partitions: 6\n"
      "  auto_create_topics: false\n  initial_rebalance_delay_ms: 0\n",
      "node.yaml");
  ASSERT_TRUE(config) << config.error().message();
  ASSERT_TRUE(config->kafka);
  EXPECT_EQ(config->kafka->listen.port, 9093);
  EXPECT_EQ(config->kafka->advertised->host, "broker-1");
  EXPECT_EQ(config->kafka->default_partitions, 6u);
  EXPECT_FALSE(config->kafka->auto_create_topics);
  EXPECT_EQ(config->kafka->initial_rebalance_delay, 0ms);
  auto typo = parse_config("kafka:\n  listen: 127.0.0.1:9092\n  partitions: 3\n", "node.yaml");
  ASSERT_FALSE(typo);
  EXPECT_NE(typo.error().message().find("node.yaml:3"), std::string::npos)
      << typo.error().message();
  EXPECT_NE(typo.error().message().find("kafka.partitions"), std::string::npos)
      << typo.error().message();
  EXPECT_FALSE(parse_config("kafka:\n  default_partitions: 0\n", "node.yaml"));
}

TEST(NodeConfigTest, MistakesAreReportedWithTheirPlace) {
  auto config = parse_config(
      "listen: 127.0.0.1:2113\ndurabilty: none\nlimits:\n  max_subscriber: 1\n"
      "workers: 0\n",
      "node.yaml");
  ASSERT_FALSE(config);
  const std::string message = config.error().message();
  EXPECT_NE(message.find("node.yaml:2"), std::string::npos) << message;
  EXPECT_NE(message.find("durability"), std::string::npos) << "suggests the right key: " << message;
  EXPECT_NE(message.find("limits.max_subscriber"), std::string::npos) << message;
  EXPECT_NE(message.find("workers"), std::string::npos) << message;
  EXPECT_FALSE(parse_config("listen: nowhere\n", "node.yaml"));
  EXPECT_FALSE(parse_config("durability: sometimes\n", "node.yaml"));
}

TEST(NodeConfigTest, ARestartIsNeededOnlyForWhatListensAndStores) {
  auto a = parse_config("limits: {max_subscribers: 5}\n", "a");
  auto b = parse_config("limits: {max_subscribers: 50}\nheartbeat_ms: 500\n", "b");
  auto c = parse_config("listen: 127.0.0.1:9999\n", "c");
  ASSERT_TRUE(a && b && c);
  EXPECT_TRUE(same_restart_settings(*a, *b));
  EXPECT_FALSE(same_restart_settings(*a, *c));
}

}  // namespace
}  // namespace keel::node

// `keel node`'s configuration: where the store lives, where the node listens, how durable an
// acknowledged append is, and the limits that keep one client from taking the node down.
// Read from YAML (node.yaml) with file:line errors and unknown keys refused, like the proxy's.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"
#include "keel/http/address.h"
#include "keel/http/limits.h"

namespace keel::node {

struct NodeLimits {
  std::uint32_t max_batch_events = 10000;           // events in one append
  std::uint32_t max_read_count = 1000;              // events in one read page
  std::uint32_t max_subscribers = 1000;             // open SSE subscriptions
  std::uint64_t subscriber_buffer_bytes = 1 << 20;  // queued for one slow subscriber
  std::uint32_t max_waiting_polls = 256;            // consumer-group long polls waiting at once
  std::uint32_t max_pending_appends = 4096;         // appends waiting for their sync; writes queued
  Duration max_poll_wait = 60s;                     // the longest a poll may wait
};

// The Kafka listener (docs/kafka.md): off unless the config has a `kafka:` section or
// `--kafka` is given.
struct KafkaConfig {
  http::HostPort listen{"127.0.0.1", 9092};
  std::optional<http::HostPort> advertised;  // what clients are told to connect to: listen
  std::uint32_t workers = 1;
  std::uint32_t default_partitions = 1;  // for topics created by Metadata or CreateTopics
  bool auto_create_topics = true;
  std::uint32_t max_message_bytes = 1048588;     // one record batch
  std::uint32_t max_request_bytes = 100u << 20;  // one request frame
  Duration initial_rebalance_delay = 3s;         // a new consumer group waits this for members
  Duration min_session_timeout = 1s;
};

// Membership of a cluster (src/keel/cluster): off unless the config has a `cluster:` section or
// `--join` is given. The node joins under a lease in etcd, serves only the slots the map gives
// it, and campaigns to be the controller.
struct ClusterConfig {
  std::vector<std::string> etcd;  // endpoints, "http://host:port"
  std::string id;                 // the node's id; default: its advertised API address
  std::string prefix = "keel/cluster";
  std::optional<http::HostPort> advertise;  // the API address others reach: default `listen`
  std::uint32_t initial_nodes = 1;          // the first map waits for this many nodes
  std::uint32_t slot_count = 4096;          // of the first map; fixed after it
  std::uint32_t max_slots_per_move = 16;    // a move's slots: fewer fence for less time
  Duration lease_ttl = 5s;                  // a node silent this long leaves the member list
};

struct NodeConfig {
  std::string source;  // the file it came from, for messages
  std::string data_dir = "keel-data";
  http::HostPort listen{"127.0.0.1", 2113};  // the API (and /metrics, /healthz, /ready)
  std::optional<http::HostPort> admin;       // the same operational endpoints, separately
  std::uint32_t workers = 2;                 // HTTP worker threads
  std::uint32_t append_threads = 16;         // threads for deletes, metadata, acks and group writes
  eventlog::StoreOptions store;              // durability, sync interval, segment size
  http::ServerLimits http;                   // connections, header and body bytes, timeouts
  NodeLimits limits;
  Duration heartbeat = 15s;       // SSE comment lines while nothing happens
  Duration member_timeout = 30s;  // a group member silent this long has left
  Duration drain = 10s;           // SIGTERM: how long in-flight work may take
  std::optional<KafkaConfig> kafka;
  std::optional<ClusterConfig> cluster;
};

// The config in `yaml` (`source_name` names it in messages). Every mistake is reported, each
// with its file, line and dotted path.
Result<NodeConfig> parse_config(std::string_view yaml, const std::string& source_name);
Result<NodeConfig> load_config(const std::string& path);

// The settings a restart needs to change (the data dir, the listeners, the workers) are the
// same in `a` and `b`: what SIGHUP may apply is everything else.
bool same_restart_settings(const NodeConfig& a, const NodeConfig& b);

}  // namespace keel::node

#include "keel/node/config.h"

#include "keel/core/config.h"

namespace keel::node {

using config::Node;

namespace {

void read_address(const Node& node, std::string_view key, http::HostPort& out) {
  std::string text;
  node.read(key, text);
  if (text.empty()) return;
  auto parsed = http::parse_host_port(text, true);
  if (!parsed) {
    node.fail(key, parsed.error().message());
    return;
  }
  out = *parsed;
}

void read_u64(const Node& node, std::string_view key, std::uint64_t& out, std::int64_t min,
              std::int64_t max) {
  std::int64_t value = static_cast<std::int64_t>(out);
  node.read(key, value, min, max);
  out = static_cast<std::uint64_t>(value);
}

Result<NodeConfig> read_config(const config::Document& document, const std::string& source_name) {
  const Node root = document.root();
  NodeConfig node;
  node.source = source_name;
  root.expect_only({"data_dir", "listen", "admin", "workers", "append_threads", "durability",
                    "sync_interval_ms", "segment_bytes", "max_event_bytes", "limits",
                    "heartbeat_ms", "member_timeout_ms", "drain_ms", "kafka", "cluster"});
  root.read("data_dir", node.data_dir);
  if (node.data_dir.empty()) root.fail("data_dir", "must not be empty");
  read_address(root, "listen", node.listen);
  if (root.child("admin").present()) {
    http::HostPort admin;
    read_address(root, "admin", admin);
    node.admin = admin;
  }
  root.read("workers", node.workers, 1, 64);
  root.read("append_threads", node.append_threads, 1, 256);
  switch (root.read_choice("durability", {"every_commit", "interval", "none"})) {
    case 1:
      node.store.durability = eventlog::Durability::kInterval;
      break;
    case 2:
      node.store.durability = eventlog::Durability::kNone;
      break;
    default:
      node.store.durability = eventlog::Durability::kEveryCommit;
      break;
  }
  root.read_ms("sync_interval_ms", node.store.sync_interval, 1ms, 60s);
  read_u64(root, "segment_bytes", node.store.segment_bytes, 1 << 20, std::int64_t{1} << 40);
  root.read("max_event_bytes", node.store.max_event_bytes, 1024, 64u << 20);
  root.read_ms("heartbeat_ms", node.heartbeat, 100ms, 3600s);
  root.read_ms("member_timeout_ms", node.member_timeout, 100ms, 3600s);
  root.read_ms("drain_ms", node.drain, 0ms, 600s);
  if (Node limits = root.child("limits"); limits.present()) {
    limits.expect_only({"max_connections", "max_header_bytes", "max_body_bytes",
                        "header_timeout_ms", "idle_timeout_ms", "max_batch_events",
                        "max_read_count", "max_subscribers", "subscriber_buffer_bytes",
                        "max_waiting_polls", "max_pending_appends", "max_poll_wait_ms"});
    limits.read("max_connections", node.http.max_connections, 1, 1000000);
    limits.read("max_header_bytes", node.http.max_header_bytes, 1024, 1024 * 1024);
    read_u64(limits, "max_body_bytes", node.http.max_body_bytes, 1024, std::int64_t{1} << 30);
    limits.read_ms("header_timeout_ms", node.http.header_timeout, 1ms, 3600s);
    limits.read_ms("idle_timeout_ms", node.http.idle_timeout, 1ms, 24h);
    limits.read("max_batch_events", node.limits.max_batch_events, 1, 100000);
    limits.read("max_read_count", node.limits.max_read_count, 1, 100000);
    limits.read("max_subscribers", node.limits.max_subscribers, 0, 1000000);
    read_u64(limits, "subscriber_buffer_bytes", node.limits.subscriber_buffer_bytes, 4096,
             std::int64_t{1} << 32);
    limits.read("max_waiting_polls", node.limits.max_waiting_polls, 0, 100000);
    limits.read("max_pending_appends", node.limits.max_pending_appends, 1, 1000000);
    limits.read_ms("max_poll_wait_ms", node.limits.max_poll_wait, 0ms, 3600s);
  }
  if (Node kafka = root.child("kafka"); kafka.present()) {
    kafka.expect_only({"listen", "advertised", "workers", "default_partitions",
                       "auto_create_topics", "max_message_bytes", "max_request_bytes",
                       "initial_rebalance_delay_ms", "min_session_timeout_ms"});
    KafkaConfig k;
    read_address(kafka, "listen", k.listen);
    if (kafka.child("advertised").present()) {
      http::HostPort advertised;
      read_address(kafka, "advertised", advertised);
      k.advertised = advertised;
    }
    kafka.read("workers", k.workers, 1, 64);
    kafka.read("default_partitions", k.default_partitions, 1, 1024);
    kafka.read("auto_create_topics", k.auto_create_topics);
    kafka.read("max_message_bytes", k.max_message_bytes, 1024, 64u << 20);
    kafka.read("max_request_bytes", k.max_request_bytes, 1024, 1u << 30);
    kafka.read_ms("initial_rebalance_delay_ms", k.initial_rebalance_delay, 0ms, 300s);
    kafka.read_ms("min_session_timeout_ms", k.min_session_timeout, 1ms, 3600s);
    node.kafka = k;
  }
  if (Node cluster = root.child("cluster"); cluster.present()) {
    cluster.expect_only({"etcd", "id", "prefix", "advertise", "initial_nodes", "slot_count",
                         "max_slots_per_move", "lease_ttl_ms"});
    ClusterConfig c;
    // "http://a:2379,http://b:2379", as etcdctl's --endpoints.
    std::string endpoints;
    cluster.read("etcd", endpoints);
    for (std::size_t start = 0; start <= endpoints.size();) {
      const std::size_t comma = std::min(endpoints.find(',', start), endpoints.size());
      std::string endpoint = endpoints.substr(start, comma - start);
      if (!endpoint.empty()) c.etcd.push_back(std::move(endpoint));
      start = comma + 1;
    }
    if (c.etcd.empty()) {
      cluster.fail("etcd", "must name at least one etcd endpoint (\"http://host:2379,...\")");
    }
    cluster.read("id", c.id);
    cluster.read("prefix", c.prefix);
    if (c.prefix.empty() || c.prefix.back() == '/') {
      cluster.fail("prefix", "must be a non-empty key prefix without a trailing '/'");
    }
    if (cluster.child("advertise").present()) {
      http::HostPort advertise;
      read_address(cluster, "advertise", advertise);
      c.advertise = advertise;
    }
    cluster.read("initial_nodes", c.initial_nodes, 1, 1000);
    cluster.read("slot_count", c.slot_count, 1, 1u << 20);
    cluster.read("max_slots_per_move", c.max_slots_per_move, 1, 1u << 20);
    cluster.read_ms("lease_ttl_ms", c.lease_ttl, 1s, 300s);
    node.cluster = c;
  }
  node.http.max_body_bytes = std::max<std::uint64_t>(node.http.max_body_bytes, 1024);
  node.store.max_append_events = node.limits.max_batch_events;
  node.store.max_read_count = std::max(node.store.max_read_count, node.limits.max_read_count);
  if (auto status = document.status(); !status) return status.error();
  return node;
}

}  // namespace

Result<NodeConfig> parse_config(std::string_view yaml, const std::string& source_name) {
  auto document = config::Document::parse(yaml, source_name);
  if (!document) return document.error();
  return read_config(*document, source_name);
}

Result<NodeConfig> load_config(const std::string& path) {
  auto document = config::Document::load_file(path);
  if (!document) return document.error();
  return read_config(*document, path);
}

bool same_restart_settings(const NodeConfig& a, const NodeConfig& b) {
  auto admin = [](const NodeConfig& c) { return c.admin ? c.admin->to_string() : ""; };
  auto cluster = [](const NodeConfig& c) {
    if (!c.cluster) return std::string();
    std::string out = c.cluster->id + " " + c.cluster->prefix + " " +
                      (c.cluster->advertise ? c.cluster->advertise->to_string() : "") + " " +
                      std::to_string(c.cluster->initial_nodes) + " " +
                      std::to_string(c.cluster->slot_count) + " " +
                      std::to_string(c.cluster->max_slots_per_move);
    for (const auto& endpoint : c.cluster->etcd) out += " " + endpoint;
    return out;
  };
  auto kafka = [](const NodeConfig& c) {
    if (!c.kafka) return std::string();
    return c.kafka->listen.to_string() + " " +
           (c.kafka->advertised ? c.kafka->advertised->to_string() : "") + " " +
           std::to_string(c.kafka->workers) + " " + std::to_string(c.kafka->default_partitions) +
           " " + (c.kafka->auto_create_topics ? "auto" : "") + " " +
           std::to_string(c.kafka->max_message_bytes) + " " +
           std::to_string(c.kafka->max_request_bytes);
  };
  return a.data_dir == b.data_dir && a.listen.to_string() == b.listen.to_string() &&
         admin(a) == admin(b) && a.workers == b.workers && a.append_threads == b.append_threads &&
         a.store.durability == b.store.durability &&
         a.store.segment_bytes == b.store.segment_bytes && kafka(a) == kafka(b) &&
         cluster(a) == cluster(b);
}

}  // namespace keel::node

// The Kafka protocol on an event store: what each request means for `eventlog::EventStore`.
// Topic T's partition P is the stream "T-P"; a record's offset is its event's version in that
// stream, so offsets are dense per partition, never move backwards and mean the same event
// after a restart. Keys, headers, timestamps and null values are kept in the event's metadata
// (docs/kafka.md has the whole mapping). Topics are registered in `$keel-kafka-topics`,
// committed offsets in `$keel-kafka-offsets`; group membership is the coordinator's.
//
//   Broker broker(store, clock, options);
//   broker.start();
//   broker.handle(std::move(frame), [](std::optional<std::string> response) { ... });
//   broker.stop();
//
// Thread-safety: handle() from any thread; replies come on the calling thread, the store's
// flusher thread or the broker's timer thread, and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"
#include "keel/kafka/coordinator.h"

namespace keel::kafka {

struct BrokerOptions {
  std::int32_t node_id = 0;
  std::string advertised_host = "127.0.0.1";  // what Metadata and FindCoordinator name
  std::int32_t advertised_port = 9092;
  std::string cluster_id = "keel";
  std::int32_t default_partitions = 1;         // topics created by Metadata or CreateTopics default
  std::int32_t max_partitions = 1024;          // per topic
  bool auto_create_topics = true;              // Metadata creates the topics it is asked about
  std::uint32_t max_message_bytes = 1048588;   // one record batch, as Kafka's message.max.bytes
  std::size_t max_inflated_bytes = 64u << 20;  // what one produce may decompress to
  std::uint32_t max_waiting_fetches = 1024;    // long polls parked at once; more answer at once
  std::uint32_t max_read_events = 1000;        // events read per partition per fetch step
  CoordinatorOptions groups;
};

// Which broker leads each partition when the node is one of a cluster: the node that owns the
// partition's stream. Without one, this broker leads every partition.
class PartitionOwners {
 public:
  struct BrokerAddress {
    std::int32_t id = 0;
    std::string host;
    std::int32_t port = 0;
  };
  virtual ~PartitionOwners() = default;
  // Every broker of the cluster with a Kafka listener, this one included.
  virtual std::vector<BrokerAddress> brokers() const = 0;
  // The broker whose node owns `stream` (a partition's stream, or a consumer group's key); -1
  // when no node does now.
  virtual std::int32_t owner(std::string_view stream) const = 0;
};

class Broker {
 public:
  using Reply = std::function<void(std::optional<std::string> response)>;

  Broker(eventlog::EventStore& store, Clock& clock, BrokerOptions options,
         metrics::Registry& registry);
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Reads the topics and committed offsets back from the store and starts the timer thread
  // (group timeouts, fetch long polls).
  Status start();
  // Answers everything waiting (fetches with what there is, joins with COORDINATOR_NOT_AVAILABLE)
  // and joins the timer thread. Idempotent.
  void stop();

  // One request: `frame` is its bytes after the 4-byte size. `reply` gets the whole response
  // frame (size included), or nullopt when none is due (acks=0 produce). A frame that cannot
  // be decoded gets nullopt through `malformed` and the connection should close.
  void handle(std::string frame, Reply reply, std::function<void(std::string why)> malformed);

  const BrokerOptions& options() const;
  // The address Metadata and FindCoordinator name (a listener bound to port 0 knows it only
  // once bound). Before start().
  void advertise(std::string host, std::int32_t port);
  // In a cluster: this broker's id and who leads each partition. Metadata names each
  // partition's leader, Produce, Fetch and ListOffsets answer NOT_LEADER_OR_FOLLOWER for a
  // partition another broker leads, and FindCoordinator names the broker that owns the group's
  // key. `owners` must outlive the broker. Before the listener starts.
  void set_owners(std::int32_t node_id, const PartitionOwners* owners);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// The stream that holds topic `topic`'s partition `partition`.
std::string partition_stream(std::string_view topic, std::int32_t partition);
// Whether `name` is a legal Kafka topic name: 1..249 of [a-zA-Z0-9._-], not "." or "..".
bool valid_topic_name(std::string_view name);

}  // namespace keel::kafka

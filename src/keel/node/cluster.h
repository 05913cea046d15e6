// A node's part in a Keel cluster (src/keel/cluster): it joins through etcd, answers requests
// for streams whose slot it does not own with a redirect to the owner, refuses writes to slots
// it is handing over while they are fenced, and moves slots' events between nodes over HTTP:
//
//   GET  /v1/cluster                the map, the members, the move in progress, the controller
//   POST /v1/cluster/move|rebalance|drain   operators' changes to the goal (keel ctl cluster)
//   GET  /v1/cluster/export         on a move's source: a page of the slots' events by position
//   POST /v1/cluster/import         on a move's target: pull the slots' events from the source
//
// docs/api.md, "Cluster", has the wire forms; docs/formats/slot_map.md the state in etcd.
//
// Thread-safety: every method from any thread; stop() from one.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

#include "keel/cluster/member.h"
#include "keel/coord/coordinator.h"
#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/eventlog/event_store.h"
#include "keel/http/server.h"
#include "keel/kafka/broker.h"
#include "keel/node/config.h"

namespace keel::node {

// Lets a move's fence wait for the appends that checked their route before it, without making
// appends wait for each other or a fence wait behind a stream of later appends: each append
// holds a pass of the current generation until the store has taken it; drain() starts a new
// generation and waits until the old one's passes are gone.
class WriteGate {
 public:
  class Pass {
   public:
    Pass(WriteGate* gate, std::uint64_t generation) : gate_(gate), generation_(generation) {}
    Pass(Pass&& other) noexcept
        : gate_(std::exchange(other.gate_, nullptr)), generation_(other.generation_) {}
    Pass& operator=(Pass&&) = delete;
    ~Pass() {
      if (gate_) gate_->held_[generation_ & 1].fetch_sub(1);
    }

   private:
    WriteGate* gate_;
    std::uint64_t generation_;
  };
  Pass enter();
  void drain();

 private:
  std::atomic<std::uint64_t> generation_{0};
  std::atomic<std::int64_t> held_[2] = {0, 0};
  std::mutex drain_mutex_;
};

class NodeCluster final : public cluster::MoveDriver, public kafka::PartitionOwners {
 public:
  // Connects to etcd, joins as `self` and starts following the map. `kafka` and `admin` are the
  // node's other listeners, empty when off.
  static Result<std::unique_ptr<NodeCluster>> start(const ClusterConfig& config,
                                                    cluster::NodeInfo self,
                                                    eventlog::EventStore& store, Clock& clock,
                                                    metrics::Registry& registry);
  ~NodeCluster() override;

  // Leaves the cluster (resigning the controller role) and waits for its threads. Idempotent.
  void stop();

  // For a request about `stream`: nullopt when this node serves it, else the answer — 421
  // `wrong_node` naming the owner, 503 `slot_moving` (a write to a fenced slot), 503
  // `no_map`. `client_epoch` is the request's Keel-Map-Epoch header (empty when absent): a
  // client that has seen a newer map makes the node read the map again first. A write must hold
  // write_pass() from this check until its append is handed to the store.
  std::optional<http::Response> route(std::string_view stream, bool write,
                                      std::string_view client_epoch);
  WriteGate::Pass write_pass() { return gate_.enter(); }

  // The /v1/cluster routes; false when the path is not one of them. An import (seconds of
  // copying) runs through `run_blocking`, off the HTTP worker that took it.
  using RunBlocking = std::function<void(http::Responder&, std::function<void(http::Responder&)>)>;
  bool handle(http::Request& request, http::Responder& responder, const RunBlocking& run_blocking);

  // The controller's MoveDriver: asks the target to import the move's slots from the source.
  Status copy(const cluster::Move& move, const cluster::NodeInfo& source,
              const cluster::NodeInfo& target, bool until_fenced) override;

  // The Kafka listener's view (kafka::PartitionOwners): every member with a Kafka listener, by
  // kafka_id(), and the broker of the node that owns a stream's slot.
  std::vector<BrokerAddress> brokers() const override;
  std::int32_t owner(std::string_view stream) const override;
  // A node's broker id for Kafka clients: the same on every node, from the node's id.
  static std::int32_t kafka_id(std::string_view node_id);

  // GET /v1/cluster's body.
  std::string status_json() const;
  cluster::ClusterMember& member() { return *member_; }

 private:
  NodeCluster(const ClusterConfig& config, eventlog::EventStore& store, Clock& clock,
              metrics::Registry& registry);
  http::Response export_page(const http::Request& request);
  http::Response import(const std::string& request_body);
  http::Response change_goal(const http::Request& request, std::string_view action);
  Result<std::uint64_t> fence_position(const cluster::Move& move);

  ClusterConfig config_;
  eventlog::EventStore& store_;
  Clock& clock_;
  std::unique_ptr<coord::Coordinator> etcd_;
  std::unique_ptr<cluster::ClusterMember> member_;

  // Appends hold a pass from their route check until the store has taken them; the fence
  // drains it, so no append that saw the slot unfenced is still on its way.
  WriteGate gate_;
  std::mutex mutex_;
  // The target's import progress (the source's next position to read), by the move's JSON.
  std::map<std::string, std::uint64_t> imported_;
  std::mutex import_mutex_;  // one import at a time
  TimePoint last_refresh_{};

  metrics::Counter* redirects_ = nullptr;
  metrics::Counter* fenced_ = nullptr;
  metrics::Counter* events_imported_ = nullptr;
  metrics::Counter* moves_copied_ = nullptr;
  std::vector<metrics::CallbackRegistration> gauges_;
  std::atomic<bool> stopping_{false};  // a copy in progress ends at its next call
  bool stopped_ = false;
};

}  // namespace keel::node

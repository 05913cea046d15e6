// The node's view in the console (keel/console): the store's head and rates, consumer groups
// with their members, lag, deliveries in flight and parked events, the projections that report
// to the node, the latest events of $all, and the stream browser's listing. Served by the node's
// admin listener.
//
// Thread-safety: sample() from the console Feed's tick only (it keeps the previous sample's
// counters); the other methods from any thread.
#pragma once

#include <cstdint>
#include <string>

#include "keel/core/clock.h"
#include "keel/eventlog/event_store.h"
#include "keel/http/server.h"
#include "keel/node/config.h"
#include "keel/node/groups.h"
#include "keel/node/projections.h"
#include "keel/node/subscriptions.h"

namespace keel::node {

class NodeConsole {
 public:
  static constexpr std::size_t kTailEvents = 20;      // per sample
  static constexpr std::size_t kTailDataBytes = 300;  // of each event's data
  static constexpr std::size_t kMaxListedStreams = 200;

  NodeConsole(const NodeConfig& config, eventlog::EventStore& store, GroupRegistry& groups,
              SubscriptionHub& subscriptions, const ProjectionTable& projections, Clock& clock)
      : config_(config),
        store_(store),
        groups_(groups),
        subscriptions_(subscriptions),
        projections_(projections),
        clock_(clock) {}

  // When the node is in a cluster: GET /v1/cluster's body, put in each sample as "cluster".
  void set_cluster(std::function<std::string()> status) { cluster_status_ = std::move(status); }

  // One JSON sample for the Feed.
  std::string sample();
  // The first paint: the store, the groups, the projections and the latest events as tables.
  std::string first_paint() const;
  // GET /console/streams?prefix=P&limit=N: {"streams": [{"name", "events"}], "more": bool}.
  http::Response streams(const http::Request& request) const;

 private:
  const NodeConfig& config_;
  eventlog::EventStore& store_;
  GroupRegistry& groups_;
  SubscriptionHub& subscriptions_;
  const ProjectionTable& projections_;
  Clock& clock_;
  TimePoint previous_at_{};
  std::uint64_t previous_head_ = 0;
  eventlog::StoreStats previous_stats_{};
  std::map<std::string, std::uint64_t> previous_acked_;  // by group
  std::function<std::string()> cluster_status_;
};

}  // namespace keel::node

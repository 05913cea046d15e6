// A node's part in the cluster: it joins under its lease (coord::Membership), keeps the map,
// the move in progress and the members as etcd has them (a watch), answers where a stream's
// slot is served, and campaigns to be the controller, running the Controller's steps while it
// leads.
//
//   cluster::ClusterMember::Options options{.self = {"node-a", "http://10.0.0.1:2113"}};
//   auto member = cluster::ClusterMember::start(etcd, clock, options, driver);
//   auto route = (*member)->route("order-42");   // kServe, kRedirect to the owner, kFenced
//   (*member)->stop();                            // resigns, leaves, waits for its threads
//
// Thread-safety: every method may be called from any thread; stop() from one.
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "keel/cluster/controller.h"
#include "keel/cluster/state.h"
#include "keel/coord/coordinator.h"
#include "keel/coord/election.h"
#include "keel/coord/membership.h"
#include "keel/core/clock.h"

namespace keel::cluster {

// Where a request for one stream goes, by the map this node holds.
struct Route {
  enum class Kind {
    kServe,     // this node owns the slot
    kRedirect,  // another node does: `owner`, reached at `owner_api`
    kFenced,    // this node owns it but is handing it over: writes wait for the flip
    kNoMap,     // the controller has not written the first map yet
  };
  Kind kind = Kind::kNoMap;
  std::uint32_t slot = 0;
  std::uint64_t epoch = 0;
  std::string owner;
  std::string owner_api;  // empty when the owner is not a member now
};

// What this node knows of the cluster, as of one etcd revision.
struct View {
  coord::Revision revision = 0;
  std::optional<shard::SlotMap> map;
  std::optional<Move> move;
  std::optional<shard::SlotMap> goal;
  std::vector<NodeInfo> members;
  std::string controller;  // the controller's node id, empty when none

  const NodeInfo* member(std::string_view id) const;
};

class ClusterMember {
 public:
  struct Options {
    Keys keys;
    NodeInfo self;
    Duration lease_ttl = 5s;  // a node that stops renewing leaves the member list after this
    ControllerOptions controller;
    Duration retry = 200ms;  // after a failed controller step
  };

  // Joins (errc::invalid_argument when a live node has the same id), reads the state and
  // starts the watch and the campaign.
  static Result<std::unique_ptr<ClusterMember>> start(coord::Coordinator& coordinator, Clock& clock,
                                                      Options options, MoveDriver& driver);
  ~ClusterMember();
  ClusterMember(const ClusterMember&) = delete;
  ClusterMember& operator=(const ClusterMember&) = delete;

  // Stops campaigning (resigning if it leads), leaves the member list, stops the watch and
  // waits for its threads. Idempotent.
  void stop();

  Route route(std::string_view stream) const;
  std::shared_ptr<const View> view() const;
  // Reads the state from etcd now (a request named a newer epoch than this node holds).
  Status refresh();
  // Called after every change of view, on the thread that noticed it; must not block long.
  void on_change(std::function<void(const View&)> callback);

  const NodeInfo& self() const { return options_.self; }
  bool is_controller() const { return leading_.load(); }
  // The controller's last step and what it waits for, when this node leads.
  std::string controller_status() const;
  // How long each of the last moves this node flipped as controller kept its slots fenced: from
  // the write of phase kFenced to the flip (milliseconds, oldest first, at most 4096).
  std::vector<double> fence_ms() const;
  // Lost the member lease (etcd unreachable for longer than its TTL): the node should stop.
  bool lost() const;

 private:
  ClusterMember(coord::Coordinator& coordinator, Clock& clock, Options options, MoveDriver& driver);
  void adopt(ClusterState state);
  void campaign_loop();
  void lead(std::shared_ptr<coord::Leadership> leadership);
  void wake();

  coord::Coordinator& coordinator_;
  Clock& clock_;
  Options options_;
  MoveDriver& driver_;
  coord::Membership membership_;
  coord::Elector elector_;
  std::unique_ptr<coord::Registration> registration_;
  std::unique_ptr<coord::WatchHandle> watch_;
  std::unique_ptr<coord::WatchHandle> leader_watch_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::shared_ptr<const View> view_;
  std::string controller_id_;
  std::function<void(const View&)> on_change_;
  std::uint64_t changes_ = 0;  // bumped by every new view and retry timer: wakes the controller
  std::string controller_status_;
  std::deque<double> fence_ms_;

  coord::CancelToken cancel_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> leading_{false};
  std::thread controller_thread_;
  bool stopped_ = false;
};

}  // namespace keel::cluster

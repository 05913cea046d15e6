// Cluster membership: each node registers itself (id, address, metadata) under a key attached
// to its own lease, so a node that dies or is cut off drops out of the list when its lease
// expires; anyone can list the members or watch the list change.
//
//   Membership members(coordinator, clock, "keel/members");
//   auto me = members.join({"node-a", "10.0.0.1:7400", R"({"zone":"eu-1"})"});
//   auto everyone = members.list();
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "keel/coord/coordinator.h"
#include "keel/coord/lease_keeper.h"

namespace keel::coord {

struct Member {
  std::string id;
  std::string address;
  std::string metadata;  // JSON, may be empty
  bool operator==(const Member&) const = default;
};

// A node's place in the list; leaves (revokes its lease) when destroyed.
class Registration {
 public:
  ~Registration() { (void)leave(); }
  Status leave() { return keeper_->release(); }
  LeaseId lease() const { return keeper_->lease(); }
  // Lost when the lease could not be kept (the node has dropped out of the list).
  bool lost() const { return keeper_->lost(); }
  void on_lost(std::function<void()> callback) { keeper_->on_lost(std::move(callback)); }

 private:
  friend class Membership;
  explicit Registration(std::shared_ptr<LeaseKeeper> keeper) : keeper_(std::move(keeper)) {}
  std::shared_ptr<LeaseKeeper> keeper_;
};

class Membership {
 public:
  Membership(Coordinator& coordinator, Clock& clock, std::string prefix, Duration ttl = 10s);

  // Fails with errc::invalid_argument when a live node already has this id.
  Result<std::unique_ptr<Registration>> join(const Member& member);
  // The members now, by id.
  Result<std::vector<Member>> list();
  // Calls `on_change` with the list now and after every change.
  Result<std::unique_ptr<WatchHandle>> watch(
      std::function<void(const std::vector<Member>&)> on_change);

 private:
  Coordinator& coordinator_;
  Clock& clock_;
  std::string prefix_;  // "<prefix>/"
  Duration ttl_;
};

}  // namespace keel::coord

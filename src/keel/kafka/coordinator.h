// Kafka's classic consumer-group protocol, coordinator side (KIP-62 and KIP-394 semantics):
// members join with the protocols (assignors) they can run, one of them — the leader — gets
// everyone's subscriptions and computes the assignment on the client, SyncGroup hands each
// member its part, heartbeats keep members alive, and a member silent for its session timeout
// is removed and the rest rebalance. Membership lives in memory (after a restart members get
// UNKNOWN_MEMBER_ID and join again, as after a coordinator change in Kafka); the committed
// offsets, which must survive, are the broker's (broker.h).
//
// A pure state machine on an injected clock: the broker calls tick() every few milliseconds.
// Replies to JoinGroup and SyncGroup may come later, from tick() or another member's call;
// they are called without the coordinator's lock held.
//
// Thread-safety: every method from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "keel/core/clock.h"
#include "keel/kafka/protocol.h"

namespace keel::kafka {

struct JoinResult {
  Code error = Code::kNone;
  std::int32_t generation = -1;
  std::string protocol_name;
  std::string leader;
  std::string member_id;
  std::vector<std::pair<std::string, std::string>> members;  // for the leader: id, metadata
};

struct GroupSummary {
  std::string group_id;
  std::string state;  // Empty, PreparingRebalance, CompletingRebalance, Stable
  std::string protocol_type;
  std::string protocol;
  std::int32_t generation = 0;
  struct Member {
    std::string member_id;
    std::string client_id;
    std::string metadata;
    std::string assignment;
  };
  std::vector<Member> members;
};

struct CoordinatorOptions {
  Duration initial_rebalance_delay = 3s;  // a new group waits this long for more members
  Duration min_session_timeout = 1s;
  Duration max_session_timeout = 30min;
  std::uint32_t max_members = 1000;  // per group
};

class GroupCoordinator {
 public:
  using JoinReply = std::function<void(JoinResult)>;
  using SyncReply = std::function<void(Code, std::string assignment)>;

  GroupCoordinator(Clock& clock, CoordinatorOptions options);
  ~GroupCoordinator();

  void join(const JoinGroupRequest& request, std::int16_t version, std::string_view client_id,
            JoinReply reply);
  void sync(const SyncGroupRequest& request, SyncReply reply);
  Code heartbeat(const HeartbeatRequest& request);
  // The error for each member id, in order.
  std::vector<Code> leave(std::string_view group_id, const std::vector<std::string_view>& members);
  // Whether a commit from this member and generation may be taken now: a standalone consumer
  // (generation -1, no member id) may commit to a group without members.
  Code can_commit(std::string_view group_id, std::int32_t generation, std::string_view member_id);
  // Removes the group if it has no members (DeleteGroups); NON_EMPTY_GROUP otherwise.
  Code remove_if_empty(std::string_view group_id);

  // Expires silent members and rebalances past their deadline.
  void tick();
  // Answers every waiting join and sync with COORDINATOR_NOT_AVAILABLE and forgets the members.
  void close();

  std::vector<GroupSummary> describe() const;

 private:
  struct Group;
  struct Member;
  using Replies = std::vector<std::function<void()>>;

  Group* find(std::string_view group_id);
  void prepare_rebalance(Group& group, Replies& replies);
  void maybe_complete_join(Group& group, Replies& replies, bool deadline_passed);
  void remove_member(Group& group, const std::string& member_id, Replies& replies);
  static void run(Replies& replies);

  Clock& clock_;
  CoordinatorOptions options_;
  mutable std::mutex mutex_;
  std::map<std::string, std::unique_ptr<Group>, std::less<>> groups_;
  std::uint64_t next_member_ = 0;
};

}  // namespace keel::kafka

#include "keel/kafka/coordinator.h"

#include <algorithm>

#include "keel/core/uuid.h"

namespace keel::kafka {

enum class State { kEmpty, kPreparingRebalance, kCompletingRebalance, kStable };

struct GroupCoordinator::Member {
  std::string id;
  std::string client_id;
  Duration session_timeout{};
  Duration rebalance_timeout{};
  std::vector<std::pair<std::string, std::string>> protocols;  // name, metadata: preference order
  TimePoint last_heard{};
  JoinReply join_reply;  // set while the member waits in a rebalance
  SyncReply sync_reply;  // set while the member waits for the leader's assignment
  std::string assignment;
};

struct GroupCoordinator::Group {
  std::string id;
  State state = State::kEmpty;
  std::int32_t generation = 0;
  std::string protocol_type;
  std::string protocol;
  std::string leader;
  std::vector<std::unique_ptr<Member>> members;           // in join order
  std::map<std::string, TimePoint, std::less<>> pending;  // KIP-394 ids handed out, not yet used
  TimePoint rebalance_deadline{};
  TimePoint initial_delay_until{};

  Member* member(std::string_view member_id) {
    for (auto& m : members) {
      if (m->id == member_id) return m.get();
    }
    return nullptr;
  }
};

namespace {

const char* state_name(State s) {
  switch (s) {
    case State::kEmpty:
      return "Empty";
    case State::kPreparingRebalance:
      return "PreparingRebalance";
    case State::kCompletingRebalance:
      return "CompletingRebalance";
    case State::kStable:
      return "Stable";
  }
  return "Dead";
}

}  // namespace

GroupCoordinator::GroupCoordinator(Clock& clock, CoordinatorOptions options)
    : clock_(clock), options_(options) {}

GroupCoordinator::~GroupCoordinator() { close(); }

void GroupCoordinator::run(Replies& replies) {
  for (auto& reply : replies) reply();
  replies.clear();
}

GroupCoordinator::Group* GroupCoordinator::find(std::string_view group_id) {
  auto it = groups_.find(group_id);
  return it == groups_.end() ? nullptr : it->second.get();
}

void GroupCoordinator::join(const JoinGroupRequest& request, std::int16_t version,
                            std::string_view client_id, JoinReply reply) {
  Replies replies;
  auto fail = [&](Code code, std::string member_id = {}) {
    JoinResult result;
    result.error = code;
    result.member_id = std::move(member_id);
    replies.push_back([reply = std::move(reply), result = std::move(result)] { reply(result); });
  };
  {
    std::lock_guard lock(mutex_);
    const Duration session = std::chrono::milliseconds(request.session_timeout_ms);
    if (request.group_id.empty()) {
      fail(Code::kInvalidGroupId);
    } else if (session < options_.min_session_timeout || session > options_.max_session_timeout) {
      fail(Code::kInvalidSessionTimeout);
    } else if (request.protocol_type.empty() || request.protocols.empty()) {
      fail(Code::kInconsistentGroupProtocol);
    } else {
      auto& slot = groups_[std::string(request.group_id)];
      if (!slot) {
        slot = std::make_unique<Group>();
        slot->id = std::string(request.group_id);
      }
      Group& group = *slot;
      const TimePoint now = clock_.now();
      // Every member must share the protocol type and at least one protocol.
      bool consistent = group.members.empty() || group.protocol_type == request.protocol_type;
      if (consistent && !group.members.empty()) {
        consistent =
            std::any_of(request.protocols.begin(), request.protocols.end(), [&](const auto& p) {
              return std::all_of(group.members.begin(), group.members.end(), [&](const auto& m) {
                return m->id == request.member_id ||
                       std::any_of(m->protocols.begin(), m->protocols.end(),
                                   [&](const auto& q) { return q.first == p.name; });
              });
            });
      }
      Member* member = request.member_id.empty() ? nullptr : group.member(request.member_id);
      if (!consistent) {
        fail(Code::kInconsistentGroupProtocol);
      } else if (request.member_id.empty() && version >= 4) {
        // KIP-394: hand out an id first; the member joins again with it.
        std::string id = std::string(client_id) + "-" + Uuid::random_v4().to_string();
        group.pending[id] = now + session;
        fail(Code::kMemberIdRequired, std::move(id));
      } else if (!request.member_id.empty() && member == nullptr &&
                 group.pending.erase(std::string(request.member_id)) == 0) {
        fail(Code::kUnknownMemberId);
      } else if (member == nullptr && group.members.size() >= options_.max_members) {
        fail(Code::kUnknownServerError);
      } else {
        if (member == nullptr) {
          auto fresh = std::make_unique<Member>();
          fresh->id = request.member_id.empty()
                          ? std::string(client_id) + "-" + Uuid::random_v4().to_string()
                          : std::string(request.member_id);
          member = fresh.get();
          group.members.push_back(std::move(fresh));
        }
        member->client_id = std::string(client_id);
        member->session_timeout = session;
        member->rebalance_timeout = std::chrono::milliseconds(request.rebalance_timeout_ms > 0
                                                                  ? request.rebalance_timeout_ms
                                                                  : request.session_timeout_ms);
        member->protocols.clear();
        for (const auto& p : request.protocols) {
          member->protocols.emplace_back(std::string(p.name), std::string(p.metadata));
        }
        member->last_heard = now;
        if (member->join_reply) {
          JoinResult superseded;
          superseded.error = Code::kRebalanceInProgress;
          replies.push_back([old = std::move(member->join_reply), superseded] { old(superseded); });
        }
        member->join_reply = std::move(reply);
        group.protocol_type = std::string(request.protocol_type);
        if (group.state == State::kEmpty) {
          group.initial_delay_until = now + options_.initial_rebalance_delay;
        }
        if (group.state != State::kPreparingRebalance) prepare_rebalance(group, replies);
        maybe_complete_join(group, replies, false);
      }
    }
  }
  run(replies);
}

void GroupCoordinator::prepare_rebalance(Group& group, Replies& replies) {
  group.state = State::kPreparingRebalance;
  Duration longest{};
  for (auto& m : group.members) {
    longest = std::max(longest, m->rebalance_timeout);
    m->assignment.clear();
    if (m->sync_reply) {
      replies.push_back([r = std::move(m->sync_reply)] { r(Code::kRebalanceInProgress, {}); });
      m->sync_reply = nullptr;
    }
  }
  group.rebalance_deadline = clock_.now() + longest;
}

void GroupCoordinator::maybe_complete_join(Group& group, Replies& replies, bool deadline_passed) {
  if (group.state != State::kPreparingRebalance) return;
  const TimePoint now = clock_.now();
  const bool all_joined = std::all_of(group.members.begin(), group.members.end(),
                                      [](const auto& m) { return m->join_reply != nullptr; });
  if (!deadline_passed && (!all_joined || now < group.initial_delay_until)) return;
  if (deadline_passed) {
    // Members that did not join again in time are out.
    std::erase_if(group.members, [](const auto& m) { return m->join_reply == nullptr; });
  }
  if (group.members.empty()) {
    group.state = State::kEmpty;
    ++group.generation;
    group.leader.clear();
    group.protocol.clear();
    return;
  }
  // Each member votes for its first protocol that every member supports.
  std::map<std::string, int> votes;
  for (const auto& m : group.members) {
    for (const auto& [name, metadata] : m->protocols) {
      const bool everyone =
          std::all_of(group.members.begin(), group.members.end(), [&name](const auto& other) {
            return std::any_of(other->protocols.begin(), other->protocols.end(),
                               [&name](const auto& q) { return q.first == name; });
          });
      if (everyone) {
        ++votes[name];
        break;
      }
    }
  }
  std::string chosen = group.members.front()->protocols.front().first;
  int best = -1;
  for (const auto& [name, count] : votes) {
    if (count > best) {
      best = count;
      chosen = name;
    }
  }
  group.protocol = chosen;
  ++group.generation;
  if (group.member(group.leader) == nullptr) group.leader = group.members.front()->id;
  group.state = State::kCompletingRebalance;
  std::vector<std::pair<std::string, std::string>> everyone;
  for (const auto& m : group.members) {
    for (const auto& [name, metadata] : m->protocols) {
      if (name == chosen) everyone.emplace_back(m->id, metadata);
    }
  }
  for (auto& m : group.members) {
    JoinResult result;
    result.generation = group.generation;
    result.protocol_name = chosen;
    result.leader = group.leader;
    result.member_id = m->id;
    if (m->id == group.leader) result.members = everyone;
    m->last_heard = now;
    replies.push_back([r = std::move(m->join_reply), result = std::move(result)] { r(result); });
    m->join_reply = nullptr;
  }
}

void GroupCoordinator::sync(const SyncGroupRequest& request, SyncReply reply) {
  Replies replies;
  {
    std::lock_guard lock(mutex_);
    Group* group = find(request.group_id);
    Member* member = group != nullptr ? group->member(request.member_id) : nullptr;
    Code error = Code::kNone;
    if (member == nullptr) {
      error = Code::kUnknownMemberId;
    } else if (request.generation_id != group->generation) {
      error = Code::kIllegalGeneration;
    } else if (group->state == State::kPreparingRebalance) {
      error = Code::kRebalanceInProgress;
    }
    if (error != Code::kNone) {
      replies.push_back([reply = std::move(reply), error] { reply(error, {}); });
    } else if (group->state == State::kStable) {
      member->last_heard = clock_.now();
      replies.push_back(
          [reply = std::move(reply), a = member->assignment] { reply(Code::kNone, a); });
    } else {  // completing: wait for the leader's assignment
      member->last_heard = clock_.now();
      member->sync_reply = std::move(reply);
      if (member->id == group->leader) {
        for (const auto& a : request.assignments) {
          if (Member* m = group->member(a.member_id)) m->assignment = std::string(a.assignment);
        }
        group->state = State::kStable;
        for (auto& m : group->members) {
          if (m->sync_reply) {
            replies.push_back(
                [r = std::move(m->sync_reply), a = m->assignment] { r(Code::kNone, a); });
            m->sync_reply = nullptr;
          }
        }
      }
    }
  }
  run(replies);
}

Code GroupCoordinator::heartbeat(const HeartbeatRequest& request) {
  std::lock_guard lock(mutex_);
  Group* group = find(request.group_id);
  Member* member = group != nullptr ? group->member(request.member_id) : nullptr;
  if (member == nullptr) return Code::kUnknownMemberId;
  if (request.generation_id != group->generation) return Code::kIllegalGeneration;
  member->last_heard = clock_.now();
  if (group->state == State::kPreparingRebalance) return Code::kRebalanceInProgress;
  return Code::kNone;
}

void GroupCoordinator::remove_member(Group& group, const std::string& member_id, Replies& replies) {
  auto it = std::find_if(group.members.begin(), group.members.end(),
                         [&](const auto& m) { return m->id == member_id; });
  if (it == group.members.end()) return;
  Member& m = **it;
  if (m.join_reply) {
    JoinResult gone;
    gone.error = Code::kUnknownMemberId;
    replies.push_back([r = std::move(m.join_reply), gone] { r(gone); });
  }
  if (m.sync_reply) {
    replies.push_back([r = std::move(m.sync_reply)] { r(Code::kUnknownMemberId, {}); });
  }
  group.members.erase(it);
  if (group.members.empty()) {
    group.state = State::kEmpty;
    ++group.generation;
    group.leader.clear();
    group.protocol.clear();
    return;
  }
  if (group.state != State::kPreparingRebalance) prepare_rebalance(group, replies);
  maybe_complete_join(group, replies, false);
}

std::vector<Code> GroupCoordinator::leave(std::string_view group_id,
                                          const std::vector<std::string_view>& members) {
  Replies replies;
  std::vector<Code> codes;
  {
    std::lock_guard lock(mutex_);
    Group* group = find(group_id);
    for (std::string_view id : members) {
      if (group == nullptr || group->member(id) == nullptr) {
        codes.push_back(Code::kUnknownMemberId);
        continue;
      }
      codes.push_back(Code::kNone);
      remove_member(*group, std::string(id), replies);
    }
  }
  run(replies);
  return codes;
}

Code GroupCoordinator::can_commit(std::string_view group_id, std::int32_t generation,
                                  std::string_view member_id) {
  std::lock_guard lock(mutex_);
  Group* group = find(group_id);
  if (generation < 0 && member_id.empty()) {
    return group == nullptr || group->members.empty() ? Code::kNone : Code::kUnknownMemberId;
  }
  Member* member = group != nullptr ? group->member(member_id) : nullptr;
  if (member == nullptr) return Code::kUnknownMemberId;
  if (generation != group->generation) return Code::kIllegalGeneration;
  if (group->state == State::kPreparingRebalance) return Code::kRebalanceInProgress;
  member->last_heard = clock_.now();
  return Code::kNone;
}

Code GroupCoordinator::remove_if_empty(std::string_view group_id) {
  std::lock_guard lock(mutex_);
  auto it = groups_.find(group_id);
  if (it == groups_.end()) return Code::kGroupIdNotFound;
  if (!it->second->members.empty()) return Code::kNonEmptyGroup;
  groups_.erase(it);
  return Code::kNone;
}

void GroupCoordinator::tick() {
  Replies replies;
  {
    std::lock_guard lock(mutex_);
    const TimePoint now = clock_.now();
    for (auto& [id, group] : groups_) {
      std::erase_if(group->pending, [now](const auto& p) { return p.second < now; });
      // A member waiting in a rebalance is alive; one that went silent is out.
      std::vector<std::string> expired;
      for (const auto& m : group->members) {
        if (!m->join_reply && m->last_heard + m->session_timeout < now) expired.push_back(m->id);
      }
      for (const auto& member_id : expired) remove_member(*group, member_id, replies);
      if (group->state == State::kPreparingRebalance) {
        maybe_complete_join(*group, replies, now >= group->rebalance_deadline);
      }
    }
  }
  run(replies);
}

void GroupCoordinator::close() {
  Replies replies;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, group] : groups_) {
      for (auto& m : group->members) {
        if (m->join_reply) {
          JoinResult gone;
          gone.error = Code::kCoordinatorNotAvailable;
          replies.push_back([r = std::move(m->join_reply), gone] { r(gone); });
        }
        if (m->sync_reply) {
          replies.push_back(
              [r = std::move(m->sync_reply)] { r(Code::kCoordinatorNotAvailable, {}); });
        }
      }
    }
    groups_.clear();
  }
  run(replies);
}

std::vector<GroupSummary> GroupCoordinator::describe() const {
  std::lock_guard lock(mutex_);
  std::vector<GroupSummary> out;
  for (const auto& [id, group] : groups_) {
    GroupSummary summary;
    summary.group_id = id;
    summary.state = state_name(group->state);
    summary.protocol_type = group->protocol_type;
    summary.protocol = group->protocol;
    summary.generation = group->generation;
    for (const auto& m : group->members) {
      std::string metadata;
      for (const auto& [name, bytes] : m->protocols) {
        if (name == group->protocol) metadata = bytes;
      }
      summary.members.push_back({m->id, m->client_id, metadata, m->assignment});
    }
    out.push_back(std::move(summary));
  }
  return out;
}

}  // namespace keel::kafka

// `keel node`'s consumer groups: the library's ConsumerGroup for members that are other
// processes, reached over HTTP. A group's definition is kept in the node's own stream
// `$keel-node-groups` (its PUT body, replayed on start), its progress in the group's checkpoint
// and parked streams as the library keeps them. A member is a name: it joins with its first
// poll, and one that has not polled, acked or nacked for member_timeout has left — its
// unacknowledged deliveries go to the others (a member killed mid-batch loses nothing).
//
// Thread-safety: every method may be called from any thread; poll() blocks up to its wait.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"
#include "keel/node/api.h"
#include "keel/pubsub/consumer_group.h"

namespace keel::node {

inline constexpr std::string_view kGroupsStream = "$keel-node-groups";

class GroupRegistry {
 public:
  GroupRegistry(eventlog::EventStore& store, Clock& clock, metrics::Registry& registry,
                Duration member_timeout);
  ~GroupRegistry();
  GroupRegistry(const GroupRegistry&) = delete;
  GroupRegistry& operator=(const GroupRegistry&) = delete;

  // Opens every group defined in $keel-node-groups and starts the member reaper.
  Status start();
  // Shutting down: every member leaves (their waiting polls answer at once, their unacked
  // deliveries go back) and new polls, acks and nacks are refused as unavailable.
  void close();
  // Stops every group (each writes a final checkpoint) and the reaper. Idempotent.
  void stop();

  // Creates a group from its PUT body (`definition`, kept as it is for restarts). True when it
  // was created, false when it existed with the same settings (PUT is idempotent); a group
  // that exists with other settings is a conflict.
  Result<bool> create(const pubsub::GroupOptions& options, std::string_view definition);
  // Deletes the group and its progress (its parked stream stays, for people to read).
  Status remove(const std::string& name);
  std::vector<GroupSummary> list() const;
  Result<GroupSummary> get(const std::string& name) const;

  // Up to `max` deliveries for `member`, waiting up to `wait` for the first. A `session` other
  // than the member's last (both non-empty) is a new process under the name: the old one
  // leaves first, so what it held goes out again at once instead of after its ack timeout.
  Result<std::vector<pubsub::Delivery>> poll(const std::string& group, const std::string& member,
                                             std::size_t max, Duration wait,
                                             const std::string& session = "");
  Result<std::vector<Settled>> settle(const std::string& group, const std::string& member,
                                      const std::vector<std::uint64_t>& ids,
                                      std::optional<pubsub::NackAction> nack,
                                      std::string_view reason);
  Result<std::uint64_t> replay_parked(const std::string& group);
  // A page of the group's parked stream (its events, by version).
  Result<std::vector<eventlog::RecordedEvent>> parked(const std::string& group, std::uint64_t from,
                                                      std::size_t limit);

  // Members silent for member_timeout leave now (the reaper calls this; tests may too).
  void reap();

 private:
  struct MemberSlot {
    std::shared_ptr<pubsub::Member> member;
    std::string session;  // of the process that polled last, when it gave one
    TimePoint last_seen{};
    int busy = 0;  // polls and settles in progress: not reaped meanwhile
  };
  struct Group {
    std::string definition;
    std::shared_ptr<pubsub::ConsumerGroup> group;
    std::vector<metrics::CallbackRegistration> metrics;
    std::map<std::string, MemberSlot> members;
  };
  Status open_locked(const pubsub::GroupOptions& options, std::string definition);
  Result<std::shared_ptr<pubsub::Member>> member(const std::string& group, const std::string& name,
                                                 const std::string& session = "");
  // A call on `which` ended (no-op when another incarnation holds the name by now).
  void release(const std::string& group, const std::string& name,
               const std::shared_ptr<pubsub::Member>& which);

  eventlog::EventStore& store_;
  Clock& clock_;
  metrics::Registry& registry_;
  const Duration member_timeout_;
  mutable std::mutex mutex_;
  std::map<std::string, Group> groups_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool closing_ = false;
  std::thread reaper_;
};

}  // namespace keel::node

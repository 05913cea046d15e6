// Consumer groups (EventStoreDB's persistent subscriptions, Kafka's consumer groups, NATS
// JetStream's durable consumers): a named, durable group reads the log through a filter and
// shares the events among its members, who join and leave at any time.
//
// - Strategies: round robin; pinned by stream (each stream goes to one member, one event at a
//   time, so a member sees a stream's events in order, also across rebalances); dispatch to a
//   single member (the first with room; the others take the overflow).
// - Each delivery is acked or nacked. A nack retries (after a backoff), parks or skips; an ack
//   timeout counts as a failed delivery; a member that leaves gives its unacked events back.
//   After max_deliveries failed deliveries an event is parked: recorded in the group's parked
//   stream ($keel-group-NAME-parked), from which replay_parked() delivers it again.
// - Flow control: a member never holds more than max_in_flight events; the group reads ahead
//   at most buffer_events.
// - Progress (the position below which every event is acked or parked) is checkpointed to
//   $keel-group-NAME-checkpoint every checkpoint_after_acks acks or checkpoint_interval (when
//   events were settled since the last record, or many the filter skips went by), and a
//   reopened group resumes from it: delivery is at least once, so events after the last
//   checkpoint may come again after a restart.
//
//   auto group = ConsumerGroup::open(store, {.name = "billing", .filter = {.categories =
//   {"order"}},
//                                            .strategy = Strategy::kPinned}, clock);
//   (*group)->start();
//   auto member = (*group)->join("worker-1");
//   for (auto& delivery : member->wait(10, 1s)) {
//     if (handle(delivery.event)) member->ack(delivery.id); else member->nack(delivery.id,
//     NackAction::kRetry, "…");
//   }
//
// Thread-safety: every method of ConsumerGroup and Member may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/pubsub/follower.h"
#include "keel/pubsub/reader.h"

namespace keel::pubsub {

enum class Strategy { kRoundRobin, kPinned, kDispatchToSingle };
std::string_view to_string(Strategy strategy);

struct GroupOptions {
  std::string name;  // letters, digits, '_', '-', '.'
  Filter filter;
  StartFrom start = StartFrom::start();  // for a new group; an existing one resumes
  Strategy strategy = Strategy::kRoundRobin;
  std::uint32_t max_in_flight = 16;  // per member
  // From when the member takes a delivery (poll/wait), restarted then if it waited in its inbox;
  // one never taken within it goes back as well.
  Duration ack_timeout = 30s;
  std::uint32_t max_deliveries = 5;  // the delivery that fails this many times is parked
  Duration retry_backoff = 100ms;    // doubled per failed delivery, up to max_retry_backoff
  Duration max_retry_backoff = 10s;
  std::uint32_t buffer_events = 2000;  // read-ahead: matching events held in memory
  std::uint32_t checkpoint_after_acks = 500;
  Duration checkpoint_interval = 1s;
};

struct Delivery {
  std::uint64_t id = 0;  // what ack() and nack() take
  RecordedEvent event;
  std::uint32_t attempt = 1;  // 1 on first delivery
  bool replayed = false;      // from the parked stream
};

enum class NackAction { kRetry, kPark, kSkip };

struct MemberStats {
  std::string name;
  std::uint64_t in_flight = 0;
  std::uint64_t acked = 0;
};

struct GroupStats {
  std::uint64_t checkpoint = 0;     // every event below it is acked, parked or skipped
  std::uint64_t read_position = 0;  // the reader's position in the log
  std::uint64_t lag = 0;            // log positions between the checkpoint and the head
  std::uint64_t buffered = 0, in_flight = 0;
  std::uint64_t delivered = 0, acked = 0, nacked = 0, timed_out = 0, parked = 0, skipped = 0;
  std::uint64_t replayed = 0;
  std::vector<MemberStats> members;
};

class ConsumerGroup;

class Member {
 public:
  ~Member() { leave(); }
  Member(const Member&) = delete;
  Member& operator=(const Member&) = delete;

  const std::string& name() const { return name_; }
  // Deliveries handed to this member, up to `max`, without waiting.
  std::vector<Delivery> poll(std::size_t max);
  // As poll(), waiting up to `timeout` (on the group's clock) for the first one.
  std::vector<Delivery> wait(std::size_t max, Duration timeout);
  // Fails when the delivery is no longer this member's (it timed out and went elsewhere).
  Status ack(std::uint64_t delivery_id);
  Status nack(std::uint64_t delivery_id, NackAction action, std::string_view reason);
  // Unacked deliveries go back to the group at once (also what the destructor does, and what
  // a crashed member's ack timeout does later).
  void leave();

 private:
  friend class ConsumerGroup;
  Member(std::shared_ptr<ConsumerGroup> group, std::uint64_t id, std::string name)
      : group_(std::move(group)), id_(id), name_(std::move(name)) {}
  std::shared_ptr<ConsumerGroup> group_;
  std::uint64_t id_;
  std::string name_;
};

class ConsumerGroup : public std::enable_shared_from_this<ConsumerGroup> {
 public:
  // Opens the group, resuming from its checkpoint when it exists. A group that exists with
  // another filter is refused (remove() it to start it over).
  static Result<std::shared_ptr<ConsumerGroup>> open(EventStore& store, GroupOptions options,
                                                     Clock& clock);
  // Forgets a group's progress: the next open() starts it afresh from its `start`. Its parked
  // stream stays, for people to read. Remove a group only while it is not open.
  static Status remove(EventStore& store, std::string_view name);
  ~ConsumerGroup();

  // The background thread that reads, dispatches, expires and checkpoints; stop() waits for
  // it and writes a final checkpoint. Call start() and stop() from one thread, and stop()
  // before closing the store (the destructor stops too, but members keep the group alive).
  void start();
  void stop();
  // One round of that work, for callers (and tests) that drive the group themselves. Returns
  // an error when reading the log or writing to the group's streams failed.
  Status pump();

  Result<std::unique_ptr<Member>> join(std::string name);
  // Queues events parked so far for delivery again, up to buffer_events per call (call again
  // for more); returns how many.
  Result<std::uint64_t> replay_parked();
  GroupStats stats() const;
  // Prometheus series labelled group="NAME": keel_group_lag_events, keel_group_in_flight,
  // keel_group_buffered_events and the counters keel_group_{delivered,acked,nacked,timed_out,
  // parked}_total. Keep the registrations no longer than the group.
  std::vector<metrics::CallbackRegistration> export_metrics(metrics::Registry& registry);
  Status checkpoint();

  const GroupOptions& options() const { return options_; }
  std::string checkpoint_stream() const { return "$keel-group-" + options_.name + "-checkpoint"; }
  std::string parked_stream() const { return "$keel-group-" + options_.name + "-parked"; }

 private:
  friend class Member;
  enum class State { kAvailable, kInFlight, kParking, kDone };
  struct Entry {
    RecordedEvent event;
    State state = State::kAvailable;
    std::uint32_t deliveries = 0;
    TimePoint ready_at{};
    TimePoint deadline{};
    std::uint64_t member = 0;
    std::uint64_t delivery = 0;
    bool replayed = false;
    std::uint64_t parked_version = 0;  // replayed entries: their record in the parked stream
    std::string park_reason;
  };
  // Replayed entries sort before the log's (they are older) and are kept out of the checkpoint.
  using Key = std::pair<int, std::uint64_t>;
  struct MemberState {
    std::string name;
    std::deque<Delivery> inbox;         // handed out, not yet taken by poll()
    std::set<std::uint64_t> in_flight;  // delivery ids
    std::uint64_t acked = 0;
  };

  ConsumerGroup(EventStore& store, GroupOptions options, Clock& clock, std::uint64_t position,
                std::uint64_t parked_replayed);

  std::vector<Delivery> take(std::uint64_t member, std::size_t max);
  std::vector<Delivery> wait_for_deliveries(std::uint64_t member, std::size_t max,
                                            Duration timeout);
  Status settle(std::uint64_t member, std::uint64_t delivery, std::optional<NackAction> nack,
                std::string_view reason);
  void remove_member(std::uint64_t member);
  // State changes, under mutex_; each keeps the indexes below in step with `entry.state`.
  void add_locked(const Key& key, Entry entry);
  void make_available_locked(const Key& key, Entry& entry, TimePoint ready_at);
  void take_back_locked(const Key& key, Entry& entry);  // from its member, in flight → limbo
  void fail_locked(const Key& key, Entry& entry, std::string reason);  // retry or park
  void park_locked(const Key& key, Entry& entry, std::string reason);
  void done_locked(const Key& key, Entry& entry);
  bool is_stream_head(const Key& key, const Entry& entry) const;
  void dispatch_locked();
  std::uint64_t pick_member_locked(const Entry& entry, std::uint64_t& round_robin);
  std::uint64_t checkpoint_locked() const;
  bool checkpoint_worth_writing_locked(std::uint64_t position) const;
  void trim_locked();
  Status write_checkpoint(std::uint64_t position, std::uint64_t parked_replayed);

  EventStore& store_;
  const GroupOptions options_;
  Clock& clock_;

  mutable std::mutex mutex_;
  std::condition_variable changed_;  // entries, members or the log moved on
  bool work_ = true;                 // something for pump() to look at
  std::mutex pump_mutex_;            // one pump() or replay_parked() at a time
  Reader reader_;                    // guarded by pump_mutex_
  std::uint64_t read_position_ = 0;  // reader_'s position, under mutex_
  std::map<Key, Entry> entries_;
  std::size_t log_entries_ = 0;  // of entries_, those read from the log (not replays)
  // Indexes of entries_ by state, so that no pass walks the whole buffer:
  std::set<Key> ready_;                            // available now (pinned: heads of their stream)
  std::set<std::pair<TimePoint, Key>> waiting_;    // available after a backoff
  std::set<std::pair<TimePoint, Key>> deadlines_;  // in flight, by ack deadline
  std::vector<Key> parking_;                       // to be written to the parked stream
  // Pinned: each stream's entries not yet done; only the first may be handed out.
  std::unordered_map<std::string, std::deque<Key>> streams_;
  std::map<std::uint64_t, Key> by_delivery_;
  std::map<std::uint64_t, MemberState> members_;  // by join order
  std::uint64_t next_member_ = 1;
  std::uint64_t next_delivery_ = 1;
  std::uint64_t round_robin_ = 0;
  std::uint64_t parked_replayed_ = 0;  // parked stream versions below this were replayed
  std::uint64_t parked_queued_ = 0;    // … and below this were queued for replay
  std::uint64_t acks_since_checkpoint_ = 0;
  std::uint64_t settled_since_checkpoint_ = 0;  // acked, parked or skipped
  TimePoint last_checkpoint_at_{};
  std::uint64_t last_checkpoint_ = 0;
  GroupStats counters_;

  bool stopping_ = false;
  Follower follower_{store_, mutex_, changed_, work_, stopping_};  // last: stopped first
};

}  // namespace keel::pubsub

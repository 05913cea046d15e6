#include "keel/pubsub/consumer_group.h"

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "keel/core/hash.h"
#include "keel/core/log.h"
#include "keel/pubsub/parking.h"

namespace keel::pubsub {

namespace {

using eventlog::Direction;
using eventlog::EventData;
using eventlog::ExpectedVersion;
using Json = nlohmann::json;

Error invalid(std::string message) { return Error(errc::invalid_argument, std::move(message)); }

// Log positions a group may move past with nothing settled before its position is worth a
// record (events its filter leaves out, which a restart would read again). Far more than there
// are groups: each checkpoint record moves every other group past one position.
constexpr std::uint64_t kCheckpointAfterSkipped = 10000;

// Rendezvous hashing: the member with the highest score for a stream owns it, so a member
// leaving moves only its own streams and a member rejoining under its name gets them back.
// The score is shard::rendezvous_pick's with equal weights (XXH3 of the key seeded with the
// node's hash, keel/core/hash.h), without its per-call vector and logarithms: stable across
// processes and machines, unlike std::hash.
std::uint64_t score(std::string_view stream, std::string_view member) {
  return hash64(hash64(stream), hash64(member));
}

}  // namespace

std::string_view to_string(Strategy strategy) {
  switch (strategy) {
    case Strategy::kRoundRobin:
      return "round_robin";
    case Strategy::kPinned:
      return "pinned";
    case Strategy::kDispatchToSingle:
      return "dispatch_to_single";
  }
  return "?";
}

// ---- Member ----

std::vector<Delivery> Member::poll(std::size_t max) { return group_->take(id_, max); }
std::vector<Delivery> Member::wait(std::size_t max, Duration timeout) {
  return group_->wait_for_deliveries(id_, max, timeout);
}
Status Member::ack(std::uint64_t delivery_id) {
  return group_->settle(id_, delivery_id, std::nullopt, "");
}
Status Member::nack(std::uint64_t delivery_id, NackAction action, std::string_view reason) {
  return group_->settle(id_, delivery_id, action, reason);
}
void Member::leave() {
  if (group_) group_->remove_member(id_);
}

// ---- ConsumerGroup ----

Result<std::shared_ptr<ConsumerGroup>> ConsumerGroup::open(EventStore& store, GroupOptions options,
                                                           Clock& clock) {
  if (!valid_name(options.name)) {
    return invalid("consumer group name '" + options.name +
                   "': use 1 to 200 letters, digits, '_', '-' or '.'");
  }
  if (options.max_in_flight == 0 || options.max_deliveries == 0 || options.buffer_events == 0) {
    return invalid("consumer group '" + options.name +
                   "': max_in_flight, max_deliveries and buffer_events must be at least 1");
  }
  if (options.ack_timeout <= Duration::zero() || options.checkpoint_interval <= Duration::zero() ||
      options.retry_backoff < Duration::zero()) {
    return invalid(
        "consumer group '" + options.name +
        "': ack_timeout and checkpoint_interval must be positive, retry_backoff not negative");
  }
  const std::string checkpoint_stream = "$keel-group-" + options.name + "-checkpoint";
  auto last = store.read_stream(checkpoint_stream, UINT64_MAX, 1, Direction::kBackward);
  if (!last) return last.error();
  std::uint64_t position = 0;
  std::uint64_t parked_replayed = 0;
  const bool existing = !last->empty() && last->front().type != "$removed";
  if (existing) {
    Json saved = Json::parse(last->front().data, nullptr, false);
    if (saved.is_discarded() || !saved.contains("position") || !saved["position"].is_number()) {
      return Error(eventlog::errc::corrupt, checkpoint_stream + " version " +
                                                std::to_string(last->front().version) +
                                                ": not a consumer group checkpoint");
    }
    const std::string filter = saved.value("filter", "");
    if (filter != options.filter.describe()) {
      return invalid("consumer group '" + options.name + "' exists with filter '" + filter +
                     "', not '" + options.filter.describe() +
                     "'; ConsumerGroup::remove() it to start it over");
    }
    position = saved["position"].get<std::uint64_t>();
    parked_replayed = saved.value("parked_replayed", std::uint64_t{0});
  } else {
    position = options.start.resolve(store);
  }
  std::shared_ptr<ConsumerGroup> group(
      new ConsumerGroup(store, std::move(options), clock, position, parked_replayed));
  if (!existing) {
    // The group exists from now on: reopening it resumes here, not at `start` again.
    eventlog::StreamMetadata keep_last{.max_count = 10};
    if (auto ok = store.set_system_metadata(checkpoint_stream, keep_last); !ok) return ok.error();
    if (auto ok = group->write_checkpoint(position, 0); !ok) return ok.error();
  }
  return group;
}

Status ConsumerGroup::remove(EventStore& store, std::string_view name) {
  const std::string stream = "$keel-group-" + std::string(name) + "-checkpoint";
  if (!store.stream_version(stream)) {
    return invalid("there is no consumer group '" + std::string(name) + "'");
  }
  auto appended = store.append_system(stream, ExpectedVersion::any(),
                                      {EventData{Uuid::random_v4(), "$removed", "{}", ""}});
  if (!appended) return appended.error();
  return {};
}

ConsumerGroup::ConsumerGroup(EventStore& store, GroupOptions options, Clock& clock,
                             std::uint64_t position, std::uint64_t parked_replayed)
    : store_(store),
      options_(std::move(options)),
      clock_(clock),
      reader_(store, options_.filter, position),
      read_position_(position),
      parked_replayed_(parked_replayed),
      parked_queued_(parked_replayed),
      last_checkpoint_at_(clock.now()),
      last_checkpoint_(position) {}

ConsumerGroup::~ConsumerGroup() { stop(); }

void ConsumerGroup::start() {
  follower_.start([this] {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      work_ = false;  // before pump(): a change during it sets it again and is not lost
      lock.unlock();
      Status pumped = pump();
      if (!pumped) {
        log::get("pubsub")->error("consumer group {}: {}", options_.name, pumped.error().message());
      }
      lock.lock();
      if (stopping_ || (work_ && pumped)) continue;
      // Sleep until the next timeout, backoff or due checkpoint, or until something changes;
      // after a failure, a second at least.
      const TimePoint now = clock_.now();
      TimePoint next = pumped ? now + 1h : now + 1s;
      if (pumped && checkpoint_worth_writing_locked(checkpoint_locked()))
        next = std::min(next, last_checkpoint_at_ + options_.checkpoint_interval);
      if (!deadlines_.empty()) next = std::min(next, deadlines_.begin()->first);
      if (!waiting_.empty() && !members_.empty()) next = std::min(next, waiting_.begin()->first);
      keel::wait_until(clock_, changed_, lock, next, [&] { return stopping_ || work_; });
    }
  });
}

void ConsumerGroup::stop() {
  if (!follower_.stop()) return;
  if (auto ok = checkpoint(); !ok) {
    log::get("pubsub")->error("consumer group {}: final checkpoint: {}", options_.name,
                              ok.error().message());
  }
}

Result<std::unique_ptr<Member>> ConsumerGroup::join(std::string name) {
  if (!valid_name(name)) {
    return invalid("member name '" + name + "': use 1 to 200 letters, digits, '_', '-' or '.'");
  }
  std::lock_guard lock(mutex_);
  for (const auto& [id, member] : members_) {
    if (member.name == name) {
      return invalid("consumer group '" + options_.name + "' already has a member named '" + name +
                     "'");
    }
  }
  const std::uint64_t id = next_member_++;
  members_[id].name = name;
  work_ = true;
  changed_.notify_all();
  return std::unique_ptr<Member>(new Member(shared_from_this(), id, std::move(name)));
}

void ConsumerGroup::remove_member(std::uint64_t member_id) {
  std::lock_guard lock(mutex_);
  auto member = members_.find(member_id);
  if (member == members_.end()) return;
  const std::set<std::uint64_t> held = member->second.in_flight;
  const std::string name = member->second.name;
  for (std::uint64_t delivery : held) {
    const Key key = by_delivery_.at(delivery);
    Entry& entry = entries_.at(key);
    take_back_locked(key, entry);
    // Given back at once, to the others; it still counts as a delivery, so an event that
    // kills every member that takes it is parked in the end.
    if (entry.deliveries >= options_.max_deliveries) {
      park_locked(key, entry, "member " + name + " left without acking");
    } else {
      make_available_locked(key, entry, clock_.now());
    }
  }
  members_.erase(member);
  work_ = true;
  changed_.notify_all();
}

std::vector<Delivery> ConsumerGroup::take(std::uint64_t member_id, std::size_t max) {
  std::lock_guard lock(mutex_);
  std::vector<Delivery> out;
  auto member = members_.find(member_id);
  if (member == members_.end()) return out;
  auto& inbox = member->second.inbox;
  const TimePoint now = clock_.now();
  while (!inbox.empty() && out.size() < max) {
    // The ack timeout runs from when the member takes a delivery, not from when it was put in
    // its inbox: a member that polls fewer than max_in_flight at a time must not see the rest
    // time out (and count as delivered) before it ever had them.
    const Key key = by_delivery_.at(inbox.front().id);
    Entry& entry = entries_.at(key);
    deadlines_.erase({entry.deadline, key});
    entry.deadline = now + options_.ack_timeout;
    deadlines_.insert({entry.deadline, key});
    out.push_back(std::move(inbox.front()));
    inbox.pop_front();
  }
  return out;
}

std::vector<Delivery> ConsumerGroup::wait_for_deliveries(std::uint64_t member_id, std::size_t max,
                                                         Duration timeout) {
  if (max == 0) return {};
  const TimePoint deadline = clock_.now() + timeout;
  while (true) {
    auto out = take(member_id, max);
    if (!out.empty()) return out;
    std::unique_lock lock(mutex_);
    auto member = members_.find(member_id);
    if (stopping_ || member == members_.end() || clock_.now() >= deadline) return out;
    keel::wait_until(clock_, changed_, lock, deadline, [&] {
      auto waiting = members_.find(member_id);
      return stopping_ || waiting == members_.end() || !waiting->second.inbox.empty();
    });
  }
}

Status ConsumerGroup::settle(std::uint64_t member_id, std::uint64_t delivery,
                             std::optional<NackAction> nack, std::string_view reason) {
  std::lock_guard lock(mutex_);
  auto member = members_.find(member_id);
  auto found = by_delivery_.find(delivery);
  if (member == members_.end() || found == by_delivery_.end() ||
      !member->second.in_flight.contains(delivery)) {
    return invalid("delivery " + std::to_string(delivery) +
                   " is not held by this member: it was settled already, timed out and went "
                   "elsewhere, or the member left");
  }
  const Key key = found->second;
  Entry& entry = entries_.at(key);
  take_back_locked(key, entry);
  if (!nack) {
    ++counters_.acked;
    ++member->second.acked;
    ++acks_since_checkpoint_;
    done_locked(key, entry);
  } else if (*nack == NackAction::kRetry) {
    ++counters_.nacked;
    fail_locked(key, entry, "nacked: " + std::string(reason));
  } else if (*nack == NackAction::kPark) {
    ++counters_.nacked;
    park_locked(key, entry, "parked by " + member->second.name + ": " + std::string(reason));
  } else {
    ++counters_.skipped;
    done_locked(key, entry);
  }
  trim_locked();
  work_ = true;
  changed_.notify_all();
  return {};
}

void ConsumerGroup::add_locked(const Key& key, Entry entry) {
  auto [it, added] = entries_.emplace(key, std::move(entry));
  if (!added) return;
  if (key.first == 1) ++log_entries_;
  // In arrival order: a replayed event waits behind what its stream already has.
  if (options_.strategy == Strategy::kPinned) streams_[it->second.event.stream].push_back(key);
  make_available_locked(key, it->second, clock_.now());
}

bool ConsumerGroup::is_stream_head(const Key& key, const Entry& entry) const {
  if (options_.strategy != Strategy::kPinned) return true;
  auto stream = streams_.find(entry.event.stream);
  return stream != streams_.end() && stream->second.front() == key;
}

void ConsumerGroup::make_available_locked(const Key& key, Entry& entry, TimePoint ready_at) {
  entry.state = State::kAvailable;
  entry.ready_at = ready_at;
  if (ready_at > clock_.now()) {
    waiting_.insert({ready_at, key});
  } else if (is_stream_head(key, entry)) {
    ready_.insert(key);
  }
}

void ConsumerGroup::take_back_locked(const Key& key, Entry& entry) {
  deadlines_.erase({entry.deadline, key});
  by_delivery_.erase(entry.delivery);
  auto member = members_.find(entry.member);
  if (member == members_.end()) return;
  member->second.in_flight.erase(entry.delivery);
  // Not taken yet (it timed out in the inbox): it must not be handed out as well.
  std::erase_if(member->second.inbox,
                [&](const Delivery& delivery) { return delivery.id == entry.delivery; });
}

void ConsumerGroup::park_locked(const Key& key, Entry& entry, std::string reason) {
  entry.state = State::kParking;
  entry.park_reason = std::move(reason);
  parking_.push_back(key);
}

void ConsumerGroup::done_locked(const Key& key, Entry& entry) {
  entry.state = State::kDone;
  ++settled_since_checkpoint_;
  if (options_.strategy != Strategy::kPinned) return;
  auto stream = streams_.find(entry.event.stream);
  if (stream == streams_.end()) return;
  // The head, as a rule: only a stream's head is ever handed out.
  if (stream->second.front() == key) {
    stream->second.pop_front();
  } else {
    std::erase(stream->second, key);
  }
  if (stream->second.empty()) {
    streams_.erase(stream);
    return;
  }
  // The stream's next event may go out now (unless it waits out a backoff).
  const Key next = stream->second.front();
  Entry& head = entries_.at(next);
  if (head.state == State::kAvailable && head.ready_at <= clock_.now()) ready_.insert(next);
}

void ConsumerGroup::fail_locked(const Key& key, Entry& entry, std::string reason) {
  if (entry.deliveries >= options_.max_deliveries) {
    park_locked(key, entry,
                "failed " + std::to_string(entry.deliveries) + " deliveries; last: " + reason);
    return;
  }
  Duration backoff = options_.retry_backoff;
  for (std::uint32_t i = 1; i < entry.deliveries && backoff < options_.max_retry_backoff; ++i)
    backoff *= 2;
  make_available_locked(key, entry, clock_.now() + std::min(backoff, options_.max_retry_backoff));
}

std::uint64_t ConsumerGroup::pick_member_locked(const Entry& entry, std::uint64_t& round_robin) {
  auto has_room = [&](const MemberState& m) { return m.in_flight.size() < options_.max_in_flight; };
  switch (options_.strategy) {
    case Strategy::kDispatchToSingle:
      for (const auto& [id, member] : members_)
        if (has_room(member)) return id;
      return 0;
    case Strategy::kRoundRobin: {
      auto it = members_.upper_bound(round_robin);
      for (std::size_t i = 0; i < members_.size(); ++i, ++it) {
        if (it == members_.end()) it = members_.begin();
        if (has_room(it->second)) return round_robin = it->first;
      }
      return 0;
    }
    case Strategy::kPinned: {
      std::uint64_t best = 0, best_score = 0;
      for (const auto& [id, member] : members_) {
        std::uint64_t s = score(entry.event.stream, member.name);
        if (best == 0 || s > best_score) best = id, best_score = s;
      }
      return best != 0 && has_room(members_.at(best)) ? best : 0;
    }
  }
  return 0;
}

void ConsumerGroup::dispatch_locked() {
  if (members_.empty()) return;
  const TimePoint now = clock_.now();
  const bool pinned = options_.strategy == Strategy::kPinned;
  bool delivered = false;
  for (auto it = ready_.begin(); it != ready_.end();) {
    const Key key = *it;
    Entry& entry = entries_.at(key);
    const std::uint64_t member_id = pick_member_locked(entry, round_robin_);
    if (member_id == 0) {
      if (!pinned) break;  // everyone is full
      ++it;                // its owner is full; other streams may go to others
      continue;
    }
    it = ready_.erase(it);
    MemberState& member = members_.at(member_id);
    entry.state = State::kInFlight;
    entry.member = member_id;
    entry.delivery = next_delivery_++;
    entry.deadline = now + options_.ack_timeout;
    ++entry.deliveries;
    deadlines_.insert({entry.deadline, key});
    by_delivery_[entry.delivery] = key;
    member.in_flight.insert(entry.delivery);
    member.inbox.push_back({entry.delivery, entry.event, entry.deliveries, entry.replayed});
    ++counters_.delivered;
    delivered = true;
  }
  if (delivered) changed_.notify_all();
}

std::uint64_t ConsumerGroup::checkpoint_locked() const {
  auto first = entries_.lower_bound({1, 0});
  return first == entries_.end() ? read_position_ : first->second.event.position;
}

// The position moved past events settled since the last record, or past many the filter left
// out. Not past checkpoint records alone: the group reads past its own and the other groups'
// (they are in the log too), and writing one for them moves the others on in turn, so idle
// groups would write a record every checkpoint_interval for ever.
bool ConsumerGroup::checkpoint_worth_writing_locked(std::uint64_t position) const {
  if (position == last_checkpoint_) return false;
  return settled_since_checkpoint_ > 0 || position >= last_checkpoint_ + kCheckpointAfterSkipped;
}

void ConsumerGroup::trim_locked() {
  // Log entries leave from the front only, so the first one left is the checkpoint.
  for (auto it = entries_.lower_bound({1, 0});
       it != entries_.end() && it->second.state == State::kDone;) {
    it = entries_.erase(it);
    --log_entries_;
  }
  // Replayed entries (few, before the log's) leave whenever they are done.
  for (auto it = entries_.begin(); it != entries_.end() && it->first.first == 0;) {
    it = it->second.state == State::kDone ? entries_.erase(it) : std::next(it);
  }
  auto first = entries_.begin();
  parked_replayed_ = first != entries_.end() && first->first.first == 0
                         ? first->second.parked_version
                         : parked_queued_;
}

Status ConsumerGroup::pump() {
  struct Park {
    Key key;
    RecordedEvent event;
    std::string reason;
    std::uint32_t deliveries;
  };
  std::vector<Park> parks;
  bool checkpoint_due = false;
  Status read_status;
  std::lock_guard pumping(pump_mutex_);
  // Read ahead while there is room, without holding mutex_: the store's commit listener takes
  // it, and appends must not wait for this group's reads.
  while (!reader_.caught_up()) {
    std::size_t room;
    {
      std::lock_guard lock(mutex_);
      room = options_.buffer_events - std::min<std::size_t>(log_entries_, options_.buffer_events);
    }
    if (room == 0) break;
    auto events = reader_.next(room);
    if (!events) {
      read_status = events.error();
      break;
    }
    std::lock_guard lock(mutex_);
    for (auto& event : *events) {
      const Key key{1, event.position};
      add_locked(key, Entry{.event = std::move(event)});
    }
    read_position_ = reader_.position();
  }
  {
    std::lock_guard lock(mutex_);
    const TimePoint now = clock_.now();
    // Backoffs that are over.
    while (!waiting_.empty() && waiting_.begin()->first <= now) {
      const Key key = waiting_.begin()->second;
      waiting_.erase(waiting_.begin());
      if (is_stream_head(key, entries_.at(key))) ready_.insert(key);
    }
    // Deliveries whose ack did not come in time.
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      const Key key = deadlines_.begin()->second;
      Entry& entry = entries_.at(key);
      take_back_locked(key, entry);  // also out of the member's inbox, if it was never taken
      ++counters_.timed_out;
      fail_locked(key, entry,
                  "no ack within " + std::to_string(options_.ack_timeout / 1ms) + " ms");
    }
    dispatch_locked();
    for (const Key& key : parking_) {
      const Entry& entry = entries_.at(key);
      parks.push_back({key, entry.event, entry.park_reason, entry.deliveries});
    }
    parking_.clear();
    trim_locked();
    const std::uint64_t position = checkpoint_locked();
    if (checkpoint_worth_writing_locked(position) &&
        (acks_since_checkpoint_ >= options_.checkpoint_after_acks ||
         now - last_checkpoint_at_ >= options_.checkpoint_interval)) {
      checkpoint_due = true;
    }
  }
  // Writes happen outside the lock: members keep acking while the log syncs.
  for (std::size_t i = 0; i < parks.size(); ++i) {
    const Park& park = parks[i];
    const Status appended =
        park_event(store_, parked_stream(), park.event, park.reason, park.deliveries);
    std::lock_guard lock(mutex_);
    if (!appended) {  // still kParking: tried again next round
      for (std::size_t j = i; j < parks.size(); ++j) parking_.push_back(parks[j].key);
      return appended.error();
    }
    auto entry = entries_.find(park.key);
    if (entry != entries_.end() && entry->second.state == State::kParking) {
      done_locked(park.key, entry->second);
      ++counters_.parked;
    }
    log::get("pubsub")->warn("consumer group {}: parked {}@{} (position {}): {}", options_.name,
                             park.event.version, park.event.stream, park.event.position,
                             park.reason);
  }
  if (!parks.empty()) {
    std::lock_guard lock(mutex_);
    trim_locked();
  }
  if (checkpoint_due) {
    if (auto ok = checkpoint(); !ok) return ok.error();
  }
  return read_status;
}

Status ConsumerGroup::checkpoint() {
  std::uint64_t position, parked_replayed;
  {
    std::lock_guard lock(mutex_);
    position = checkpoint_locked();
    parked_replayed = parked_replayed_;
    acks_since_checkpoint_ = 0;
    settled_since_checkpoint_ = 0;
    last_checkpoint_at_ = clock_.now();
  }
  if (auto ok = write_checkpoint(position, parked_replayed); !ok) return ok;
  std::lock_guard lock(mutex_);
  last_checkpoint_ = position;
  return {};
}

Status ConsumerGroup::write_checkpoint(std::uint64_t position, std::uint64_t parked_replayed) {
  Json record{{"position", position},
              {"parked_replayed", parked_replayed},
              {"filter", options_.filter.describe()},
              {"strategy", to_string(options_.strategy)}};
  EventData data{Uuid::random_v4(), "$checkpoint", record.dump(), ""};
  auto appended = store_.append_system(checkpoint_stream(), ExpectedVersion::any(), {data});
  if (!appended) return appended.error();
  return {};
}

Result<std::uint64_t> ConsumerGroup::replay_parked() {
  std::lock_guard pumping(pump_mutex_);
  std::uint64_t from;
  {
    std::lock_guard lock(mutex_);
    from = parked_queued_;
  }
  std::uint64_t queued = 0;
  while (queued < options_.buffer_events) {
    auto page = store_.read_stream(parked_stream(), from,
                                   std::min<std::uint64_t>(500, options_.buffer_events - queued));
    if (!page) return page.error();
    if (page->empty()) break;
    std::vector<Entry> replays;
    for (const auto& record : *page) {
      from = record.version + 1;
      Json parked = Json::parse(record.data, nullptr, false);
      if (parked.is_discarded() || !parked.contains("stream") || !parked.contains("version"))
        continue;
      auto original = store_.read_stream(parked["stream"].get<std::string>(),
                                         parked["version"].get<std::uint64_t>(), 1);
      // A parked event whose stream was deleted since has nothing left to replay.
      if (!original || original->empty()) continue;
      replays.push_back({.event = std::move(original->front()),
                         .replayed = true,
                         .parked_version = record.version});
    }
    std::lock_guard lock(mutex_);
    for (auto& entry : replays) {
      const Key key{0, entry.parked_version};
      add_locked(key, std::move(entry));
      ++queued;
    }
    parked_queued_ = from;
    counters_.replayed += replays.size();
    trim_locked();
    work_ = true;
    changed_.notify_all();
  }
  return queued;
}

GroupStats ConsumerGroup::stats() const {
  std::lock_guard lock(mutex_);
  GroupStats stats = counters_;
  stats.checkpoint = checkpoint_locked();
  stats.read_position = read_position_;
  const std::uint64_t head = store_.next_position();
  stats.lag = head > stats.checkpoint ? head - stats.checkpoint : 0;
  stats.buffered = entries_.size();
  stats.in_flight = deadlines_.size();
  for (const auto& [id, member] : members_)
    stats.members.push_back({member.name, member.in_flight.size(), member.acked});
  return stats;
}

std::vector<metrics::CallbackRegistration> ConsumerGroup::export_metrics(
    metrics::Registry& registry) {
  const metrics::Labels labels{{"group", options_.name}};
  std::vector<metrics::CallbackRegistration> out;
  auto gauge = [&](const char* name, const char* help, std::uint64_t GroupStats::*field) {
    out.push_back(registry.gauge_callback(
        name, help, labels, [this, field] { return static_cast<double>(stats().*field); }));
  };
  auto counter = [&](const char* name, const char* help, std::uint64_t GroupStats::*field) {
    out.push_back(registry.counter_callback(name, help, labels, [this, field] {
      std::lock_guard lock(mutex_);
      return static_cast<double>(counters_.*field);
    }));
  };
  gauge("keel_group_lag_events", "Log positions between the group's checkpoint and the head",
        &GroupStats::lag);
  gauge("keel_group_in_flight", "Events handed to members and not yet settled",
        &GroupStats::in_flight);
  gauge("keel_group_buffered_events", "Events the group holds in memory", &GroupStats::buffered);
  counter("keel_group_delivered_total", "Deliveries to members, redeliveries included",
          &GroupStats::delivered);
  counter("keel_group_acked_total", "Events acked", &GroupStats::acked);
  counter("keel_group_nacked_total", "Events nacked", &GroupStats::nacked);
  counter("keel_group_timed_out_total", "Deliveries whose ack did not come in time",
          &GroupStats::timed_out);
  counter("keel_group_parked_total", "Events parked after failing", &GroupStats::parked);
  return out;
}

}  // namespace keel::pubsub

#include "keel/node/groups.h"

#include <nlohmann/json.hpp>

namespace keel::node {

namespace {

Error no_group(const std::string& name) {
  return Error(errc::not_found, "no consumer group named \"" + name + "\"");
}

// The group a PUT body defines, as decode_request reads it (the same rules on restart).
Result<pubsub::GroupOptions> decode_definition(const std::string& name,
                                               std::string_view definition) {
  const std::string target = "/v1/groups/" + name;
  auto command = decode_request({.method = "PUT",
                                 .target = target,
                                 .body = definition,
                                 .content_type = "application/json",
                                 .last_event_id = ""});
  if (!command) return command.error();
  auto* create = std::get_if<CreateGroupCommand>(&*command);
  if (create == nullptr) return Error(errc::internal, "not a group definition");
  return create->options;
}

}  // namespace

GroupRegistry::GroupRegistry(eventlog::EventStore& store, Clock& clock, metrics::Registry& registry,
                             Duration member_timeout)
    : store_(store), clock_(clock), registry_(registry), member_timeout_(member_timeout) {}

GroupRegistry::~GroupRegistry() { stop(); }

Status GroupRegistry::start() {
  // The definitions, in order: the last word on each name wins.
  std::map<std::string, std::string> definitions;
  for (std::uint64_t from = 0;;) {
    auto events = store_.read_stream(kGroupsStream, from, 1000);
    if (!events) return events.error();
    for (const auto& event : *events) {
      auto json = nlohmann::json::parse(event.data, nullptr, false);
      if (json.is_discarded() || !json.contains("name") || !json["name"].is_string()) {
        return Error(errc::internal, std::string(kGroupsStream) + " version " +
                                         std::to_string(event.version) + " is not a group record");
      }
      const std::string name = json["name"].get<std::string>();
      if (event.type == "group-created") {
        definitions[name] = json.value("definition", "");
      } else {
        definitions.erase(name);
      }
      from = event.version + 1;
    }
    if (events->size() < 1000) break;
  }
  std::lock_guard lock(mutex_);
  for (auto& [name, definition] : definitions) {
    auto options = decode_definition(name, definition);
    if (!options) {
      return Error(errc::internal,
                   "group " + name + "'s stored definition: " + options.error().message());
    }
    if (auto opened = open_locked(*options, definition); !opened) return opened;
  }
  reaper_ = std::thread([this] {
    std::unique_lock wait_lock(mutex_);
    while (!stopping_) {
      wait_until(clock_, wake_, wait_lock, clock_.now() + member_timeout_ / 4,
                 [this] { return stopping_; });
      if (stopping_) break;
      wait_lock.unlock();
      reap();
      wait_lock.lock();
    }
  });
  return {};
}

void GroupRegistry::close() {
  std::vector<std::shared_ptr<pubsub::Member>> gone;
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    for (auto& [name, group] : groups_) {
      for (auto& [member_name, slot] : group.members) gone.push_back(std::move(slot.member));
      group.members.clear();
    }
  }
  for (auto& member : gone) member->leave();
}

void GroupRegistry::stop() {
  std::map<std::string, Group> groups;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    wake_.notify_all();
    groups.swap(groups_);
  }
  if (reaper_.joinable()) reaper_.join();
  for (auto& [name, group] : groups) {
    group.members.clear();  // their unacked deliveries go back before the final checkpoint
    group.metrics.clear();
    group.group->stop();
  }
}

Status GroupRegistry::open_locked(const pubsub::GroupOptions& options, std::string definition) {
  auto opened = pubsub::ConsumerGroup::open(store_, options, clock_);
  if (!opened) return opened.error();
  Group group;
  group.definition = std::move(definition);
  group.group = std::move(*opened);
  group.metrics = group.group->export_metrics(registry_);
  group.group->start();
  groups_.emplace(options.name, std::move(group));
  return {};
}

Result<bool> GroupRegistry::create(const pubsub::GroupOptions& options,
                                   std::string_view definition) {
  std::lock_guard lock(mutex_);
  if (stopping_) return Error(errc::unavailable, "the node is shutting down");
  if (auto it = groups_.find(options.name); it != groups_.end()) {
    // The same settings however they were written (order of fields, defaults spelt out).
    if (group_json(it->second.group->options(), {}) == group_json(options, {})) return false;
    return Error(errc::conflict, "consumer group \"" + options.name +
                                     "\" exists with another definition; delete it first");
  }
  nlohmann::json record = {{"name", options.name}, {"definition", std::string(definition)}};
  if (auto opened = open_locked(options, std::string(definition)); !opened) {
    return opened.error();
  }
  eventlog::EventData event{Uuid::random_v4(), "group-created", record.dump(), ""};
  auto appended = store_.append_system(kGroupsStream, eventlog::ExpectedVersion::any(), {event});
  if (!appended) {
    auto it = groups_.find(options.name);
    it->second.metrics.clear();
    it->second.group->stop();
    groups_.erase(it);
    return appended.error();
  }
  return true;
}

Status GroupRegistry::remove(const std::string& name) {
  Group group;
  {
    std::lock_guard lock(mutex_);
    auto it = groups_.find(name);
    if (it == groups_.end()) return no_group(name);
    group = std::move(it->second);
    groups_.erase(it);
  }
  group.members.clear();
  group.metrics.clear();
  group.group->stop();
  group.group.reset();
  nlohmann::json record = {{"name", name}};
  eventlog::EventData event{Uuid::random_v4(), "group-deleted", record.dump(), ""};
  if (auto appended =
          store_.append_system(kGroupsStream, eventlog::ExpectedVersion::any(), {event});
      !appended) {
    return appended.error();
  }
  return pubsub::ConsumerGroup::remove(store_, name);
}

std::vector<GroupSummary> GroupRegistry::list() const {
  std::lock_guard lock(mutex_);
  std::vector<GroupSummary> out;
  for (const auto& [name, group] : groups_) {
    out.push_back({group.group->options(), group.group->stats()});
  }
  return out;
}

Result<GroupSummary> GroupRegistry::get(const std::string& name) const {
  std::lock_guard lock(mutex_);
  auto it = groups_.find(name);
  if (it == groups_.end()) return no_group(name);
  return GroupSummary{it->second.group->options(), it->second.group->stats()};
}

Result<std::shared_ptr<pubsub::Member>> GroupRegistry::member(const std::string& group,
                                                              const std::string& name,
                                                              const std::string& session) {
  std::shared_ptr<pubsub::Member> replaced;
  {
    std::lock_guard lock(mutex_);
    auto it = groups_.find(group);
    if (it != groups_.end() && !session.empty()) {
      auto slot = it->second.members.find(name);
      if (slot != it->second.members.end() && slot->second.member &&
          !slot->second.session.empty() && session != slot->second.session) {
        // Another process under this name: the one before is gone (or must stop; a poll of
        // its own would take the name back the same way). What it held goes to whoever polls
        // next.
        replaced = std::move(slot->second.member);
        slot->second.busy = 0;  // the old one's calls in progress (a long poll) count for it
      }
    }
  }
  if (replaced) replaced->leave();  // outside the lock: it takes the group's
  std::lock_guard lock(mutex_);
  if (closing_) return Error(errc::unavailable, "the node is shutting down");
  auto it = groups_.find(group);
  if (it == groups_.end()) return no_group(group);
  MemberSlot& slot = it->second.members[name];
  if (!session.empty()) slot.session = session;
  if (!slot.member) {
    auto joined = it->second.group->join(name);
    if (!joined) {
      it->second.members.erase(name);
      return joined.error();
    }
    slot.member = std::shared_ptr<pubsub::Member>(std::move(*joined));
  }
  slot.last_seen = clock_.now();
  ++slot.busy;
  return slot.member;
}

void GroupRegistry::release(const std::string& group, const std::string& name,
                            const std::shared_ptr<pubsub::Member>& which) {
  std::lock_guard lock(mutex_);
  auto it = groups_.find(group);
  if (it == groups_.end()) return;
  auto member = it->second.members.find(name);
  if (member == it->second.members.end() || member->second.member != which) return;
  member->second.last_seen = clock_.now();
  --member->second.busy;
}

Result<std::vector<pubsub::Delivery>> GroupRegistry::poll(const std::string& group,
                                                          const std::string& name, std::size_t max,
                                                          Duration wait,
                                                          const std::string& session) {
  auto member = this->member(group, name, session);
  if (!member) return member.error();
  auto deliveries = wait > Duration::zero() ? (*member)->wait(max, wait) : (*member)->poll(max);
  release(group, name, *member);
  return deliveries;
}

Result<std::vector<Settled>> GroupRegistry::settle(const std::string& group,
                                                   const std::string& name,
                                                   const std::vector<std::uint64_t>& ids,
                                                   std::optional<pubsub::NackAction> nack,
                                                   std::string_view reason) {
  auto member = this->member(group, name);
  if (!member) return member.error();
  std::vector<Settled> out;
  out.reserve(ids.size());
  for (std::uint64_t id : ids) {
    out.push_back({id, nack ? (*member)->nack(id, *nack, reason) : (*member)->ack(id)});
  }
  release(group, name, *member);
  return out;
}

Result<std::uint64_t> GroupRegistry::replay_parked(const std::string& name) {
  std::shared_ptr<pubsub::ConsumerGroup> group;
  {
    std::lock_guard lock(mutex_);
    auto it = groups_.find(name);
    if (it == groups_.end()) return no_group(name);
    group = it->second.group;
  }
  return group->replay_parked();
}

Result<std::vector<eventlog::RecordedEvent>> GroupRegistry::parked(const std::string& name,
                                                                   std::uint64_t from,
                                                                   std::size_t limit) {
  std::string stream;
  {
    std::lock_guard lock(mutex_);
    auto it = groups_.find(name);
    if (it == groups_.end()) return no_group(name);
    stream = it->second.group->parked_stream();
  }
  return store_.read_stream(stream, from, limit);
}

void GroupRegistry::reap() {
  std::vector<std::shared_ptr<pubsub::Member>> gone;
  {
    std::lock_guard lock(mutex_);
    const TimePoint now = clock_.now();
    for (auto& [name, group] : groups_) {
      for (auto it = group.members.begin(); it != group.members.end();) {
        if (it->second.busy == 0 && now - it->second.last_seen >= member_timeout_) {
          gone.push_back(std::move(it->second.member));
          it = group.members.erase(it);
        } else {
          ++it;
        }
      }
    }
  }
  for (auto& member : gone) {
    // (Null for a slot whose old process member() is replacing at this moment.)
    if (member) member->leave();  // outside the lock: it takes the group's
  }
}

}  // namespace keel::node

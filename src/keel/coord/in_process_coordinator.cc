#include "keel/coord/in_process_coordinator.h"

#include <algorithm>

namespace keel::coord {
namespace {

thread_local bool delivering_here = false;

bool compare(std::int64_t actual, Compare::Op op, std::int64_t expected) {
  switch (op) {
    case Compare::Op::kEqual:
      return actual == expected;
    case Compare::Op::kNotEqual:
      return actual != expected;
    case Compare::Op::kLess:
      return actual < expected;
    case Compare::Op::kGreater:
      return actual > expected;
  }
  return false;
}

}  // namespace

class InProcessCoordinator::Handle final : public WatchHandle {
 public:
  Handle(InProcessCoordinator& owner, std::uint64_t id) : owner_(owner), id_(id) {}
  ~Handle() override { cancel(); }
  void cancel() override {
    // Taking the delivery lock waits out a callback running on another thread.
    std::lock_guard delivering(owner_.delivering_);
    std::lock_guard lock(owner_.mutex_);
    auto it = owner_.watchers_.find(id_);
    if (it == owner_.watchers_.end()) return;
    it->second->cancelled = true;
    owner_.watchers_.erase(it);
  }

 private:
  InProcessCoordinator& owner_;
  std::uint64_t id_;
};

InProcessCoordinator::InProcessCoordinator(Clock& clock, std::size_t history)
    : clock_(clock), history_limit_(history) {}

InProcessCoordinator::~InProcessCoordinator() {
  std::vector<TimerId> timers;
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    for (const auto& [id, lease] : leases_) timers.push_back(lease.timer);
  }
  for (TimerId timer : timers) clock_.cancel(timer);
}

bool InProcessCoordinator::matches(const Watcher& watcher, const std::string& key) const {
  return watcher.prefix ? key.compare(0, watcher.key.size(), watcher.key) == 0 : key == watcher.key;
}

void InProcessCoordinator::put_locked(const std::string& key, const std::string& value,
                                      LeaseId lease) {
  KeyValue& kv = store_[key];
  if (kv.create_revision == 0) {
    kv.key = key;
    kv.create_revision = revision_;
  }
  if (kv.lease != 0 && kv.lease != lease) {
    auto old = leases_.find(kv.lease);
    if (old != leases_.end()) old->second.keys.erase(key);
  }
  kv.value = value;
  kv.mod_revision = revision_;
  ++kv.version;
  kv.lease = lease;
  if (lease != 0) leases_.at(lease).keys.insert(key);
  WatchEvent event{WatchEvent::Type::kPut, kv};
  history_.push_back(event);
  outbox_.push_back(std::move(event));
}

void InProcessCoordinator::delete_key_locked(const std::string& key) {
  auto it = store_.find(key);
  if (it == store_.end()) return;
  if (it->second.lease != 0) {
    auto lease = leases_.find(it->second.lease);
    if (lease != leases_.end()) lease->second.keys.erase(key);
  }
  WatchEvent event{WatchEvent::Type::kDelete, it->second};
  event.kv.mod_revision = revision_;
  store_.erase(it);
  history_.push_back(event);
  outbox_.push_back(std::move(event));
}

void InProcessCoordinator::revoke_locked(LeaseId id) {
  auto it = leases_.find(id);
  if (it == leases_.end()) return;
  std::set<std::string> keys = std::move(it->second.keys);
  leases_.erase(it);
  if (keys.empty()) return;
  ++revision_;
  for (const auto& key : keys) delete_key_locked(key);
  while (history_.size() > history_limit_) history_.pop_front();
}

Result<LeaseId> InProcessCoordinator::grant(Duration ttl) {
  if (ttl <= Duration::zero()) {
    return Error(errc::invalid_argument, "lease TTL must be positive");
  }
  std::lock_guard lock(mutex_);
  LeaseId id = next_lease_++;
  Lease& lease = leases_[id];
  lease.ttl = ttl;
  lease.deadline = clock_.now() + ttl;
  lease.timer = clock_.schedule_at(lease.deadline, [this, id] { on_lease_timer(id); });
  return id;
}

void InProcessCoordinator::on_lease_timer(LeaseId id) {
  {
    std::lock_guard lock(mutex_);
    if (closing_) return;
    auto it = leases_.find(id);
    if (it == leases_.end()) return;
    if (it->second.deadline > clock_.now()) {  // renewed meanwhile: check again then
      it->second.timer =
          clock_.schedule_at(it->second.deadline, [this, id] { on_lease_timer(id); });
      return;
    }
    revoke_locked(id);
  }
  deliver();
}

Result<Duration> InProcessCoordinator::keep_alive(LeaseId id) {
  std::lock_guard lock(mutex_);
  auto it = leases_.find(id);
  if (it == leases_.end() || it->second.deadline <= clock_.now()) {
    return Error(errc::lease_not_found,
                 "lease " + std::to_string(id) + " has expired or was revoked");
  }
  it->second.deadline = clock_.now() + it->second.ttl;
  return it->second.ttl;
}

Status InProcessCoordinator::revoke(LeaseId id) {
  TimerId timer = 0;
  {
    std::lock_guard lock(mutex_);
    auto it = leases_.find(id);
    if (it == leases_.end()) {
      return Error(errc::lease_not_found, "lease " + std::to_string(id) + " was not found");
    }
    timer = it->second.timer;
    revoke_locked(id);
  }
  clock_.cancel(timer);
  deliver();
  return {};
}

Result<Duration> InProcessCoordinator::time_to_live(LeaseId id) {
  std::lock_guard lock(mutex_);
  auto it = leases_.find(id);
  TimePoint now = clock_.now();
  if (it == leases_.end() || it->second.deadline <= now) {
    return Error(errc::lease_not_found, "lease " + std::to_string(id) + " was not found");
  }
  return it->second.deadline - now;
}

Result<TransactionResult> InProcessCoordinator::transact(const Transaction& transaction) {
  TransactionResult result;
  {
    std::lock_guard lock(mutex_);
    bool ok = true;
    for (const auto& condition : transaction.compare) {
      auto it = store_.find(condition.key);
      const KeyValue* kv = it == store_.end() ? nullptr : &it->second;
      switch (condition.target) {
        case Compare::Target::kCreateRevision:
          ok = compare(kv ? kv->create_revision : 0, condition.op, condition.number);
          break;
        case Compare::Target::kModRevision:
          ok = compare(kv ? kv->mod_revision : 0, condition.op, condition.number);
          break;
        case Compare::Target::kVersion:
          ok = compare(kv ? kv->version : 0, condition.op, condition.number);
          break;
        case Compare::Target::kValue: {
          int order = (kv ? kv->value : std::string()).compare(condition.value);
          ok = compare(order < 0 ? -1 : order > 0 ? 1 : 0, condition.op, 0);
          break;
        }
      }
      if (!ok) break;
    }
    result.succeeded = ok;
    const auto& operations = ok ? transaction.success : transaction.failure;
    for (const auto& operation : operations) {
      if (operation.kind == Operation::Kind::kPut && operation.lease != 0 &&
          (!leases_.contains(operation.lease) ||
           leases_.at(operation.lease).deadline <= clock_.now())) {
        return Error(errc::lease_not_found, "put " + operation.key + ": lease " +
                                                std::to_string(operation.lease) +
                                                " has expired or was revoked");
      }
    }
    bool writes = std::any_of(operations.begin(), operations.end(),
                              [](const Operation& o) { return o.kind != Operation::Kind::kGet; });
    if (writes) ++revision_;
    for (const auto& operation : operations) {
      std::vector<KeyValue> kvs;
      auto collect = [&] {
        if (!operation.prefix) {
          auto it = store_.find(operation.key);
          if (it != store_.end()) kvs.push_back(it->second);
          return;
        }
        for (auto it = store_.lower_bound(operation.key);
             it != store_.end() && it->first.compare(0, operation.key.size(), operation.key) == 0;
             ++it) {
          kvs.push_back(it->second);
        }
      };
      switch (operation.kind) {
        case Operation::Kind::kGet:
          collect();
          break;
        case Operation::Kind::kPut:
          put_locked(operation.key, operation.value, operation.lease);
          break;
        case Operation::Kind::kDelete:
          collect();
          for (const auto& kv : kvs) delete_key_locked(kv.key);
          break;
      }
      result.kvs.push_back(std::move(kvs));
    }
    while (history_.size() > history_limit_) history_.pop_front();
    result.revision = revision_;
  }
  deliver();
  return result;
}

Result<std::pair<std::vector<KeyValue>, Revision>> InProcessCoordinator::range(std::string_view key,
                                                                               bool prefix) {
  Transaction transaction;
  transaction.success.push_back({Operation::Kind::kGet, std::string(key), "", 0, prefix});
  auto result = transact(transaction);
  if (!result) return result.error();
  return std::make_pair(std::move(result->kvs.front()), result->revision);
}

Result<std::unique_ptr<WatchHandle>> InProcessCoordinator::watch(
    std::string_view key, bool prefix, Revision after_revision,
    std::function<void(const WatchEvent&)> on_event) {
  std::lock_guard delivering(delivering_);
  std::vector<WatchEvent> replay;
  std::uint64_t id;
  std::shared_ptr<Watcher> watcher;
  {
    std::lock_guard lock(mutex_);
    Revision oldest = history_.empty() ? revision_ + 1 : history_.front().kv.mod_revision;
    watcher = std::make_shared<Watcher>(
        Watcher{std::string(key), prefix, after_revision, std::move(on_event)});
    if (after_revision + 1 < oldest && after_revision < revision_) {
      // Changes since then are no longer kept: hand over the state now and go on from here
      // (what the etcd backend does after a compaction). Pending outbox changes are in it.
      WatchEvent resync;
      resync.type = WatchEvent::Type::kResync;
      resync.kv.mod_revision = revision_;
      for (const auto& [stored_key, kv] : store_) {
        if (matches(*watcher, stored_key)) resync.snapshot.push_back(kv);
      }
      watcher->after = revision_;
      replay.push_back(std::move(resync));
    } else {
      for (const auto& event : history_) {
        if (event.kv.mod_revision > after_revision && matches(*watcher, event.kv.key)) {
          replay.push_back(event);
        }
      }
      // Changes still in the outbox reach this watcher through deliver(); do not replay them.
      for (const auto& pending : outbox_) {
        auto it = std::find_if(replay.begin(), replay.end(), [&](const WatchEvent& e) {
          return e.kv.mod_revision == pending.kv.mod_revision && e.kv.key == pending.kv.key;
        });
        if (it != replay.end()) replay.erase(it);
      }
    }
    id = next_watcher_++;
    watchers_[id] = watcher;
  }
  for (const auto& event : replay) watcher->on_event(event);
  return std::unique_ptr<WatchHandle>(std::make_unique<Handle>(*this, id));
}

void InProcessCoordinator::deliver() {
  if (delivering_here) return;  // a callback's own change: the loop below delivers it next
  std::lock_guard delivering(delivering_);
  delivering_here = true;
  while (true) {
    WatchEvent event;
    std::vector<std::shared_ptr<Watcher>> targets;
    {
      std::lock_guard lock(mutex_);
      if (outbox_.empty()) break;
      event = std::move(outbox_.front());
      outbox_.pop_front();
      for (const auto& [id, watcher] : watchers_) {
        if (event.kv.mod_revision > watcher->after && matches(*watcher, event.kv.key)) {
          targets.push_back(watcher);
        }
      }
    }
    for (const auto& watcher : targets) {
      if (!watcher->cancelled) watcher->on_event(event);
    }
  }
  delivering_here = false;
}

}  // namespace keel::coord

#include "keel/coord/election.h"

#include <algorithm>
#include <cstdio>

namespace keel::coord {

void CancelToken::cancel() {
  cancelled_ = true;
  std::lock_guard lock(mutex_);
  if (wake_) wake_();
}

struct Leadership::State {
  Coordinator& coordinator;
  Clock& clock;
  ElectionOptions options;
  LeaseId lease;
  std::mutex mutex;
  std::condition_variable changed;
  bool lost = false;
  bool resigned = false;
  std::vector<std::function<void()>> on_lost;
  TimerId renew_timer = 0;
  TimerId deadline_timer = 0;
  TimePoint next_renewal;  // renewals keep a fixed cadence from the grant
  std::unique_ptr<WatchHandle> own_key_watch;

  State(Coordinator& c, Clock& k, ElectionOptions o, LeaseId l)
      : coordinator(c), clock(k), options(o), lease(l) {}

  void mark_lost() {
    std::vector<std::function<void()>> callbacks;
    {
      std::lock_guard lock(mutex);
      if (lost) return;
      lost = true;
      callbacks.swap(on_lost);
    }
    changed.notify_all();
    for (auto& callback : callbacks) callback();
  }
};

namespace {

Duration deadline_after_renewal(const ElectionOptions& options) {
  return std::chrono::duration_cast<Duration>(options.ttl * options.deadline_fraction);
}

// Renews every ttl/3 on the clock; each success pushes the local deadline out.
void schedule_renewal(const std::shared_ptr<Leadership::State>& state);

// The local deadline: deadline_fraction x TTL after `renewed_at`, when the lease was granted or
// last renewed (measured from before the request, so never later than the backend's view).
void arm_deadline(const std::shared_ptr<Leadership::State>& state, TimePoint renewed_at) {
  std::weak_ptr<Leadership::State> weak = state;
  TimerId timer =
      state->clock.schedule_at(renewed_at + deadline_after_renewal(state->options), [weak] {
        auto alive = weak.lock();
        if (!alive) return;
        alive->mark_lost();
        // Give the key up (if the backend can be reached) so that a successor need not wait
        // for the lease to expire.
        (void)alive->coordinator.revoke(alive->lease);
      });
  TimerId old;
  {
    std::lock_guard lock(state->mutex);
    old = std::exchange(state->deadline_timer, timer);
  }
  if (old != 0) state->clock.cancel(old);
}

void schedule_renewal(const std::shared_ptr<Leadership::State>& state) {
  std::weak_ptr<Leadership::State> weak = state;
  state->next_renewal += state->options.ttl / 3;
  TimerId timer = state->clock.schedule_at(state->next_renewal, [weak] {
    auto alive = weak.lock();
    if (!alive) return;
    {
      std::lock_guard lock(alive->mutex);
      if (alive->lost) return;
    }
    const TimePoint asked_at = alive->clock.now();
    auto renewed = alive->coordinator.keep_alive(alive->lease);
    if (!renewed) {
      if (renewed.error().is(errc::lease_not_found)) alive->mark_lost();
      // Unreachable backend: keep trying; the local deadline decides.
    } else {
      arm_deadline(alive, asked_at);
    }
    {
      // A deposed leader stops renewing: its key must be free to expire.
      std::lock_guard lock(alive->mutex);
      if (alive->lost) return;
    }
    schedule_renewal(alive);
  });
  std::lock_guard lock(state->mutex);
  state->renew_timer = timer;
}

}  // namespace

Leadership::Leadership(std::shared_ptr<State> state, std::string key, LeaseId lease, Revision token)
    : state_(std::move(state)), key_(std::move(key)), lease_(lease), token_(token) {}

Leadership::~Leadership() { (void)resign(); }

bool Leadership::lost() const {
  std::lock_guard lock(state_->mutex);
  return state_->lost;
}

bool Leadership::wait_lost(Duration timeout) {
  std::weak_ptr<State> weak = state_;
  TimerId timer = state_->clock.schedule_after(timeout, [weak] {
    if (auto alive = weak.lock()) alive->changed.notify_all();
  });
  const TimePoint deadline = state_->clock.now() + timeout;
  {
    std::unique_lock lock(state_->mutex);
    state_->changed.wait(lock, [&] { return state_->lost || state_->clock.now() >= deadline; });
  }
  state_->clock.cancel(timer);
  return lost();
}

void Leadership::on_lost(std::function<void()> callback) {
  {
    std::lock_guard lock(state_->mutex);
    if (!state_->lost) {
      state_->on_lost.push_back(std::move(callback));
      return;
    }
  }
  callback();
}

Status Leadership::resign() {
  TimerId renew, deadline;
  std::unique_ptr<WatchHandle> watch;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->resigned) return {};
    state_->resigned = true;
    renew = std::exchange(state_->renew_timer, 0);
    deadline = std::exchange(state_->deadline_timer, 0);
    watch = std::move(state_->own_key_watch);
  }
  if (renew != 0) state_->clock.cancel(renew);
  if (deadline != 0) state_->clock.cancel(deadline);
  watch.reset();
  state_->mark_lost();
  Status revoked = state_->coordinator.revoke(lease_);
  if (!revoked && revoked.error().is(errc::lease_not_found)) return {};  // already gone
  return revoked;
}

Elector::Elector(Coordinator& coordinator, Clock& clock, std::string election,
                 ElectionOptions options)
    : coordinator_(coordinator),
      clock_(clock),
      prefix_(std::move(election) + "/"),
      options_(options) {}

Result<std::shared_ptr<Leadership>> Elector::campaign(std::string value, CancelToken* cancel) {
  const TimePoint granted_at = clock_.now();
  auto lease = coordinator_.grant(options_.ttl);
  if (!lease) return lease.error();
  char hex[24];
  std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(*lease));
  const std::string key = prefix_ + hex;
  Transaction create;
  create.compare.push_back({key, Compare::Target::kCreateRevision, Compare::Op::kEqual, 0, ""});
  create.success.push_back({Operation::Kind::kPut, key, value, *lease, false});
  create.failure.push_back({Operation::Kind::kGet, key, "", 0, false});
  auto created = coordinator_.transact(create);
  if (!created) return created.error();

  auto state = std::make_shared<Leadership::State>(coordinator_, clock_, options_, *lease);
  state->next_renewal = granted_at;
  arm_deadline(state, granted_at);
  schedule_renewal(state);
  std::shared_ptr<Leadership> candidacy;  // withdraws (revokes) on every early return

  // Wait until no key ahead of ours remains.
  std::mutex mutex;
  std::condition_variable wake;
  bool changed = false;
  auto poke = [&] {
    {
      std::lock_guard lock(mutex);
      changed = true;
    }
    wake.notify_all();
  };
  if (cancel != nullptr) {
    std::lock_guard lock(cancel->mutex_);
    cancel->wake_ = poke;
  }
  auto forget_cancel = [&] {
    if (cancel != nullptr) {
      std::lock_guard lock(cancel->mutex_);
      cancel->wake_ = nullptr;
    }
  };
  Revision token = 0;
  while (true) {
    auto listing = coordinator_.range(prefix_, true);
    if (!listing) {
      forget_cancel();
      (void)Leadership(state, key, *lease, 0).resign();
      return listing.error();
    }
    auto& [kvs, revision] = *listing;
    auto mine =
        std::find_if(kvs.begin(), kvs.end(), [&](const KeyValue& kv) { return kv.key == key; });
    if (mine == kvs.end()) {  // our lease expired while we waited
      forget_cancel();
      (void)Leadership(state, key, *lease, 0).resign();
      return Error(errc::lease_not_found,
                   "campaign for " + prefix_ + ": our key expired while waiting");
    }
    token = mine->create_revision;
    const KeyValue* ahead = nullptr;
    for (const auto& kv : kvs) {
      if (kv.create_revision < token &&
          (ahead == nullptr || kv.create_revision > ahead->create_revision)) {
        ahead = &kv;
      }
    }
    if (ahead == nullptr) break;  // elected
    {
      std::lock_guard lock(mutex);
      changed = false;
    }
    auto watch = coordinator_.watch(ahead->key, false, revision, [&](const WatchEvent& event) {
      if (event.type == WatchEvent::Type::kDelete) poke();
    });
    if (!watch) {
      forget_cancel();
      (void)Leadership(state, key, *lease, 0).resign();
      return watch.error();
    }
    std::unique_lock lock(mutex);
    wake.wait(lock, [&] { return changed || (cancel != nullptr && cancel->cancelled()); });
    lock.unlock();
    (*watch)->cancel();
    if (cancel != nullptr && cancel->cancelled()) {
      forget_cancel();
      (void)Leadership(state, key, *lease, 0).resign();
      return Error(errc::cancelled, "campaign for " + prefix_ + " was cancelled");
    }
  }
  forget_cancel();

  // Elected. Watch our own key: if it goes (lease expired at the backend), we lost.
  std::weak_ptr<Leadership::State> weak = state;
  auto own = coordinator_.watch(key, false, created->revision, [weak](const WatchEvent& event) {
    if (event.type != WatchEvent::Type::kDelete) return;
    if (auto alive = weak.lock()) alive->mark_lost();
  });
  if (own) {
    std::lock_guard lock(state->mutex);
    state->own_key_watch = std::move(*own);
  }
  return std::shared_ptr<Leadership>(new Leadership(state, key, *lease, token));
}

Result<std::optional<KeyValue>> Elector::leader() {
  auto listing = coordinator_.range(prefix_, true);
  if (!listing) return listing.error();
  const auto& kvs = listing->first;
  if (kvs.empty()) return std::optional<KeyValue>();
  return std::optional<KeyValue>(*std::min_element(
      kvs.begin(), kvs.end(),
      [](const KeyValue& a, const KeyValue& b) { return a.create_revision < b.create_revision; }));
}

Result<std::unique_ptr<WatchHandle>> Elector::observe(
    std::function<void(const std::optional<KeyValue>&)> on_change) {
  auto listing = coordinator_.range(prefix_, true);
  if (!listing) return listing.error();
  auto last = std::make_shared<std::optional<KeyValue>>();
  auto report = [this, last, on_change](bool force) {
    auto now = leader();
    if (!now) return;
    bool same =
        last->has_value() == now->has_value() &&
        (!now->has_value() || ((**last).key == (**now).key && (**last).value == (**now).value));
    if (force || !same) {
      *last = *now;
      on_change(*now);
    }
  };
  report(true);
  return coordinator_.watch(prefix_, true, listing->second,
                            [report](const WatchEvent&) { report(false); });
}

Result<TransactionResult> fenced_transact(Coordinator& coordinator, const Leadership& leadership,
                                          std::vector<Operation> operations) {
  Transaction transaction;
  transaction.compare.push_back({leadership.key(), Compare::Target::kCreateRevision,
                                 Compare::Op::kEqual, leadership.token(), ""});
  transaction.success = std::move(operations);
  auto result = coordinator.transact(transaction);
  if (!result) return result.error();
  if (!result->succeeded) {
    return Error(errc::not_leader, "fenced write refused: " + leadership.key() + " (token " +
                                       std::to_string(leadership.token()) + ") no longer leads");
  }
  return result;
}

bool FencingGuard::admit(Revision token) {
  Revision highest = highest_.load();
  while (token >= highest) {
    if (highest_.compare_exchange_weak(highest, token)) return true;
  }
  return false;
}

}  // namespace keel::coord

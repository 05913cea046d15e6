#include "keel/coord/election.h"

#include <algorithm>
#include <cstdio>

namespace keel::coord {

void CancelToken::cancel() {
  cancelled_ = true;
  std::lock_guard lock(mutex_);
  if (wake_) wake_();
}

Leadership::Leadership(Coordinator& coordinator, std::shared_ptr<LeaseKeeper> keeper,
                       std::string key, Revision token, std::unique_ptr<WatchHandle> own_key_watch)
    : coordinator_(coordinator),
      keeper_(std::move(keeper)),
      key_(std::move(key)),
      token_(token),
      own_key_watch_(std::move(own_key_watch)) {}

Leadership::~Leadership() { (void)resign(); }

Status Leadership::resign() {
  if (own_key_watch_) own_key_watch_->cancel();
  return keeper_->release();
}

namespace {

constexpr std::size_t kMaxElectionName = 255;

// `name` in quotes for an error message, control characters escaped, cut short when long.
std::string quoted(std::string_view name) {
  std::string text = "\"";
  for (std::size_t i = 0; i < name.size() && i < 64; ++i) {
    const auto c = static_cast<unsigned char>(name[i]);
    if (c == '"' || c == '\\') {
      text += '\\';
      text += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      text += escaped;
    } else {
      text += static_cast<char>(c);
    }
  }
  if (name.size() > 64) text += "...";
  return text + "\"";
}

}  // namespace

Status validate_election_name(std::string_view name) {
  auto refuse = [&](const std::string& why) {
    return Error(errc::invalid_argument, "election name " + quoted(name) + " is invalid: " + why +
                                             " (1 to " + std::to_string(kMaxElectionName) +
                                             " bytes, no control characters, segments "
                                             "separated by single slashes)");
  };
  if (name.empty()) return refuse("it is empty");
  if (name.size() > kMaxElectionName) {
    return refuse("it is " + std::to_string(name.size()) + " bytes long");
  }
  for (char c : name) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return refuse("it contains a control character");
  }
  if (name.front() == '/') return refuse("it starts with a slash");
  if (name.back() == '/') return refuse("it ends with a slash");
  if (name.find("//") != std::string_view::npos) return refuse("it contains \"//\"");
  return {};
}

Elector::Elector(Coordinator& coordinator, Clock& clock, std::string election,
                 ElectionOptions options)
    : coordinator_(coordinator),
      clock_(clock),
      valid_name_(validate_election_name(election)),
      prefix_(std::move(election) + "/"),
      options_(options) {}

Result<std::shared_ptr<Leadership>> Elector::campaign(std::string value, CancelToken* cancel) {
  if (!valid_name_) return valid_name_.error();
  auto keeper = LeaseKeeper::start(coordinator_, clock_, options_.ttl, options_.deadline_fraction);
  if (!keeper) return keeper.error();
  const LeaseId lease = (*keeper)->lease();
  char hex[24];
  std::snprintf(hex, sizeof hex, "%llx", static_cast<unsigned long long>(lease));
  const std::string key = prefix_ + hex;
  Transaction create;
  create.compare.push_back({key, Compare::Target::kCreateRevision, Compare::Op::kEqual, 0, ""});
  create.success.push_back({Operation::Kind::kPut, key, value, lease, false});
  create.failure.push_back({Operation::Kind::kGet, key, "", 0, false});
  auto created = coordinator_.transact(create);
  if (!created) {
    (void)(*keeper)->release();
    return created.error();
  }

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
      (void)(*keeper)->release();
      return listing.error();
    }
    auto& [kvs, revision] = *listing;
    auto mine =
        std::find_if(kvs.begin(), kvs.end(), [&](const KeyValue& kv) { return kv.key == key; });
    if (mine == kvs.end()) {  // our lease expired while we waited
      forget_cancel();
      (void)(*keeper)->release();
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
      if (event.type != WatchEvent::Type::kPut) poke();  // gone, or resync: list again
    });
    if (!watch) {
      forget_cancel();
      (void)(*keeper)->release();
      return watch.error();
    }
    std::unique_lock lock(mutex);
    wake.wait(lock, [&] { return changed || (cancel != nullptr && cancel->cancelled()); });
    lock.unlock();
    (*watch)->cancel();
    if (cancel != nullptr && cancel->cancelled()) {
      forget_cancel();
      (void)(*keeper)->release();
      return Error(errc::cancelled, "campaign for " + prefix_ + " was cancelled");
    }
  }
  forget_cancel();

  // Elected. Watch our own key: if it goes (lease expired at the backend), we lost.
  std::weak_ptr<LeaseKeeper> weak = *keeper;
  auto own = coordinator_.watch(key, false, created->revision, [weak](const WatchEvent& event) {
    const bool gone = event.type == WatchEvent::Type::kDelete ||
                      (event.type == WatchEvent::Type::kResync && event.snapshot.empty());
    if (!gone) return;
    if (auto alive = weak.lock()) alive->mark_lost();
  });
  std::unique_ptr<WatchHandle> own_key_watch = own ? std::move(*own) : nullptr;
  return std::shared_ptr<Leadership>(
      new Leadership(coordinator_, *keeper, key, token, std::move(own_key_watch)));
}

Status Leadership::proclaim(std::string value) {
  auto written = fenced_transact(coordinator_, *this,
                                 {{Operation::Kind::kPut, key_, std::move(value), lease(), false}});
  if (!written) return written.error();
  return {};
}

Result<std::optional<KeyValue>> Elector::leader() {
  if (!valid_name_) return valid_name_.error();
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
  if (!valid_name_) return valid_name_.error();
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

Transaction fenced_transaction(const Leadership& leadership, std::vector<Operation> operations) {
  Transaction transaction;
  transaction.compare.push_back({leadership.key(), Compare::Target::kCreateRevision,
                                 Compare::Op::kEqual, leadership.token(), ""});
  transaction.success = std::move(operations);
  return transaction;
}

Result<TransactionResult> fenced_transact(Coordinator& coordinator, const Leadership& leadership,
                                          std::vector<Operation> operations) {
  // A leader acts only until its local deadline: a write sent later, or answered later, could
  // land after it has told everyone (and itself) that it no longer leads.
  const Duration time_left = leadership.time_left();
  if (time_left <= Duration::zero()) {
    return Error(errc::not_leader, "fenced write not sent: " + leadership.key() + " (token " +
                                       std::to_string(leadership.token()) +
                                       ") is lost or past its local deadline");
  }
  Transaction transaction = fenced_transaction(leadership, std::move(operations));
  transaction.timeout = time_left;
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

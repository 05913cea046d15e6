// A Coordinator inside the process, with etcd's semantics, driven by an injected clock: for
// unit tests (with ManualClock, leases expire exactly when the test advances time) and for a
// single process that wants the same election code without running etcd.
#pragma once

#include <deque>
#include <map>
#include <mutex>
#include <set>

#include "keel/coord/coordinator.h"

namespace keel::coord {

class InProcessCoordinator final : public Coordinator {
 public:
  // Keeps the last `history` changes for watches that start in the past.
  explicit InProcessCoordinator(Clock& clock, std::size_t history = 10000);
  ~InProcessCoordinator() override;

  Result<LeaseId> grant(Duration ttl) override;
  Result<Duration> keep_alive(LeaseId lease) override;
  Status revoke(LeaseId lease) override;
  Result<Duration> time_to_live(LeaseId lease) override;
  Result<TransactionResult> transact(const Transaction& transaction) override;
  Result<std::pair<std::vector<KeyValue>, Revision>> range(std::string_view key,
                                                           bool prefix) override;
  Result<std::unique_ptr<WatchHandle>> watch(
      std::string_view key, bool prefix, Revision after_revision,
      std::function<void(const WatchEvent&)> on_event) override;

 private:
  struct Lease {
    Duration ttl;
    TimePoint deadline;
    std::set<std::string> keys;
    TimerId timer = 0;
  };
  struct Watcher {
    std::string key;
    bool prefix;
    Revision after;  // only changes after this revision
    std::function<void(const WatchEvent&)> on_event;
    bool cancelled = false;
  };
  class Handle;

  bool matches(const Watcher& watcher, const std::string& key) const;
  void delete_key_locked(const std::string& key);
  void put_locked(const std::string& key, const std::string& value, LeaseId lease);
  void revoke_locked(LeaseId lease);
  void on_lease_timer(LeaseId lease);
  void deliver();  // runs queued events through the watchers, in order, outside mutex_

  Clock& clock_;
  const std::size_t history_limit_;
  std::mutex mutex_;
  std::map<std::string, KeyValue> store_;
  Revision revision_ = 1;
  LeaseId next_lease_ = 0x1000;
  std::map<LeaseId, Lease> leases_;
  std::deque<WatchEvent> history_;  // the last changes, oldest first
  std::deque<WatchEvent> outbox_;   // changes not yet delivered to watchers
  std::map<std::uint64_t, std::shared_ptr<Watcher>> watchers_;
  std::uint64_t next_watcher_ = 1;
  std::recursive_mutex delivering_;  // one delivery loop at a time; re-entrant for callbacks
  bool closing_ = false;
};

}  // namespace keel::coord

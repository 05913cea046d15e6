// Leader election with fencing tokens, on any Coordinator (etcd's election recipe): each
// candidate creates "<election>/<lease>" under its own lease; the key with the lowest create
// revision leads, the others wait for the key just ahead of theirs to go. The leader's
// **fencing token** is its key's create revision — it only grows across the cluster — and
// every resource the leader writes must check it (a fenced etcd transaction, or a
// FencingGuard), because no election can promise that a paused or partitioned old leader has
// noticed it was deposed.
//
// The leader renews its lease every ttl/3. It considers itself deposed at its **local
// deadline** — deadline_fraction × ttl after the last successful renewal, earlier than etcd can
// expire the lease — or as soon as its key is gone. Destroying a Leadership resigns (revokes
// the lease), so a graceful hand-over costs one round trip. The deadline also bounds what the
// leader does: a fenced write waits for its answer only until then, and is not sent after it.
//
// An election's name is 1 to 255 bytes without ASCII control characters (DEL included), in
// segments separated by single slashes: none at the start or the end, never two in a row. The
// candidates' keys live under "<name>/"; an empty name would put them under "/", among
// unrelated keys, so a bad name is refused (errc::invalid_argument) rather than campaigned on.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "keel/coord/coordinator.h"
#include "keel/coord/lease_keeper.h"

namespace keel::coord {

struct ElectionOptions {
  Duration ttl = 2s;
  double deadline_fraction = 2.0 / 3.0;  // of the TTL, counted from the last renewal
};

// Lets another thread stop a blocking campaign.
class CancelToken {
 public:
  void cancel();
  bool cancelled() const { return cancelled_.load(); }

 private:
  friend class Elector;
  std::atomic<bool> cancelled_{false};
  std::mutex mutex_;
  std::function<void()> wake_;
};

class Leadership {
 public:
  ~Leadership();  // resigns

  Revision token() const { return token_; }
  const std::string& key() const { return key_; }
  LeaseId lease() const { return keeper_->lease(); }
  // Lost: the key is gone, a renewal failed, the local deadline passed, or resign() was called.
  bool lost() const { return keeper_->lost(); }
  // Until the local deadline (on the elector's clock); zero once lost.
  Duration time_left() const { return keeper_->time_left(); }
  // Blocks until lost or until `timeout` passes on the clock; returns lost().
  bool wait_lost(Duration timeout) { return keeper_->wait_lost(timeout); }
  // Called once when leadership is lost (at once if it already is), on the thread that noticed.
  void on_lost(std::function<void()> callback) { keeper_->on_lost(std::move(callback)); }
  // Revokes the lease: the next candidate is elected as soon as the backend sees it.
  Status resign();
  // Replaces the value observers see for this leader, without a new election (a fenced put:
  // errc::not_leader once deposed).
  Status proclaim(std::string value);

 private:
  friend class Elector;
  Leadership(Coordinator& coordinator, std::shared_ptr<LeaseKeeper> keeper, std::string key,
             Revision token, std::unique_ptr<WatchHandle> own_key_watch);
  Coordinator& coordinator_;
  std::shared_ptr<LeaseKeeper> keeper_;
  std::string key_;
  Revision token_;
  std::unique_ptr<WatchHandle> own_key_watch_;
};

// Whether `name` may name an election (the rule above); the error names it and says why.
Status validate_election_name(std::string_view name);

class Elector {
 public:
  // A bad `election` name (validate_election_name) makes every call below fail with that
  // error, before anything is sent to the coordinator.
  Elector(Coordinator& coordinator, Clock& clock, std::string election,
          ElectionOptions options = {});

  // Blocks until this candidate leads (returning its Leadership), `cancel` is cancelled
  // (errc::cancelled; the candidacy is withdrawn), or the backend fails.
  Result<std::shared_ptr<Leadership>> campaign(std::string value, CancelToken* cancel = nullptr);
  // The current leader's key and value, if any.
  Result<std::optional<KeyValue>> leader();
  // Calls `on_change` with the leader now and at every change of leader.
  Result<std::unique_ptr<WatchHandle>> observe(
      std::function<void(const std::optional<KeyValue>&)> on_change);

  const std::string& prefix() const { return prefix_; }

 private:
  Coordinator& coordinator_;
  Clock& clock_;
  Status valid_name_;   // before prefix_: checks the name before it is moved into prefix_
  std::string prefix_;  // "<election>/"
  ElectionOptions options_;
};

// A transaction that runs `operations` only while `leadership`'s key still exists with its
// create revision — only while it still leads. Fails with errc::not_leader otherwise.
//
// It never runs past the leadership's local deadline: after it (or once lost otherwise) the
// transaction is not sent at all (errc::not_leader), and before it the backend waits for the
// answer at most until then (its request timeout when shorter) — running out is
// errc::unavailable, and the write may or may not have been applied.
Result<TransactionResult> fenced_transact(Coordinator& coordinator, const Leadership& leadership,
                                          std::vector<Operation> operations);

// The transaction fenced_transact sends, without its deadline: for showing that the backend
// itself refuses a deposed leader's token (`keel ctl elect --writes-after-loss`). A real
// leader calls fenced_transact.
Transaction fenced_transaction(const Leadership& leadership, std::vector<Operation> operations);

// For resources outside the coordinator: remembers the highest fencing token it has seen and
// refuses writes that carry a lower one. Thread-safe.
class FencingGuard {
 public:
  // True when `token` is at least the highest seen (and records it).
  bool admit(Revision token);
  Revision highest() const { return highest_.load(); }

 private:
  std::atomic<Revision> highest_{0};
};

}  // namespace keel::coord

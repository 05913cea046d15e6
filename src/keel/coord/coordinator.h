// The seam through which Keel talks to whatever keeps consensus (etcd in production, an
// in-process implementation in tests and single-process use). Keel never implements consensus
// itself: everything that needs agreement — leader election, membership, the shard map — is
// built on these operations, which follow etcd v3's semantics so that both backends behave
// the same: leases with a TTL, a revisioned key-value store with transactions that compare
// create/mod revisions or values, and watches from a revision.
//
// Thread-safety: every method may be called from any thread. Watch callbacks run on a thread
// of the backend's, one at a time per watch, in revision order.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::coord {

enum class errc {
  lease_not_found = 1,  // expired, revoked, or never granted
  compacted,            // a read asked for a revision older than the store keeps
  unavailable,          // the backend cannot be reached
  cancelled,            // the caller cancelled a blocking call (a campaign)
  invalid_argument,
  not_leader,  // a fenced write whose token is no longer the leader's
};
const std::error_category& coord_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), coord_category()}; }

using LeaseId = std::int64_t;   // 0: no lease
using Revision = std::int64_t;  // etcd's store revision: grows with every change

struct KeyValue {
  std::string key;
  std::string value;
  Revision create_revision = 0;  // the revision that created the key (0: absent)
  Revision mod_revision = 0;
  std::int64_t version = 0;  // writes since creation
  LeaseId lease = 0;
};

struct Compare {
  enum class Target { kCreateRevision, kModRevision, kVersion, kValue };
  enum class Op { kEqual, kNotEqual, kLess, kGreater };
  std::string key;
  Target target = Target::kCreateRevision;
  Op op = Op::kEqual;
  std::int64_t number = 0;  // for the revision and version targets; an absent key has 0
  std::string value;        // for kValue
};

struct Operation {
  enum class Kind { kPut, kDelete, kGet };
  Kind kind = Kind::kGet;
  std::string key;
  std::string value;
  LeaseId lease = 0;
  bool prefix = false;  // kDelete and kGet: every key starting with `key`
};

struct Transaction {
  std::vector<Compare> compare;
  std::vector<Operation> success;
  std::vector<Operation> failure;
  // How long the caller waits for the answer at most, when it has a deadline of its own (a
  // fenced write: the time left until its leadership's local deadline). A network backend's
  // request timeout still applies when it is shorter. Running out is errc::unavailable: the
  // transaction may or may not have been applied.
  std::optional<Duration> timeout;
};

struct TransactionResult {
  bool succeeded = false;
  Revision revision = 0;  // the store's revision after the transaction
  // One entry per operation run, in order; gets fill `kvs`.
  std::vector<std::vector<KeyValue>> kvs;
};

struct WatchEvent {
  // kResync: the changes since the watch's revision are no longer kept (etcd compacted them,
  // or the watch started before the oldest change kept). `snapshot` is the whole state of the
  // watched key(s) at revision kv.mod_revision; the watch goes on after that revision.
  enum class Type { kPut, kDelete, kResync };
  Type type = Type::kPut;
  KeyValue kv;  // for a delete: the key and the deletion's revision as mod_revision
  std::vector<KeyValue> snapshot;
};

// Stops a watch when destroyed or cancelled; after cancel() returns no callback runs.
class WatchHandle {
 public:
  virtual ~WatchHandle() = default;
  virtual void cancel() = 0;
};

class Coordinator {
 public:
  virtual ~Coordinator() = default;

  // Leases: keys attached to a lease are deleted when it expires or is revoked.
  virtual Result<LeaseId> grant(Duration ttl) = 0;
  // Renews the lease; returns its TTL. errc::lease_not_found once it has expired.
  virtual Result<Duration> keep_alive(LeaseId lease) = 0;
  virtual Status revoke(LeaseId lease) = 0;
  // Time left, or errc::lease_not_found.
  virtual Result<Duration> time_to_live(LeaseId lease) = 0;

  virtual Result<TransactionResult> transact(const Transaction& transaction) = 0;
  // The keys at `key` (or under it, with prefix), in key order, and the store's revision.
  virtual Result<std::pair<std::vector<KeyValue>, Revision>> range(std::string_view key,
                                                                   bool prefix) = 0;

  // Calls `on_event` for every change to `key` (or under it) after `after_revision`, in order.
  // When changes were compacted away, delivers a kResync event with the current state instead
  // and goes on from there, so a watch never ends on its own.
  virtual Result<std::unique_ptr<WatchHandle>> watch(
      std::string_view key, bool prefix, Revision after_revision,
      std::function<void(const WatchEvent&)> on_event) = 0;

  // Conveniences built on transact().
  Result<Revision> put(std::string_view key, std::string_view value, LeaseId lease = 0);
  Result<std::optional<KeyValue>> get(std::string_view key);
  Result<std::int64_t> erase(std::string_view key, bool prefix = false);
};

}  // namespace keel::coord

template <>
struct std::is_error_code_enum<keel::coord::errc> : std::true_type {};

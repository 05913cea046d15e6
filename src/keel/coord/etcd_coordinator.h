// The Coordinator on a real etcd (3.4 or later), through its v3 JSON gateway: POST /v3/...
// with base64 keys and values and 64-bit integers as strings. Several endpoints may be given
// (the members of one cluster); a request that fails to reach one is retried on the next when
// that cannot apply it twice (reads, lease renewals, requests that were never sent), and the
// endpoint that answered is used from then on.
//
// Watches are one HTTP stream each, read by a thread of their own; a stream that breaks (etcd
// restarted, member lost) is reopened from the last revision seen, and a revision that was
// compacted meanwhile turns into a kResync event with the current state.
//
// Timeouts on the network are real time (sockets live in it), unlike the Clock that decides
// lease deadlines in LeaseKeeper.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "keel/coord/coordinator.h"

namespace keel::coord {

struct EtcdOptions {
  std::vector<std::string> endpoints = {"http://127.0.0.1:2379"};
  Duration connect_timeout = 1s;
  Duration request_timeout = 5s;
  std::size_t max_idle_connections = 8;
  // How soon a broken watch stream is reopened: doubling from min to max while it fails.
  Duration watch_retry_min = 50ms;
  Duration watch_retry_max = 1s;
};

class EtcdCoordinator final : public Coordinator {
 public:
  // Fails with errc::unavailable, naming every endpoint and why, unless one of them answers
  // as an etcd v3 gateway within the connect and request timeouts.
  static Result<std::unique_ptr<EtcdCoordinator>> connect(EtcdOptions options);
  // Stops every watch still open and waits for its thread.
  ~EtcdCoordinator() override;

  // The endpoint requests go to now, and the etcd version it reported on connect.
  std::string endpoint() const;
  const std::string& server_version() const;

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

  struct Impl;

 private:
  explicit EtcdCoordinator(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// The first key after every key starting with `prefix` (etcd's range_end for a prefix).
std::string prefix_end(std::string_view prefix);

}  // namespace keel::coord

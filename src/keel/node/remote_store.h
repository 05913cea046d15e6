// keel::RemoteStore: a `keel node` as CQRS uses a store — a pubsub::LogSource for a
// cqrs::ProjectionRunner and an eventlog::AggregateStore for an AggregateRepository (and so for
// command handlers) — over NodeClient. A CQRS service is then a process of its own that sends
// commands to the node and keeps its read model (SQLite, PostgreSQL) from the node's events.
//
//   SteadyClock clock;
//   auto node = keel::RemoteStore::open({.url = "http://127.0.0.1:2113"}, clock);
//   orders::Shop shop(**node);                                         // commands
//   auto runner = cqrs::ProjectionRunner::open(**node, *model, orders::projection(), clock);
//   (*runner)->start();
//   auto placed = shop.place_order(order);
//   (*runner)->wait_for(placed->position, 2s);                         // read-your-writes
//
// How it maps:
// - read(): GET /v1/all with the filter. A page the node ends (`next` null) has been looked at up
//   to the head as it was before the request, which this object knows from an earlier answer.
// - head(): the last event's position + 1 (NodeClient::next_position()).
// - Commit listeners: one thread follows the whole log over Server-Sent Events from the head
//   and calls the listeners for each event; after every (re)connect it calls them once too, for
//   whatever was appended while it was away. stop (the last listener removed) cancels it at once.
// - append(): an attempt whose answer was lost (connection refused or closed, timeout, 503) is
//   sent again with the same event ids, so the node appends it once (its idempotency) — a
//   command never loses track of an event it wrote. A conflict is 409, which NodeClient gives
//   as eventlog::errc::wrong_expected_version: the repository loads and decides again.
// - Positions are trusted to stay: a node that loses acknowledged events when its machine
//   fails (durability `none` or `interval`) may reuse positions a read model has passed. Run
//   the node with `every_commit` (its default) under a read model that must not miss events.
// - No snapshots (the node has no API for them): aggregates are rebuilt from their events.
// - No parking: a node refuses appends to $ streams, so a projection on it uses kStop or kSkip.
//
// Thread-safety: every method may be called from any thread. Each call takes a NodeClient from
// a small pool (one connection each), so concurrent commands do not wait for each other.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "keel/core/clock.h"
#include "keel/eventlog/aggregate_store.h"
#include "keel/node/client.h"
#include "keel/pubsub/log_source.h"

namespace keel {

struct RemoteStoreOptions {
  std::string url = "http://127.0.0.1:2113";
  Duration timeout = 10s;  // per request (and the longest a stop waits for one in flight)
  // An append that got no answer is sent this many times in all, `retry_after` apart.
  std::uint32_t append_attempts = 3;
  // Between append attempts, and between reconnects of the commit feed.
  Duration retry_after = 200ms;
  std::size_t idle_connections = 8;  // kept open for later calls
};

class RemoteStore final : public pubsub::LogSource, public eventlog::AggregateStore {
 public:
  // Checks the URL; the node need not be up yet (calls fail until it is, and the runner retries).
  static Result<std::unique_ptr<RemoteStore>> open(RemoteStoreOptions options, Clock& clock);
  ~RemoteStore() override;
  RemoteStore(const RemoteStore&) = delete;
  RemoteStore& operator=(const RemoteStore&) = delete;

  // pubsub::LogSource
  Result<pubsub::LogPage> read(std::uint64_t from, const pubsub::Filter& filter,
                               std::size_t max) override;
  Result<std::uint64_t> head() override;
  std::uint64_t known_head() const override { return known_head_.load(); }
  std::uint64_t add_commit_listener(std::function<void(std::uint64_t)> listener) override;
  void remove_commit_listener(std::uint64_t id) override;
  bool can_park() const override { return false; }
  Status park(std::string_view stream, const eventlog::RecordedEvent& event,
              std::string_view reason) override;
  std::string describe() const override { return "keel node " + options_.url; }

  // eventlog::AggregateStore
  Result<std::vector<eventlog::RecordedEvent>> read_stream(std::string_view stream,
                                                           std::uint64_t from,
                                                           std::size_t max_count) override;
  Result<eventlog::AppendResult> append(std::string_view stream, eventlog::ExpectedVersion expected,
                                        std::span<const eventlog::EventData> events) override;

  const RemoteStoreOptions& options() const { return options_; }

 private:
  RemoteStore(RemoteStoreOptions options, Clock& clock);
  Result<std::unique_ptr<NodeClient>> take();
  void give_back(std::unique_ptr<NodeClient> client);
  template <typename Call>
  auto with_client(Call call) -> decltype(call(std::declval<NodeClient&>()));
  void note_head(std::uint64_t head);
  void notify(std::uint64_t head);
  void start_feed();
  void stop_feed();
  void run_feed();

  const RemoteStoreOptions options_;
  Clock& clock_;
  std::atomic<std::uint64_t> known_head_{0};

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<NodeClient>> idle_;  // guarded by pool_mutex_

  std::mutex lifecycle_mutex_;  // add/remove_commit_listener, one at a time
  std::mutex listeners_mutex_;  // held while the listeners are called
  std::map<std::uint64_t, std::function<void(std::uint64_t)>> listeners_;
  std::uint64_t next_listener_ = 0;

  std::mutex feed_mutex_;
  std::condition_variable feed_wake_;
  bool feed_stopping_ = false;         // guarded by feed_mutex_
  NodeClient* feed_client_ = nullptr;  // the subscription's, to cancel; guarded by feed_mutex_
  std::thread feed_;
};

}  // namespace keel

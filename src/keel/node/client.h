// keel::NodeClient: a C++ client of `keel node`'s HTTP/JSON API (docs/api.md) — append, read,
// subscribe, and consumer-group membership — for services that use a node instead of
// embedding the store. Blocking calls on one keep-alive connection (http::Connection), each
// within the client's timeout; a failed connection is opened again on the next call.
//
//   auto client = keel::NodeClient::connect({.url = "http://127.0.0.1:2113"});
//   auto appended = (*client)->append("order-42", ExpectedVersion::no_stream(), {event});
//   auto page = (*client)->read_stream("order-42", 0, 100);
//
// Errors from the node come back as Error(node::errc or eventlog::errc code, its message);
// a conflict's actual version is in Error::detail() as the store gives it.
//
// In a cluster, a stream's append and reads go to its slot's owner: the client follows the
// node's 421 `wrong_node` answers, remembers each slot's owner, and retries a write to a slot
// that is being moved (503 `slot_moving`) within its timeout. $all and groups stay on `url`.
//
// Thread-safety: one thread at a time per client; cancel() from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/eventlog/event.h"
#include "keel/eventlog/event_store.h"
#include "keel/node/api.h"
#include "keel/pubsub/consumer_group.h"
#include "keel/pubsub/reader.h"

namespace keel {

struct NodeClientOptions {
  std::string url = "http://127.0.0.1:2113";
  Duration timeout = 10s;  // per call (a poll adds its wait)
  // A subscription that hears nothing this long, not even the node's heartbeat (every 15 s by
  // default), is dead: subscribe() fails with http::errc::timeout so the caller reconnects
  // instead of waiting on a half-open connection for ever. Zero: no limit.
  Duration idle_timeout = 45s;
  // For the pauses of a retried write to a moving slot; null: a steady clock.
  Clock* clock = nullptr;
};

struct ReadPage {
  std::vector<eventlog::RecordedEvent> events;
  std::optional<std::uint64_t> next;  // where the next page starts; nullopt at the end
};

class NodeClient {
 public:
  static Result<std::unique_ptr<NodeClient>> connect(NodeClientOptions options);
  ~NodeClient();
  NodeClient(const NodeClient&) = delete;
  NodeClient& operator=(const NodeClient&) = delete;

  Result<eventlog::AppendResult> append(std::string_view stream, eventlog::ExpectedVersion expected,
                                        std::span<const eventlog::EventData> events);
  Result<ReadPage> read_stream(std::string_view stream, std::uint64_t from, std::size_t limit,
                               eventlog::Direction direction = eventlog::Direction::kForward);
  Result<ReadPage> read_all(std::uint64_t from, std::size_t limit,
                            const pubsub::Filter& filter = {},
                            eventlog::Direction direction = eventlog::Direction::kForward);
  // The log's next position (its last event's + 1; 0 when empty), as EventStore's.
  Result<std::uint64_t> next_position();

  // Follows a stream (by version) or, with `stream` empty, $all (by position, filtered) from
  // `from` inclusive, calling `on_event` for each event as it arrives, until `on_event` returns
  // false, cancel() is called, or the node ends the stream (its final event's reason is the
  // error). Reconnects are the caller's: resume from the last event's id + 1.
  Status subscribe(std::string_view stream, std::uint64_t from, const pubsub::Filter& filter,
                   const std::function<bool(const eventlog::RecordedEvent&)>& on_event);
  // (A stream's subscription that the node ends with `moved`, in a cluster, goes on at the new
  // owner by itself.)
  // Makes a subscribe() or a blocking call in progress, and every later call, return
  // http::errc::cancelled: the way to end a subscription from another thread.
  void cancel();

  // Consumer groups: `definition` is the PUT body (docs/api.md); the answers are the node's JSON.
  Result<std::string> create_group(std::string_view group, std::string_view definition);
  Result<std::string> group(std::string_view group);
  Result<std::string> groups();
  Status delete_group(std::string_view group);
  // Polls with this client's session (a random id per NodeClient): a new client under a member
  // name that an old process held makes that one leave, and its deliveries go out at once.
  Result<std::vector<pubsub::Delivery>> poll(std::string_view group, std::string_view member,
                                             std::size_t max, Duration wait);
  Status ack(std::string_view group, std::string_view member, std::span<const std::uint64_t> ids);
  Status nack(std::string_view group, std::string_view member, std::span<const std::uint64_t> ids,
              pubsub::NackAction action, std::string_view reason);
  Result<std::uint64_t> replay_parked(std::string_view group);

  // Projections (docs/api.md, "Projections"): a projection's report of its progress, and what
  // the node has of every projection, as its JSON.
  Status report_projection(const node::ProjectionReport& report);
  Result<std::string> projections();
  Status delete_projection(std::string_view projection);

  // Cluster (docs/api.md, "Cluster"): GET /v1/cluster, and POST /v1/cluster/ACTION (move,
  // rebalance, drain) with its JSON body; the answers are the node's JSON.
  Result<std::string> cluster();
  Result<std::string> change_cluster(std::string_view action, std::string_view body);
  // 421 redirects this client has followed to a slot's owner.
  std::uint64_t redirects_followed() const;

  const std::string& url() const;

 private:
  struct Impl;
  explicit NodeClient(std::unique_ptr<Impl> impl);
  // One subscription: nullopt when on_event said stop, else where to go on after a `moved`.
  Result<std::optional<std::uint64_t>> subscribe_once(
      std::string_view stream, std::uint64_t from, const pubsub::Filter& filter,
      const std::function<bool(const eventlog::RecordedEvent&)>& on_event);
  std::unique_ptr<Impl> impl_;
};

// An event as the API's JSON carries it (docs/api.md, "Events"), back into the library's type:
// data as it was stored (JSON text, text, or decoded base64), metadata "" when null.
Result<eventlog::RecordedEvent> event_from_json(std::string_view json);

}  // namespace keel

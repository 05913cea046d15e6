// `keel node`: the event store, subscriptions and consumer groups as a network service. One
// process owns one store directory; clients reach it over HTTP/JSON (docs/api.md) on the
// http/ server core. Appends go to the store's append_async(): no thread waits for their sync,
// and concurrent appends share each fsync (group commit); deletes, metadata and group writes
// run on a bounded pool of threads; consumer-group long polls wait on a pool of their own;
// subscriptions are served by one thread (subscriptions.h).
//
//   SteadyClock clock;
//   auto node = keel::node::Node::start(*keel::node::load_config("node.yaml"), clock);
//   ...
//   (*node)->stop();  // drains: no new requests, appends in flight finish, streams end
//
// Thread-safety: stop() and reload() from one thread; the rest from any.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/http/address.h"
#include "keel/node/config.h"

namespace keel::node {

class Node {
 public:
  // Opens (or creates) the store, opens the consumer groups, binds the listeners and starts
  // serving. Errors say what failed: the store (with its file and offset), a port in use.
  static Result<std::unique_ptr<Node>> start(NodeConfig config, Clock& clock);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Stops taking requests (/ready answers 503), lets requests in flight finish for up to the
  // config's drain, ends every subscription with a final `shutdown` event, stops the groups
  // (final checkpoints) and closes the store. Idempotent.
  void stop();

  // Applies what can change without a restart (limits, heartbeat, member timeout); refuses a
  // config whose data dir, listeners, workers or durability differ.
  Status reload(NodeConfig config);

  http::HostPort api() const;
  std::optional<http::HostPort> admin() const;
  // The Kafka listener's address, when the config enables it.
  std::optional<http::HostPort> kafka() const;
  std::string metrics_text() const;

 private:
  struct Impl;
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::node

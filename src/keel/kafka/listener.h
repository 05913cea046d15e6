// The Kafka listener: TCP connections on the http/ I/O core (http::Worker), size-prefixed
// request frames handed to a Broker, answers sent back in request order. Requests on one
// connection are taken while earlier ones are still being answered (up to
// `max_in_flight`), so a client that pipelines produces gets them group-committed together.
//
// Thread-safety: start() and stop() from one thread.
#pragma once

#include <cstdint>
#include <memory>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/http/address.h"
#include "keel/kafka/broker.h"

namespace keel::kafka {

struct ListenerOptions {
  http::HostPort address{"127.0.0.1", 9092};
  std::uint32_t workers = 1;
  std::uint32_t max_connections = 10000;
  std::uint32_t max_request_bytes = 100u << 20;  // one frame, as socket.request.max.bytes
  std::uint32_t max_in_flight = 64;              // requests read ahead per connection
  Duration idle_timeout = 10min;                 // as connections.max.idle.ms
};

class Listener {
 public:
  // Binds the address (port 0: any free one) without accepting yet.
  static Result<std::unique_ptr<Listener>> bind(ListenerOptions options, Broker& broker,
                                                Clock& clock);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  void start();
  // Stops accepting and closes every connection; answers still on their way are dropped.
  // Idempotent.
  void stop();
  http::HostPort bound() const;
  std::uint64_t connections() const;

  struct Impl;

 private:
  explicit Listener(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::kafka

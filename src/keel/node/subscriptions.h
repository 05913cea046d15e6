// Server-Sent Events subscriptions of `keel node`: every open subscription, caught up from where
// it starts and then kept live, by one thread. Each subscriber reads in bounded batches in turn
// (a subscriber far behind does not hold the others up), so catch-up and live delivery are the
// same loop and nothing is missed or sent twice between them. Nothing is read for a subscriber
// while its connection has no room: catching up, it is paced by what it takes; live, a
// subscriber whose bounded buffer is full when new events come is too slow — it is sent a final
// `dropped` event naming the last id it got, and disconnected. Its memory never grows past the
// bound, and it resumes with Last-Event-ID.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"
#include "keel/http/server.h"
#include "keel/pubsub/reader.h"

namespace keel::node {

struct SubscriptionOptions {
  Duration heartbeat = 15s;              // a comment line when nothing was sent for this long
  std::uint64_t buffer_bytes = 1 << 20;  // what may wait for one subscriber
  std::uint32_t max_subscribers = 1000;
  std::size_t batch_events = 256;  // read per subscriber per turn
};

// What one subscription reads: one stream by version, or $all (filtered) by position.
struct SubscriptionSpec {
  std::optional<std::string> stream;  // nullopt: $all
  pubsub::Filter filter;              // $all only
  std::uint64_t from = 0;             // the first version or position to send
};

class SubscriptionHub {
 public:
  SubscriptionHub(eventlog::EventStore& store, Clock& clock, SubscriptionOptions options,
                  metrics::Registry& registry);
  ~SubscriptionHub();
  SubscriptionHub(const SubscriptionHub&) = delete;
  SubscriptionHub& operator=(const SubscriptionHub&) = delete;

  void start();
  // Ends every subscription with a final `shutdown` event and stops the thread. Idempotent.
  void stop();

  // Starts the event stream on `responder` and serves it from now on. Fails (unavailable) at
  // max_subscribers or once stopping; the caller then answers with the error.
  Status add(SubscriptionSpec spec, http::Responder& responder);
  std::size_t size() const;
  // Ends the stream subscriptions that `moved` picks (it returns the final event's fields, as
  // JSON object members without braces; nullopt: keep it) with a final `moved` event that also
  // names the last id sent. Called when a cluster's map gives streams to another node.
  void end_streams(
      const std::function<std::optional<std::string>(const std::string& stream)>& moved);
  // New limits and heartbeat (a reload); open subscriptions keep going under them.
  void set_options(SubscriptionOptions options);

 private:
  struct Subscriber;
  // One turn for one subscriber: reads a batch and queues its frames. True when there is more
  // to read at once; `remove` when it is finished; `waiting` when it waits for room.
  bool serve(Subscriber& subscriber, const SubscriptionOptions& options, TimePoint now,
             bool& remove, bool& waiting);
  // Sends a too-slow subscriber its final `dropped` event and ends its stream.
  bool drop(Subscriber& subscriber);
  void run();

  eventlog::EventStore& store_;
  Clock& clock_;
  SubscriptionOptions options_;
  metrics::Counter& dropped_total_;
  metrics::Counter& events_total_;
  std::uint64_t listener_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::list<std::shared_ptr<Subscriber>> subscribers_;
  bool news_ = false;  // a commit or a new subscriber since the thread last looked
  bool stopping_ = false;
  std::thread thread_;
  std::vector<metrics::CallbackRegistration> gauges_;
};

}  // namespace keel::node

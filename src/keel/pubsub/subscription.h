// Catch-up subscriptions: replay history from a position, then switch to live delivery with no
// gap and no duplicate, in log order. Appending is publishing; the subscriber keeps its own
// checkpoint (the position of the last event it handled) and passes it back as StartFrom::at()
// next time.
//
//   Subscription orders(store, {.from = StartFrom::at(saved + 1), .filter = {.categories =
//   {"order"}}},
//                       [&](const RecordedEvent& e) { handle(e); saved = e.position; return
//                       Status{}; });
//   orders.start();
//   …
//   orders.stop();
//
// Thread-safety: the handler runs on the subscription's own thread, one event at a time.
// Every method may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include "keel/pubsub/reader.h"

namespace keel::pubsub {

struct SubscriptionOptions {
  StartFrom from = StartFrom::start();
  Filter filter;
  std::size_t batch = 1000;  // events read per step; bounds the memory a subscription holds
  // With a filter, matching events may be far apart: on_checkpoint is called at least every
  // this many positions looked at, so a subscriber can save progress without events.
  std::uint64_t checkpoint_every = 10000;
};

struct SubscriptionCallbacks {
  // Returning an error stops the subscription (it is then dropped with that error).
  std::function<Status(const RecordedEvent&)> on_event;
  // Called once, when history is replayed and delivery becomes live.
  std::function<void(std::uint64_t position)> on_live;
  // Every position below `position` has been looked at: resume from here.
  std::function<void(std::uint64_t position)> on_checkpoint;
  // The subscription stopped on its own: a handler error or a failed read.
  std::function<void(const Error&)> on_dropped;
};

class Subscription {
 public:
  Subscription(EventStore& store, SubscriptionOptions options, SubscriptionCallbacks callbacks);
  Subscription(EventStore& store, SubscriptionOptions options,
               std::function<Status(const RecordedEvent&)> on_event)
      : Subscription(store, std::move(options), {.on_event = std::move(on_event)}) {}
  ~Subscription() { stop(); }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;

  // Starts delivering from options.from; after stop() (also needed after a drop), start()
  // goes on from position().
  void start();
  // Waits for the handler in progress to return; no event is delivered after stop() returns.
  void stop();

  // The next position to look at (everything below it has been handled or skipped).
  std::uint64_t position() const { return position_.load(); }
  bool live() const { return live_.load(); }
  std::optional<Error> error() const;

 private:
  void run();

  EventStore& store_;
  SubscriptionOptions options_;
  SubscriptionCallbacks callbacks_;
  std::atomic<std::uint64_t> position_{0};
  std::atomic<bool> live_{false};
  bool started_ = false;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::uint64_t committed_ = 0;        // from the store's commit listener
  std::atomic<bool> stopping_{false};  // set under mutex_ (for wake_), read anywhere
  std::optional<Error> error_;
  std::uint64_t listener_ = 0;
  std::thread thread_;
};

}  // namespace keel::pubsub

#include "keel/pubsub/subscription.h"

#include <algorithm>

namespace keel::pubsub {

Subscription::Subscription(EventStore& store, SubscriptionOptions options,
                           SubscriptionCallbacks callbacks)
    : store_(store), options_(std::move(options)), callbacks_(std::move(callbacks)) {}

void Subscription::start() {
  if (thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = false;
  }
  listener_ = store_.add_commit_listener([this](std::uint64_t committed) {
    {
      std::lock_guard lock(mutex_);
      committed_ = committed;
    }
    wake_.notify_one();
  });
  // A restart (after stop(), or after a drop and stop()) goes on from where it stopped.
  if (!started_) position_ = options_.from.resolve(store_);
  started_ = true;
  {
    std::lock_guard lock(mutex_);
    error_.reset();
  }
  live_ = false;
  thread_ = std::thread([this] { run(); });
}

void Subscription::stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
  store_.remove_commit_listener(listener_);
}

std::optional<Error> Subscription::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void Subscription::run() {
  Reader reader(store_, options_.filter, position_);
  std::uint64_t last_checkpoint = reader.position();
  auto drop = [&](Error error) {
    {
      std::lock_guard lock(mutex_);
      error_ = error;
    }
    if (callbacks_.on_dropped) callbacks_.on_dropped(error);
  };
  while (true) {
    if (stopping_) return;
    auto events = reader.next(std::max<std::size_t>(options_.batch, 1));
    if (!events) return drop(events.error());
    for (const auto& event : *events) {
      if (callbacks_.on_event) {
        if (auto handled = callbacks_.on_event(event); !handled) return drop(handled.error());
      }
      position_ = event.position + 1;
      if (stopping_) return;  // an atomic read per event, no lock: this is the catch-up loop
    }
    position_ = reader.position();
    if (callbacks_.on_checkpoint &&
        reader.position() - last_checkpoint >= options_.checkpoint_every) {
      last_checkpoint = reader.position();
      callbacks_.on_checkpoint(last_checkpoint);
    }
    if (!reader.caught_up()) continue;
    if (!live_.exchange(true) && callbacks_.on_live) callbacks_.on_live(reader.position());
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return stopping_ || committed_ > reader.position(); });
  }
}

}  // namespace keel::pubsub

#include "keel/node/subscriptions.h"

#include "keel/node/api.h"

namespace keel::node {

struct SubscriptionHub::Subscriber {
  Subscriber(SubscriptionSpec s, http::Responder r, eventlog::EventStore& store)
      : spec(std::move(s)), responder(std::move(r)), reader(store, spec.filter, spec.from) {}

  SubscriptionSpec spec;
  http::Responder responder;
  pubsub::Reader reader;                 // $all
  std::uint64_t next = 0;                // a stream's next version
  std::optional<std::uint64_t> last_id;  // of the last event (or checkpoint) it was sent
  std::uint64_t checkpointed = 0;        // $all: the position the last checkpoint frame named
  TimePoint last_write{};
  std::string frames;  // scratch, reused
};

SubscriptionHub::SubscriptionHub(eventlog::EventStore& store, Clock& clock,
                                 SubscriptionOptions options, metrics::Registry& registry)
    : store_(store),
      clock_(clock),
      options_(options),
      dropped_total_(registry.counter("keel_node_subscribers_dropped_total",
                                      "Subscribers disconnected because they fell more than "
                                      "their buffer behind")),
      events_total_(registry.counter("keel_node_subscription_events_total",
                                     "Events sent to SSE subscribers")) {
  gauges_.push_back(registry.gauge_callback("keel_node_subscribers", "Open SSE subscriptions", {},
                                            [this] { return static_cast<double>(size()); }));
}

SubscriptionHub::~SubscriptionHub() { stop(); }

void SubscriptionHub::start() {
  listener_ = store_.add_commit_listener([this](std::uint64_t) {
    std::lock_guard lock(mutex_);
    news_ = true;
    wake_.notify_all();
  });
  thread_ = std::thread([this] { run(); });
}

void SubscriptionHub::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    wake_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  if (listener_ != 0) store_.remove_commit_listener(std::exchange(listener_, 0));
  std::list<std::shared_ptr<Subscriber>> left;
  {
    std::lock_guard lock(mutex_);
    left.swap(subscribers_);
  }
  for (auto& subscriber : left) {
    std::string last;
    if (subscriber->last_id) last = ",\"last_id\":" + std::to_string(*subscriber->last_id);
    subscriber->responder.write(
        "event: shutdown\ndata: {\"reason\":\"the node is shutting down\"" + last + "}\n\n",
        SIZE_MAX);
    subscriber->responder.end();
  }
}

void SubscriptionHub::set_options(SubscriptionOptions options) {
  std::lock_guard lock(mutex_);
  options_ = options;
  news_ = true;
  wake_.notify_all();
}

std::size_t SubscriptionHub::size() const {
  std::lock_guard lock(mutex_);
  return subscribers_.size();
}

Status SubscriptionHub::add(SubscriptionSpec spec, http::Responder& responder) {
  std::lock_guard lock(mutex_);
  if (stopping_) return Error(errc::unavailable, "the node is shutting down");
  if (subscribers_.size() >= options_.max_subscribers) {
    return Error(errc::unavailable, "the node has max_subscribers (" +
                                        std::to_string(options_.max_subscribers) +
                                        ") subscriptions open; try again later");
  }
  responder.start_stream(200, "text/event-stream", {{"x-accel-buffering", "no"}});
  auto subscriber = std::make_shared<Subscriber>(std::move(spec), std::move(responder), store_);
  subscriber->next = subscriber->spec.from;
  subscriber->checkpointed = subscriber->spec.from;
  subscriber->last_write = clock_.now();
  subscribers_.push_back(std::move(subscriber));
  news_ = true;
  wake_.notify_all();
  return {};
}

bool SubscriptionHub::serve(Subscriber& s, const SubscriptionOptions& options, TimePoint now,
                            bool& remove) {
  remove = false;
  if (s.responder.closed()) {
    remove = true;
    return false;
  }
  s.frames.clear();
  std::size_t read = 0;
  if (s.spec.stream) {
    auto events = store_.read_stream(*s.spec.stream, s.next, options.batch_events);
    if (!events) {
      // A hard-deleted stream: nothing more will come.
      s.frames.append("event: error\ndata: ").append(error_json(api_error(events.error())));
      s.frames.append("\n\n");
      s.responder.write(s.frames, SIZE_MAX);
      s.responder.end();
      remove = true;
      return false;
    }
    read = events->size();
    for (const auto& event : *events) {
      append_sse_event(s.frames, event, Cursor::kVersion);
      s.next = event.version + 1;
      s.last_id = event.version;
    }
  } else {
    auto events = s.reader.next(options.batch_events);
    if (!events) {
      s.frames.append("event: error\ndata: ").append(error_json(api_error(events.error())));
      s.frames.append("\n\n");
      s.responder.write(s.frames, SIZE_MAX);
      s.responder.end();
      remove = true;
      return false;
    }
    read = events->size();
    for (const auto& event : *events) {
      append_sse_event(s.frames, event, Cursor::kPosition);
      s.last_id = event.position;
    }
    // Positions looked at without a match: a checkpoint id, so a reconnect skips them, once
    // the reader has caught up (not for every batch of a long filtered catch-up).
    const std::uint64_t position = s.reader.position();
    if (events->empty() && s.reader.caught_up() && position > s.checkpointed) {
      append_sse_checkpoint(s.frames, position);
      s.last_id = position - 1;
    }
    if (events->empty()) s.checkpointed = std::max(s.checkpointed, position);
    if (!events->empty()) s.checkpointed = events->back().position + 1;
  }
  if (s.frames.empty() && now - s.last_write >= options.heartbeat) {
    append_sse_comment(s.frames, "heartbeat");
  }
  if (s.frames.empty()) return false;
  if (!s.responder.write(s.frames, options.buffer_bytes)) {
    if (s.responder.closed()) {
      remove = true;
      return false;
    }
    // Too slow for its buffer: told so, with where to resume, and let go.
    dropped_total_.inc();
    std::string last = s.last_id ? std::to_string(*s.last_id) : "null";
    s.responder.write(
        "event: dropped\ndata: {\"reason\":\"slow_consumer\",\"message\":\"the "
        "subscriber fell more than its buffer behind; reconnect with "
        "Last-Event-ID\",\"last_id\":" +
            last + "}\n\n",
        SIZE_MAX);
    s.responder.end();
    remove = true;
    return false;
  }
  events_total_.inc(read);
  s.last_write = now;
  return read >= options.batch_events;
}

void SubscriptionHub::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    news_ = false;
    auto list = subscribers_;  // served without the lock: add() may run meanwhile
    const SubscriptionOptions options = options_;
    lock.unlock();
    bool more = false;
    const TimePoint now = clock_.now();
    std::vector<std::shared_ptr<Subscriber>> finished;
    for (auto& subscriber : list) {
      // A subscriber that stopped taking bytes is dropped by the write bound: a slow one does
      // not stall the others, whose turns come regardless.
      bool remove = false;
      more = serve(*subscriber, options, now, remove) || more;
      if (remove) finished.push_back(subscriber);
    }
    lock.lock();
    for (const auto& subscriber : finished) subscribers_.remove(subscriber);
    if (more) continue;
    // Nothing more to read: wait for a commit, a new subscriber, the next heartbeat or stop().
    wait_until(clock_, wake_, lock, clock_.now() + options.heartbeat / 2,
               [this] { return news_ || stopping_; });
  }
}

}  // namespace keel::node

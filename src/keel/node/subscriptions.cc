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
  bool caught_up_once = false;           // from then on it must keep up
  std::string end_fields;                // set under the hub's lock: end it with `moved`
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

void SubscriptionHub::end_streams(
    const std::function<std::optional<std::string>(const std::string& stream)>& moved) {
  std::lock_guard lock(mutex_);
  bool any = false;
  for (auto& subscriber : subscribers_) {
    if (!subscriber->spec.stream || !subscriber->end_fields.empty()) continue;
    if (auto fields = moved(*subscriber->spec.stream)) {
      subscriber->end_fields = std::move(*fields);
      any = true;
    }
  }
  if (any) {
    news_ = true;
    wake_.notify_all();
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
                            bool& remove, bool& waiting) {
  remove = false;
  waiting = false;
  if (s.responder.closed()) {
    remove = true;
    return false;
  }
  auto finish = [&](std::string_view frame) {
    s.responder.write(frame, SIZE_MAX);
    s.responder.end();
    remove = true;
    return false;
  };
  auto too_slow = [&] {
    remove = true;
    return drop(s);
  };
  // What may still be queued for this subscriber. Until it has caught up once, it is paced by
  // its connection: nothing more is read while there is no room. After that it must keep up:
  // new events it has no room for mean it is too slow, and it is let go rather than buffered.
  const std::size_t queued = s.responder.queued();
  const std::size_t room = options.buffer_bytes > queued ? options.buffer_bytes - queued : 0;
  if (room < options.buffer_bytes / 4 && !s.caught_up_once) {
    waiting = true;
    return false;
  }
  s.frames.clear();
  std::size_t sent = 0;
  bool more = false;
  // Taken over once the frames are queued: a subscriber dropped meanwhile was sent none of them.
  std::uint64_t next = s.next;
  std::optional<std::uint64_t> last_id = s.last_id;
  if (s.spec.stream) {
    auto events = store_.read_stream(*s.spec.stream, s.next, options.batch_events);
    if (!events) {  // a hard-deleted stream: nothing more will come
      return finish("event: error\ndata: " + error_json(api_error(events.error())) + "\n\n");
    }
    more = events->size() >= options.batch_events;
    for (const auto& event : *events) {
      const std::size_t before = s.frames.size();
      append_sse_event(s.frames, event, Cursor::kVersion);
      if (s.frames.size() > room && !(sent == 0 && queued == 0)) {  // one always fits
        if (s.caught_up_once) return too_slow();
        s.frames.resize(before);  // the rest next turn
        more = true;
        break;
      }
      next = event.version + 1;
      last_id = event.version;
      ++sent;
    }
  } else {
    auto events = s.reader.next(options.batch_events);
    if (!events) {
      return finish("event: error\ndata: " + error_json(api_error(events.error())) + "\n\n");
    }
    for (const auto& event : *events) {
      const std::size_t before = s.frames.size();
      append_sse_event(s.frames, event, Cursor::kPosition);
      if (s.frames.size() > room && !(sent == 0 && queued == 0)) {  // one always fits
        if (s.caught_up_once) return too_slow();
        s.frames.resize(before);
        s.reader.seek(event.position);  // the rest next turn
        break;
      }
      last_id = event.position;
      ++sent;
    }
    more = !s.reader.caught_up();
    // Positions looked at without a match: a checkpoint id, so that a reconnect skips them,
    // once the reader has caught up (not for every batch of a long filtered catch-up).
    const std::uint64_t position = s.reader.position();
    if (sent == 0 && !more && position > s.checkpointed) {
      append_sse_checkpoint(s.frames, position);
      last_id = position - 1;
    }
    s.checkpointed = std::max(s.checkpointed, position);
  }
  if (!more) s.caught_up_once = true;
  if (s.frames.empty() && now - s.last_write >= options.heartbeat) {
    append_sse_comment(s.frames, "heartbeat");
  }
  if (s.frames.empty()) return false;
  if (!s.responder.write(s.frames, SIZE_MAX)) {
    remove = true;  // the client went away
    return false;
  }
  s.next = next;
  s.last_id = last_id;
  events_total_.inc(sent);
  s.last_write = now;
  return more;
}

bool SubscriptionHub::drop(Subscriber& s) {
  dropped_total_.inc();
  const std::string last = s.last_id ? std::to_string(*s.last_id) : "null";
  s.responder.write(
      "event: dropped\ndata: {\"reason\":\"slow_consumer\",\"message\":\"the "
      "subscriber fell more than its buffer behind; reconnect with "
      "Last-Event-ID\",\"last_id\":" +
          last + "}\n\n",
      SIZE_MAX);
  s.responder.end();
  return false;
}

void SubscriptionHub::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    news_ = false;
    std::vector<std::shared_ptr<Subscriber>> moved;
    for (auto it = subscribers_.begin(); it != subscribers_.end();) {
      if ((*it)->end_fields.empty()) {
        ++it;
        continue;
      }
      moved.push_back(*it);
      it = subscribers_.erase(it);
    }
    auto list = subscribers_;  // served without the lock: add() may run meanwhile
    const SubscriptionOptions options = options_;
    lock.unlock();
    bool more = false;
    bool pacing = false;  // a subscriber catching up waits for room on its connection
    for (auto& subscriber : moved) {
      std::string last;
      if (subscriber->last_id) last = ",\"last_id\":" + std::to_string(*subscriber->last_id);
      subscriber->responder.write("event: moved\ndata: {" + subscriber->end_fields + last + "}\n\n",
                                  SIZE_MAX);
      subscriber->responder.end();
    }
    const TimePoint now = clock_.now();
    std::vector<std::shared_ptr<Subscriber>> finished;
    for (auto& subscriber : list) {
      // A subscriber that stopped taking bytes is dropped by the write bound: a slow one does
      // not stall the others, whose turns come regardless.
      bool remove = false;
      bool waiting = false;
      more = serve(*subscriber, options, now, remove, waiting) || more;
      pacing = pacing || waiting;
      if (remove) finished.push_back(subscriber);
    }
    lock.lock();
    for (const auto& subscriber : finished) subscribers_.remove(subscriber);
    if (more) continue;
    // Nothing more to read: wait for a commit, a new subscriber, the next heartbeat or stop()
    // (or, while a subscriber waits for room, a few milliseconds).
    wait_until(clock_, wake_, lock, clock_.now() + (pacing ? Duration(5ms) : options.heartbeat / 2),
               [this] { return news_ || stopping_; });
  }
}

}  // namespace keel::node

#include "keel/node/remote_store.h"

#include <algorithm>

#include "keel/core/log.h"
#include "keel/http/client.h"
#include "keel/node/api.h"

namespace keel {

namespace {

// The node's most rows per read (docs/api.md).
constexpr std::size_t kPage = 1000;

// No answer came, or the node could not take the request now: the same request may be sent
// again. Anything else is the node's answer.
bool no_answer(const Error& error) {
  return error.is(http::errc::connect_failed) || error.is(http::errc::timeout) ||
         error.is(http::errc::closed) || error.is(http::errc::bad_response) ||
         error.is(node::errc::unavailable);
}

}  // namespace

RemoteStore::RemoteStore(RemoteStoreOptions options, Clock& clock)
    : options_(std::move(options)), clock_(clock) {}

RemoteStore::~RemoteStore() { stop_feed(); }

Result<std::unique_ptr<RemoteStore>> RemoteStore::open(RemoteStoreOptions options, Clock& clock) {
  if (auto url = http::parse_url(options.url); !url) return url.error();
  if (options.append_attempts == 0) options.append_attempts = 1;
  return std::unique_ptr<RemoteStore>(new RemoteStore(std::move(options), clock));
}

Result<std::unique_ptr<NodeClient>> RemoteStore::take() {
  {
    std::lock_guard lock(pool_mutex_);
    if (!idle_.empty()) {
      auto client = std::move(idle_.back());
      idle_.pop_back();
      return client;
    }
  }
  return NodeClient::connect({.url = options_.url, .timeout = options_.timeout});
}

void RemoteStore::give_back(std::unique_ptr<NodeClient> client) {
  std::lock_guard lock(pool_mutex_);
  if (idle_.size() < options_.idle_connections) idle_.push_back(std::move(client));
}

template <typename Call>
auto RemoteStore::with_client(Call call) -> decltype(call(std::declval<NodeClient&>())) {
  auto client = take();
  if (!client) return client.error();
  auto result = call(**client);
  // A client whose connection failed opens a new one on its next call: worth keeping either way.
  give_back(std::move(*client));
  return result;
}

void RemoteStore::note_head(std::uint64_t head) {
  std::uint64_t seen = known_head_.load();
  while (seen < head && !known_head_.compare_exchange_weak(seen, head)) {
  }
}

Result<pubsub::LogPage> RemoteStore::read(std::uint64_t from, const pubsub::Filter& filter,
                                          std::size_t max) {
  // Read before the request: the node's head when it answers is at least this.
  const std::uint64_t head_before = known_head_.load();
  auto page = with_client([&](NodeClient& client) {
    return client.read_all(from, std::clamp<std::size_t>(max, 1, kPage), filter);
  });
  if (!page) return page.error();
  pubsub::LogPage out{std::move(page->events), from};
  if (page->next) {
    out.next = std::max(from, *page->next);
  } else {
    // The node read to its head: at least every position below head_before, and the events.
    out.next = std::max(from, head_before);
    if (!out.events.empty()) out.next = std::max(out.next, out.events.back().position + 1);
  }
  note_head(out.next);
  return out;
}

Result<std::uint64_t> RemoteStore::head() {
  auto head = with_client([](NodeClient& client) { return client.next_position(); });
  if (head) note_head(*head);
  return head;
}

Status RemoteStore::park(std::string_view stream, const eventlog::RecordedEvent&,
                         std::string_view) {
  return Error(node::errc::system_stream,
               describe() + " does not take appends to '" + std::string(stream) +
                   "' ($ streams are the node's own): a projection on a node cannot park");
}

Result<std::vector<eventlog::RecordedEvent>> RemoteStore::read_stream(std::string_view stream,
                                                                      std::uint64_t from,
                                                                      std::size_t max_count) {
  std::vector<eventlog::RecordedEvent> events;
  while (events.size() < max_count) {
    const std::size_t limit = std::min(kPage, max_count - events.size());
    auto page =
        with_client([&](NodeClient& client) { return client.read_stream(stream, from, limit); });
    if (!page) return page.error();
    for (auto& event : page->events) events.push_back(std::move(event));
    if (!page->next || *page->next <= from) break;
    from = *page->next;
  }
  return events;
}

Result<eventlog::AppendResult> RemoteStore::append(std::string_view stream,
                                                   eventlog::ExpectedVersion expected,
                                                   std::span<const eventlog::EventData> events) {
  for (std::uint32_t attempt = 1;; ++attempt) {
    auto appended =
        with_client([&](NodeClient& client) { return client.append(stream, expected, events); });
    if (appended) {
      note_head(appended->last_position + 1);
      return appended;
    }
    // The same ids again: if the first attempt was appended, the node answers with its result
    // (duplicate) rather than a conflict, so the caller learns where its events are.
    if (!no_answer(appended.error()) || attempt >= options_.append_attempts) return appended;
    log::get("node")->debug("append to '{}' on {}: {}; sending it again", stream, options_.url,
                            appended.error().message());
    sleep_until(clock_, clock_.now() + options_.retry_after);
  }
}

// ---- commit listeners: one subscription to the whole log, while anyone listens ----

std::uint64_t RemoteStore::add_commit_listener(std::function<void(std::uint64_t)> listener) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  std::uint64_t id = 0;
  bool first = false;
  {
    std::lock_guard lock(listeners_mutex_);
    id = ++next_listener_;
    listeners_.emplace(id, std::move(listener));
    first = listeners_.size() == 1;
  }
  if (first) start_feed();
  return id;
}

void RemoteStore::remove_commit_listener(std::uint64_t id) {
  std::lock_guard lifecycle(lifecycle_mutex_);
  bool last = false;
  {
    std::lock_guard lock(listeners_mutex_);  // waits for a call in progress
    listeners_.erase(id);
    last = listeners_.empty();
  }
  if (last) stop_feed();
}

void RemoteStore::notify(std::uint64_t head) {
  note_head(head);
  std::lock_guard lock(listeners_mutex_);
  for (auto& [id, listener] : listeners_) listener(head);
}

void RemoteStore::start_feed() {
  std::lock_guard lock(feed_mutex_);
  feed_stopping_ = false;
  feed_ = std::thread([this] { run_feed(); });
}

void RemoteStore::stop_feed() {
  std::thread feed;
  {
    std::lock_guard lock(feed_mutex_);
    feed_stopping_ = true;
    if (feed_client_) feed_client_->cancel();
    feed_wake_.notify_all();
    feed = std::move(feed_);
  }
  if (feed.joinable()) feed.join();
}

void RemoteStore::run_feed() {
  std::unique_lock lock(feed_mutex_);
  while (!feed_stopping_) {
    lock.unlock();
    auto client = NodeClient::connect({.url = options_.url, .timeout = options_.timeout});
    Status ended;
    if (client) {
      lock.lock();
      if (feed_stopping_) break;
      feed_client_ = client->get();
      lock.unlock();
      // From the head: what came before it, the listeners read themselves after this call.
      auto head = (*client)->next_position();
      if (head) {
        notify(*head);
        ended = (*client)->subscribe("", *head, {.include_system = true},
                                     [this](const eventlog::RecordedEvent& event) {
                                       notify(event.position + 1);
                                       return true;
                                     });
      } else {
        ended = head.error();
      }
      lock.lock();
      feed_client_ = nullptr;
    } else {
      ended = client.error();
      lock.lock();
    }
    if (feed_stopping_) break;
    log::get("node")->debug("following {}: {}; again in {} ms", options_.url,
                            ended ? "the subscription ended" : ended.error().message(),
                            to_ms(options_.retry_after));
    wait_until(clock_, feed_wake_, lock, clock_.now() + options_.retry_after,
               [this] { return feed_stopping_; });
  }
}

}  // namespace keel

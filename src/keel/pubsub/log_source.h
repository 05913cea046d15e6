// What a reader that follows the log from its own position needs — a projection runner, say:
// pages of $all through a filter, the head, and a call when something was committed.
// EmbeddedLog gives it from an EventStore in this process; keel::RemoteStore
// (keel/node/remote_store.h) from a `keel node` over HTTP, so that a read model can be kept by a
// process of its own.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"
#include "keel/pubsub/reader.h"

namespace keel::pubsub {

struct LogPage {
  std::vector<RecordedEvent> events;  // the matching events, in log order
  std::uint64_t next = 0;             // every position below it was looked at
};

class LogSource {
 public:
  virtual ~LogSource() = default;

  // Up to `max` events matching `filter` at or after `from`. `next` moves past everything looked
  // at, matching or not, so an empty page may still have made progress. Never skips: an event
  // below `next` that matches is in this page.
  virtual Result<LogPage> read(std::uint64_t from, const Filter& filter, std::size_t max) = 0;
  // The log's next position, asked now (over the network for a remote log, so it may fail).
  virtual Result<std::uint64_t> head() = 0;
  // The highest head seen so far, without asking anyone: for progress and metrics.
  virtual std::uint64_t known_head() const = 0;

  // Calls `listener` with the new head after commits, as EventStore::add_commit_listener does:
  // it must only note it and wake its own thread. A remote log may also call it when it cannot
  // know what it missed (after reconnecting), so a listener reads from its own position and
  // takes a call as "look again", never as "exactly one commit".
  virtual std::uint64_t add_commit_listener(std::function<void(std::uint64_t)> listener) = 0;
  // Waits for a call in progress to finish.
  virtual void remove_commit_listener(std::uint64_t id) = 0;

  // Whether park() can record events set aside ($ streams: a node refuses to append to them).
  virtual bool can_park() const = 0;
  // Appends a `$parked` record of `event` to the system stream `stream` (pubsub::park_event()).
  virtual Status park(std::string_view stream, const RecordedEvent& event,
                      std::string_view reason) = 0;

  // "the embedded store at DIR", "keel node http://…": for messages.
  virtual std::string describe() const = 0;
};

// Up to `max` events at or after `from` matching `filter`, read as pubsub::Reader reads (the
// category or type index when the filter names exactly one, $all otherwise).
Result<LogPage> read_matching(EventStore& store, const Filter& filter, std::uint64_t from,
                              std::size_t max);

// The EventStore in this process.
class EmbeddedLog final : public LogSource {
 public:
  explicit EmbeddedLog(EventStore& store) : store_(store) {}

  Result<LogPage> read(std::uint64_t from, const Filter& filter, std::size_t max) override {
    return read_matching(store_, filter, from, max);
  }
  Result<std::uint64_t> head() override { return store_.next_position(); }
  std::uint64_t known_head() const override { return store_.next_position(); }
  std::uint64_t add_commit_listener(std::function<void(std::uint64_t)> listener) override {
    return store_.add_commit_listener(std::move(listener));
  }
  void remove_commit_listener(std::uint64_t id) override { store_.remove_commit_listener(id); }
  bool can_park() const override { return true; }
  Status park(std::string_view stream, const RecordedEvent& event,
              std::string_view reason) override;
  std::string describe() const override;
  EventStore& store() { return store_; }

 private:
  EventStore& store_;
};

}  // namespace keel::pubsub

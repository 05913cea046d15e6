// Reading the log through a filter, from a position, in order: the one loop under catch-up
// subscriptions, consumer groups and projections.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"

namespace keel::pubsub {

using eventlog::EventStore;
using eventlog::RecordedEvent;

// Which events a reader delivers. An event matches when each non-empty list has an entry that
// matches it (lists are ORs, kinds are ANDed); with every list empty all events match. System
// streams ('$…', Keel's own bookkeeping) are left out unless include_system is set.
struct Filter {
  std::vector<std::string> categories;       // "order" matches order-1, order-2, …
  std::vector<std::string> event_types;      // exact type names
  std::vector<std::string> stream_prefixes;  // "order-4" matches order-4, order-42, …
  bool include_system = false;

  bool matches(const RecordedEvent& event) const;
  // "category=order,payment type=OrderPlaced" or "all": for logs and for the group's record.
  std::string describe() const;
};

// Where a subscription or group starts: the first event, the next event to be appended, or a
// position (the next one after a checkpoint the subscriber kept).
struct StartFrom {
  enum class Kind { kStart, kEnd, kPosition };
  Kind kind = Kind::kStart;
  std::uint64_t position = 0;

  static StartFrom start() { return {Kind::kStart, 0}; }
  static StartFrom end() { return {Kind::kEnd, 0}; }
  static StartFrom at(std::uint64_t position) { return {Kind::kPosition, position}; }
  std::uint64_t resolve(const EventStore& store) const;
};

// Reads matching events forward. Uses the store's category or type index when the filter names
// exactly one category or one type, and scans $all otherwise.
//
// Thread-safety: one thread at a time.
class Reader {
 public:
  Reader(EventStore& store, Filter filter, std::uint64_t position)
      : store_(store), filter_(std::move(filter)), position_(position) {}

  // Up to `max` matching events at or after position(), in log order. position() moves past
  // everything looked at, matching or not, so an empty answer may still have made progress;
  // caught_up() says whether there is nothing more to read now.
  Result<std::vector<RecordedEvent>> next(std::size_t max);
  std::uint64_t position() const { return position_; }
  void seek(std::uint64_t position) { position_ = position; }
  bool caught_up() const { return position_ >= store_.next_position(); }
  const Filter& filter() const { return filter_; }

 private:
  EventStore& store_;
  Filter filter_;
  std::uint64_t position_;
};

}  // namespace keel::pubsub

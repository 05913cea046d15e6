// What an AggregateRepository needs from a store: a stream read forward from a version, an
// append with an expected version, and — optionally — snapshots. EventStore gives all of it
// (EmbeddedAggregateStore below); keel::RemoteStore (keel/node/remote_store.h) gives it over a
// `keel node`'s API, without snapshots. A conflict is errc::wrong_expected_version from both, so
// the repository retries alike.
//
// Thread-safety: as the implementation's; both of Keel's may be used from many threads.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "keel/eventlog/event_store.h"

namespace keel::eventlog {

class AggregateStore {
 public:
  virtual ~AggregateStore() = default;

  // Up to `max_count` events of `stream` from version `from`, in order; fewer only at its end.
  virtual Result<std::vector<RecordedEvent>> read_stream(std::string_view stream,
                                                         std::uint64_t from,
                                                         std::size_t max_count) = 0;
  virtual Result<AppendResult> append(std::string_view stream, ExpectedVersion expected,
                                      std::span<const EventData> events) = 0;
  // A store without snapshots loads none and keeps none: the state is rebuilt from events.
  virtual Result<std::optional<Snapshot>> load_snapshot(std::string_view /*stream*/) {
    return std::optional<Snapshot>();
  }
  virtual Status save_snapshot(std::string_view /*stream*/, const Snapshot& /*snapshot*/) {
    return {};
  }
};

// The embedded store, as it is: each call is the EventStore's own.
class EmbeddedAggregateStore final : public AggregateStore {
 public:
  explicit EmbeddedAggregateStore(EventStore& store) : store_(store) {}

  Result<std::vector<RecordedEvent>> read_stream(std::string_view stream, std::uint64_t from,
                                                 std::size_t max_count) override {
    return store_.read_stream(stream, from, max_count);
  }
  Result<AppendResult> append(std::string_view stream, ExpectedVersion expected,
                              std::span<const EventData> events) override {
    return store_.append(stream, expected, events);
  }
  Result<std::optional<Snapshot>> load_snapshot(std::string_view stream) override {
    return store_.load_snapshot(stream);
  }
  Status save_snapshot(std::string_view stream, const Snapshot& snapshot) override {
    return store_.save_snapshot(stream, snapshot);
  }

 private:
  EventStore& store_;
};

}  // namespace keel::eventlog

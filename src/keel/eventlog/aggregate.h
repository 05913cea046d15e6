// The aggregate pattern on top of the store: load an aggregate's state (latest snapshot plus the
// events after it), decide what a command means given that state, append the resulting events
// with the version the state was built from, and on a conflict load again and decide again —
// a bounded number of times.
//
//   AggregateRepository<Cart> carts(store, {.category = "cart", .apply = apply_cart_event});
//   auto result = carts.execute("42", [&](const Cart& cart) -> Result<std::vector<EventData>> {
//     if (cart.checked_out) return Error(errc::invalid_argument, "cart 42 is checked out");
//     return std::vector<EventData>{item_added(sku, quantity)};
//   });
//
// The store is the embedded EventStore or any AggregateStore (aggregate_store.h) — such as
// keel::RemoteStore, a `keel node` over HTTP: the same loading, deciding and retrying on a
// conflict, with snapshots where the store keeps them.
//
// Thread-safety: as the store's; a repository keeps no state of its own between calls.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/eventlog/aggregate_store.h"
#include "keel/eventlog/event_store.h"

namespace keel::eventlog {

template <typename State>
struct AggregateType {
  std::string category;  // streams are "<category>-<id>"
  State initial{};
  std::function<void(State&, const RecordedEvent&)> apply;
  // Snapshots: written every `snapshot_every` events when both codecs are set (0: never).
  std::uint64_t snapshot_every = 0;
  std::function<std::string(const State&)> encode_snapshot;
  std::function<std::optional<State>(std::string_view)> decode_snapshot;
};

template <typename State>
struct LoadedAggregate {
  State state;
  std::optional<std::uint64_t> version;  // nullopt: no events yet
  std::uint64_t events_replayed = 0;     // after the snapshot, if any
};

template <typename State>
class AggregateRepository {
 public:
  using Decide = std::function<Result<std::vector<EventData>>(const State&)>;

  AggregateRepository(EventStore& store, AggregateType<State> type, std::uint32_t max_attempts = 5)
      : embedded_(std::make_shared<EmbeddedAggregateStore>(store)),
        store_(*embedded_),
        type_(std::move(type)),
        max_attempts_(max_attempts) {}
  AggregateRepository(AggregateStore& store, AggregateType<State> type,
                      std::uint32_t max_attempts = 5)
      : store_(store), type_(std::move(type)), max_attempts_(max_attempts) {}

  std::string stream_of(std::string_view id) const {
    return type_.category + "-" + std::string(id);
  }

  Result<LoadedAggregate<State>> load(std::string_view id) {
    const std::string stream = stream_of(id);
    LoadedAggregate<State> loaded{type_.initial, std::nullopt, 0};
    std::uint64_t from = 0;
    if (type_.decode_snapshot) {
      auto snapshot = store_.load_snapshot(stream);
      if (!snapshot) return snapshot.error();
      if (snapshot->has_value()) {
        if (auto state = type_.decode_snapshot((*snapshot)->data)) {
          loaded.state = std::move(*state);
          loaded.version = (*snapshot)->version;
          from = (*snapshot)->version + 1;
        }
      }
    }
    constexpr std::size_t kPage = 1000;
    while (true) {
      auto page = store_.read_stream(stream, from, kPage);
      if (!page) return page.error();
      for (const auto& event : *page) {
        type_.apply(loaded.state, event);
        loaded.version = event.version;
        ++loaded.events_replayed;
      }
      if (page->size() < kPage) break;
      from = page->back().version + 1;
    }
    return loaded;
  }

  // Loads, decides and appends; on a version conflict (another writer got there first), loads
  // again and decides again, up to max_attempts. The decision's own errors come back as they
  // are. An empty decision appends nothing and returns the current version.
  Result<AppendResult> execute(std::string_view id, const Decide& decide) {
    const std::string stream = stream_of(id);
    std::optional<Error> conflict;
    for (std::uint32_t attempt = 0; attempt < max_attempts_; ++attempt) {
      auto loaded = load(id);
      if (!loaded) return loaded.error();
      auto events = decide(loaded->state);
      if (!events) return events.error();
      ExpectedVersion expected =
          loaded->version ? ExpectedVersion::exact(*loaded->version) : ExpectedVersion::no_stream();
      auto appended = store_.append(stream, expected, *events);
      if (appended.ok()) {
        maybe_snapshot(stream, *loaded, *events, *appended);
        return appended;
      }
      if (!appended.error().is(errc::wrong_expected_version)) return appended.error();
      conflict = appended.error();
    }
    return Error(errc::wrong_expected_version,
                 "stream '" + stream + "': gave up after " + std::to_string(max_attempts_) +
                     " attempts lost to concurrent writers; last: " + conflict->message());
  }

 private:
  void maybe_snapshot(const std::string& stream, const LoadedAggregate<State>& loaded,
                      const std::vector<EventData>& events, const AppendResult& appended) {
    if (type_.snapshot_every == 0 || !type_.encode_snapshot || events.empty()) return;
    std::uint64_t before = loaded.version ? *loaded.version + 1 : 0;
    if (before / type_.snapshot_every == (appended.last_version + 1) / type_.snapshot_every) return;
    // Rebuild the state as of the new version from what we already have.
    State state = loaded.state;
    for (std::size_t i = 0; i < events.size(); ++i) {
      type_.apply(state, recorded(events[i], stream, appended.first_version + i,
                                  appended.first_position + i, 0));
    }
    // A failed snapshot costs only replay time later; the events are already durable.
    (void)store_.save_snapshot(stream, {appended.last_version, type_.encode_snapshot(state)});
  }

  std::shared_ptr<AggregateStore> embedded_;  // the EventStore's adapter, when given one
  AggregateStore& store_;
  AggregateType<State> type_;
  std::uint32_t max_attempts_;
};

}  // namespace keel::eventlog

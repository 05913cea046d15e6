// What consumer groups and projections share about the system streams they keep: the names
// that may go into those streams' names, and the record of an event set aside (parked).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "keel/core/result.h"
#include "keel/eventlog/event_store.h"

namespace keel::pubsub {

// A group's or projection's name: 1 to 200 letters, digits, '_', '-' or '.'.
bool valid_name(std::string_view name);

// Appends to the system stream `stream` a `$parked` record of `event`: its stream, version,
// position and type, why it was parked, and (for a group) how often it was delivered.
Status park_event(eventlog::EventStore& store, std::string_view stream,
                  const eventlog::RecordedEvent& event, std::string_view reason,
                  std::optional<std::uint32_t> deliveries = std::nullopt);

}  // namespace keel::pubsub

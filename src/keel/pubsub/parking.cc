#include "keel/pubsub/parking.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "keel/core/uuid.h"

namespace keel::pubsub {

bool valid_name(std::string_view name) {
  return !name.empty() && name.size() <= 200 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
  });
}

Status park_event(eventlog::EventStore& store, std::string_view stream,
                  const eventlog::RecordedEvent& event, std::string_view reason,
                  std::optional<std::uint32_t> deliveries) {
  nlohmann::json record{{"stream", event.stream},
                        {"version", event.version},
                        {"position", event.position},
                        {"type", event.type},
                        {"reason", reason}};
  if (deliveries) record["deliveries"] = *deliveries;
  eventlog::EventData parked{Uuid::random_v4(), "$parked", record.dump(), ""};
  auto appended = store.append_system(stream, eventlog::ExpectedVersion::any(), {parked});
  if (!appended) return appended.error();
  return {};
}

}  // namespace keel::pubsub

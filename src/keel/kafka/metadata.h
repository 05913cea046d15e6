// How a Kafka record's key, headers, timestamp and null value live in an event's metadata:
// {"kafka": {"timestamp": MS, "key": "...", "value": null, "headers": [{"key": "...",
// "value": "..."}]}}, with "key_base64" / "value_base64" for bytes that are not UTF-8
// (docs/kafka.md). Written by Produce, read by Fetch and ListOffsets for every record, so the
// reader has a one-pass path for exactly what the writer writes, and JSON parsing for anything
// an HTTP client put there.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/kafka/records.h"

namespace keel::kafka {

struct KafkaFields {
  std::int64_t timestamp = -1;
  std::optional<std::string> key;
  bool null_value = false;
  std::vector<std::pair<std::string, std::optional<std::string>>> headers;
};

// The metadata of the event that `record` becomes.
std::string record_metadata(const Record& record);
// The "kafka" object of an event's metadata; nullopt when it has none.
std::optional<KafkaFields> kafka_fields(std::string_view metadata);

}  // namespace keel::kafka

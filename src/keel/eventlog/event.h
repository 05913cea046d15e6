// Events as the store keeps them, and the version a writer expects a stream to be at.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "keel/core/uuid.h"

namespace keel::eventlog {

// What a writer hands to append().
struct EventData {
  Uuid id;  // the idempotency key: appending the same ids again returns the first result
  std::string type;
  std::string data;      // bytes, usually JSON
  std::string metadata;  // JSON, may be empty
};

struct RecordedEvent {
  Uuid id;
  std::string stream;
  std::string type;
  std::string data;
  std::string metadata;
  std::uint64_t version = 0;      // 0-based position within its stream
  std::uint64_t position = 0;     // 0-based, gap-free position in the whole log ($all)
  std::int64_t timestamp_ns = 0;  // Unix time of the commit
};

// `data` as recorded in `stream` at `version` and `position`.
inline RecordedEvent recorded(const EventData& data, std::string_view stream, std::uint64_t version,
                              std::uint64_t position, std::int64_t timestamp_ns) {
  return {data.id,  std::string(stream), data.type, data.data, data.metadata, version,
          position, timestamp_ns};
}

// `order-42` → `order`: the part before the first '-', or the whole name without one.
inline std::string_view category_of(std::string_view stream) {
  return stream.substr(0, stream.find('-'));
}

class ExpectedVersion {
 public:
  enum class Kind { kAny, kNoStream, kStreamExists, kExact };

  static ExpectedVersion any() { return ExpectedVersion(Kind::kAny, 0); }
  static ExpectedVersion no_stream() { return ExpectedVersion(Kind::kNoStream, 0); }
  static ExpectedVersion stream_exists() { return ExpectedVersion(Kind::kStreamExists, 0); }
  // The version of the stream's last event.
  static ExpectedVersion exact(std::uint64_t version) {
    return ExpectedVersion(Kind::kExact, version);
  }

  Kind kind() const { return kind_; }
  std::uint64_t version() const { return version_; }
  std::string to_string() const;

 private:
  ExpectedVersion(Kind kind, std::uint64_t version) : kind_(kind), version_(version) {}
  Kind kind_;
  std::uint64_t version_;
};

}  // namespace keel::eventlog

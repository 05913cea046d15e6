// The event store's error codes.
#pragma once

#include <system_error>

namespace keel::eventlog {

enum class errc {
  wrong_expected_version = 1,  // the stream is not at the version the append expected
  stream_deleted,              // hard-deleted (tombstoned): it can never be written again
  duplicate_event_id,          // an event id already used with other content or elsewhere
  invalid_argument,            // a bad stream name, an empty type, a batch over the limits
  disk_full,                   // no space for a new segment; retry when space returns
  io_error,                    // a read, write or sync failed; the store stops taking appends
  corrupt,                     // a record or the index failed its checks; names file and offset
  closed,
};

const std::error_category& eventlog_category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), eventlog_category()};
}

}  // namespace keel::eventlog

template <>
struct std::is_error_code_enum<keel::eventlog::errc> : std::true_type {};

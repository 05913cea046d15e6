// The log's record framing, shared by the store, `keel eventlog verify/dump` and the fuzz
// target. docs/formats/eventlog.md is the prose version.
//
//   u32 length   bytes after this 8-byte header
//   u32 crc32c   of those bytes
//   u8  kind     1 = event, 2 = stream metadata
//   u8  flags    bit 0: the last record of its append (an append is atomic: recovery drops a
//                trailing append that lacks this record)
//   u16 zero
//   kind 1: u64 position, u64 version, i64 timestamp_ns, 16-byte id, u16 stream length,
//           u16 type length, u32 data length, u32 metadata length, then the four byte strings
//   kind 2: u16 stream length, u32 json length, then the stream name and the metadata JSON
//   kind 3: u64 first position, u64 count: positions scavenging removed (always last in its
//           append), so that the log accounts for every position and a hole is damage
//
// Integers are little-endian. A length of zero marks the end of the written part of a
// segment (segments are preallocated with zeros).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "keel/core/result.h"
#include "keel/eventlog/event.h"

namespace keel::eventlog {

inline constexpr std::size_t kRecordHeaderBytes = 8;
inline constexpr std::uint32_t kMaxRecordBytes = 64u << 20;

enum class RecordKind : std::uint8_t { kEvent = 1, kMetadata = 2, kRemoved = 3 };
inline constexpr std::uint8_t kLastInAppend = 1;

struct MetadataRecord {
  std::string stream;
  std::string json;
};

// Positions [first_position, first_position + count) that a scavenge removed.
struct RemovedRange {
  std::uint64_t first_position = 0;
  std::uint64_t count = 0;
};

// Appends one framed record to `out`.
void encode_event(const RecordedEvent& event, bool last_in_append, std::string& out);
void encode_metadata(std::string_view stream, std::string_view json, bool last_in_append,
                     std::string& out);
// A removed range is an append of its own: always flagged last-in-append.
void encode_removed(RemovedRange range, std::string& out);

// A view of one framed record at the start of `bytes`.
struct RecordView {
  enum class Status { kOk, kEnd, kTruncated, kBadCrc, kMalformed };
  Status status = Status::kEnd;
  std::size_t size = 0;  // header + payload, when kOk
  RecordKind kind = RecordKind::kEvent;
  std::uint8_t flags = 0;
  std::string_view payload;
};
// Checks the frame (length, CRC, kind) without decoding the body. kEnd: a zero length (the
// unwritten, zeroed rest of a segment).
RecordView read_frame(std::string_view bytes);

// Decodes a kOk frame's body. Fails with a message naming what is wrong.
Result<RecordedEvent> decode_event(const RecordView& frame);
Result<MetadataRecord> decode_metadata(const RecordView& frame);
Result<RemovedRange> decode_removed(const RecordView& frame);
// Just the position of an event frame (cheap; for scans).
std::uint64_t event_position(const RecordView& frame);

// Offset just past the last non-zero byte of `segment` at or after `from`; `from` when none.
std::uint64_t written_end(std::string_view segment, std::uint64_t from);
// Whether the 8 bytes at the start of `bytes` could be a record header written by the store:
// a length of 4 to 64 MiB, a known kind, no unknown flag, zero padding. (Neither the CRC nor
// whether the record fits in `bytes` is checked.)
bool plausible_header(std::string_view bytes);
// The torn-tail rule, shared by recovery and `keel eventlog verify`: a damaged record in the
// last segment is a torn write when no intact record (a plausible header whose CRC matches)
// starts anywhere after it; otherwise it is damage with good data after it. Linear in the
// bytes scanned, whatever they hold: every candidate's CRC comes from running CRCs, not from
// reading its payload again.
bool intact_record_after(std::string_view segment, std::uint64_t from);

}  // namespace keel::eventlog

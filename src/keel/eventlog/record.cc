#include "keel/eventlog/record.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <queue>
#include <vector>

#include "keel/eventlog/crc32c.h"
#include "keel/eventlog/errc.h"

namespace keel::eventlog {
namespace {

template <typename T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the formats are little-endian, as is every target
  out.append(bytes, sizeof(T));
}

template <typename T>
T get(std::string_view bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

void finish_frame(std::string& out, std::size_t start) {
  auto length = static_cast<std::uint32_t>(out.size() - start - kRecordHeaderBytes);
  std::uint32_t crc = crc32c(out.data() + start + kRecordHeaderBytes, length);
  std::memcpy(out.data() + start, &length, 4);
  std::memcpy(out.data() + start + 4, &crc, 4);
}

void begin_frame(std::string& out, RecordKind kind, bool last) {
  put<std::uint32_t>(out, 0);
  put<std::uint32_t>(out, 0);
  put<std::uint8_t>(out, static_cast<std::uint8_t>(kind));
  put<std::uint8_t>(out, last ? kLastInAppend : 0);
  put<std::uint16_t>(out, 0);
}

constexpr std::size_t kEventFixed = 4 + 8 + 8 + 8 + 16 + 2 + 2 + 4 + 4;
constexpr std::size_t kMetadataFixed = 4 + 2 + 4;
constexpr std::size_t kRemovedFixed = 4 + 8 + 8;

bool known_kind(std::uint8_t kind) {
  return kind >= static_cast<std::uint8_t>(RecordKind::kEvent) &&
         kind <= static_cast<std::uint8_t>(RecordKind::kRemoved);
}

Error malformed(const std::string& what) {
  return Error(errc::corrupt, "malformed record: " + what);
}

}  // namespace

void encode_event(const RecordedEvent& event, bool last_in_append, std::string& out) {
  std::size_t start = out.size();
  begin_frame(out, RecordKind::kEvent, last_in_append);
  put<std::uint64_t>(out, event.position);
  put<std::uint64_t>(out, event.version);
  put<std::int64_t>(out, event.timestamp_ns);
  out.append(reinterpret_cast<const char*>(event.id.bytes().data()), 16);
  put<std::uint16_t>(out, static_cast<std::uint16_t>(event.stream.size()));
  put<std::uint16_t>(out, static_cast<std::uint16_t>(event.type.size()));
  put<std::uint32_t>(out, static_cast<std::uint32_t>(event.data.size()));
  put<std::uint32_t>(out, static_cast<std::uint32_t>(event.metadata.size()));
  out += event.stream;
  out += event.type;
  out += event.data;
  out += event.metadata;
  finish_frame(out, start);
}

void encode_metadata(std::string_view stream, std::string_view json, bool last_in_append,
                     std::string& out) {
  std::size_t start = out.size();
  begin_frame(out, RecordKind::kMetadata, last_in_append);
  put<std::uint16_t>(out, static_cast<std::uint16_t>(stream.size()));
  put<std::uint32_t>(out, static_cast<std::uint32_t>(json.size()));
  out += stream;
  out += json;
  finish_frame(out, start);
}

void encode_removed(RemovedRange range, std::string& out) {
  std::size_t start = out.size();
  begin_frame(out, RecordKind::kRemoved, true);
  put<std::uint64_t>(out, range.first_position);
  put<std::uint64_t>(out, range.count);
  finish_frame(out, start);
}

RecordView read_frame(std::string_view bytes) {
  RecordView view;
  if (bytes.size() < 4) {
    view.status = RecordView::Status::kEnd;
    for (char c : bytes) {
      if (c != 0) view.status = RecordView::Status::kTruncated;
    }
    return view;
  }
  auto length = get<std::uint32_t>(bytes, 0);
  if (length == 0) {
    view.status = RecordView::Status::kEnd;
    return view;
  }
  if (length > kMaxRecordBytes || length < 4) {
    view.status = RecordView::Status::kMalformed;
    return view;
  }
  if (bytes.size() < kRecordHeaderBytes + length) {
    view.status = RecordView::Status::kTruncated;
    return view;
  }
  std::string_view payload = bytes.substr(kRecordHeaderBytes, length);
  if (crc32c(payload.data(), payload.size()) != get<std::uint32_t>(bytes, 4)) {
    view.status = RecordView::Status::kBadCrc;
    return view;
  }
  auto kind = static_cast<std::uint8_t>(payload[0]);
  if (!known_kind(kind)) {
    view.status = RecordView::Status::kMalformed;
    return view;
  }
  view.status = RecordView::Status::kOk;
  view.size = kRecordHeaderBytes + length;
  view.kind = static_cast<RecordKind>(kind);
  view.flags = static_cast<std::uint8_t>(payload[1]);
  view.payload = payload;
  return view;
}

std::uint64_t event_position(const RecordView& frame) {
  return get<std::uint64_t>(frame.payload, 4);
}

Result<RecordedEvent> decode_event(const RecordView& frame) {
  std::string_view p = frame.payload;
  if (frame.kind != RecordKind::kEvent || p.size() < kEventFixed) {
    return malformed("event record shorter than its fixed fields");
  }
  RecordedEvent event;
  event.position = get<std::uint64_t>(p, 4);
  event.version = get<std::uint64_t>(p, 12);
  event.timestamp_ns = get<std::int64_t>(p, 20);
  event.id = Uuid::from_bytes(reinterpret_cast<const std::uint8_t*>(p.data() + 28));
  std::size_t stream_length = get<std::uint16_t>(p, 44);
  std::size_t type_length = get<std::uint16_t>(p, 46);
  std::size_t data_length = get<std::uint32_t>(p, 48);
  std::size_t metadata_length = get<std::uint32_t>(p, 52);
  if (kEventFixed + stream_length + type_length + data_length + metadata_length != p.size()) {
    return malformed("event field lengths do not add up to the record length");
  }
  std::size_t at = kEventFixed;
  event.stream.assign(p.substr(at, stream_length));
  at += stream_length;
  event.type.assign(p.substr(at, type_length));
  at += type_length;
  event.data.assign(p.substr(at, data_length));
  at += data_length;
  event.metadata.assign(p.substr(at, metadata_length));
  return event;
}

Result<MetadataRecord> decode_metadata(const RecordView& frame) {
  std::string_view p = frame.payload;
  if (frame.kind != RecordKind::kMetadata || p.size() < kMetadataFixed) {
    return malformed("metadata record shorter than its fixed fields");
  }
  std::size_t stream_length = get<std::uint16_t>(p, 4);
  std::size_t json_length = get<std::uint32_t>(p, 6);
  if (kMetadataFixed + stream_length + json_length != p.size()) {
    return malformed("metadata field lengths do not add up to the record length");
  }
  return MetadataRecord{std::string(p.substr(kMetadataFixed, stream_length)),
                        std::string(p.substr(kMetadataFixed + stream_length, json_length))};
}

Result<RemovedRange> decode_removed(const RecordView& frame) {
  std::string_view p = frame.payload;
  if (frame.kind != RecordKind::kRemoved || p.size() != kRemovedFixed) {
    return malformed("removed-range record of the wrong length");
  }
  if ((frame.flags & kLastInAppend) == 0) {
    return malformed("removed-range record not flagged last-in-append");
  }
  RemovedRange range{get<std::uint64_t>(p, 4), get<std::uint64_t>(p, 12)};
  if (range.count == 0 || range.first_position + range.count < range.first_position) {
    return malformed("removed-range record with an impossible range");
  }
  return range;
}

std::uint64_t written_end(std::string_view segment, std::uint64_t from) {
  std::uint64_t end = segment.size();
  while (end > from && segment[end - 1] == 0) --end;
  return std::max(end, from);
}

bool plausible_header(std::string_view bytes) {
  if (bytes.size() < kRecordHeaderBytes + 4) return false;
  auto length = get<std::uint32_t>(bytes, 0);
  if (length < 4 || length > kMaxRecordBytes) return false;
  auto kind = static_cast<std::uint8_t>(bytes[8]);
  auto flags = static_cast<std::uint8_t>(bytes[9]);
  return known_kind(kind) && (flags & ~kLastInAppend) == 0 && bytes[10] == 0 && bytes[11] == 0;
}

namespace {

// CRC-32C arithmetic on the raw register (before the final inversion), in the reflected bit
// order of the table code: bit 31 holds x^0. Processing n bytes from register S gives
// f(0, bytes) XOR S·x^(8n) mod P, so the CRC of any range follows from the registers at its two
// ends — which is what lets intact_record_after() check every candidate in one pass.
constexpr std::uint32_t kReflectedPolynomial = 0x82F63B78;

std::uint32_t multiply_mod_p(std::uint32_t a, std::uint32_t b) {
  std::uint32_t product = 0;
  for (std::uint32_t bit = 1u << 31; bit != 0; bit >>= 1) {
    if (a & bit) product ^= b;
    b = (b & 1) ? (b >> 1) ^ kReflectedPolynomial : b >> 1;
  }
  return product;
}

// x^(8n) mod P for n up to kMaxRecordBytes, from two tables: n's low 16 bits and the rest.
class ByteShifts {
 public:
  ByteShifts() : low_(1 << 16), high_((kMaxRecordBytes >> 16) + 1) {
    constexpr std::uint32_t kOne = 1u << 31;
    const std::uint32_t x8 = 1u << 23;  // x^8
    low_[0] = kOne;
    for (std::size_t i = 1; i < low_.size(); ++i) low_[i] = multiply_mod_p(low_[i - 1], x8);
    const std::uint32_t x8_65536 = multiply_mod_p(low_.back(), x8);  // x^(8·65536)
    high_[0] = kOne;
    for (std::size_t i = 1; i < high_.size(); ++i)
      high_[i] = multiply_mod_p(high_[i - 1], x8_65536);
  }
  // The register `state` advanced over n zero bytes.
  std::uint32_t advance(std::uint32_t state, std::uint32_t n) const {
    return multiply_mod_p(multiply_mod_p(low_[n & 0xffff], high_[n >> 16]), state);
  }

 private:
  std::vector<std::uint32_t> low_;
  std::vector<std::uint32_t> high_;
};

}  // namespace

bool intact_record_after(std::string_view segment, std::uint64_t from) {
  const std::uint64_t end = written_end(segment, from);
  static const ByteShifts shifts;
  // Candidates wait here, keyed by where their payload ends, with the register value the
  // running CRC must have there for the candidate's CRC to match.
  using Pending = std::pair<std::uint64_t, std::uint32_t>;
  std::priority_queue<Pending, std::vector<Pending>, std::greater<>> pending;
  std::uint32_t state = ~0u;  // the running register over segment[from, at)
  for (std::uint64_t at = from; at < segment.size(); ++at) {
    while (!pending.empty() && pending.top().first == at) {
      if (pending.top().second == state) return true;
      pending.pop();
    }
    if (pending.empty() && at + kRecordHeaderBytes >= end) break;
    if (at + kRecordHeaderBytes < end && plausible_header(segment.substr(at)) &&
        get<std::uint32_t>(segment, at) <= segment.size() - at - kRecordHeaderBytes) {
      auto length = get<std::uint32_t>(segment, at);
      auto crc = get<std::uint32_t>(segment, at + 4);
      // At the payload's start the register will be the one after segment[from, at + 8).
      std::uint32_t at_payload = state;
      for (std::size_t i = 0; i < kRecordHeaderBytes; ++i)
        at_payload = crc32c_register_byte(at_payload, static_cast<std::uint8_t>(segment[at + i]));
      // The payload from a fresh register gives ~crc; from at_payload it gives that XOR
      // (at_payload XOR ~0)·x^(8·length).
      std::uint32_t expected = ~crc ^ shifts.advance(at_payload ^ ~0u, length);
      pending.emplace(at + kRecordHeaderBytes + length, expected);
    }
    state = crc32c_register_byte(state, static_cast<std::uint8_t>(segment[at]));
  }
  while (!pending.empty() && pending.top().first == segment.size()) {
    if (pending.top().second == state) return true;
    pending.pop();
  }
  return false;
}

}  // namespace keel::eventlog

#include "keel/eventlog/record.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

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
  if (kind != static_cast<std::uint8_t>(RecordKind::kEvent) &&
      kind != static_cast<std::uint8_t>(RecordKind::kMetadata)) {
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

std::string segment_file_name(std::uint64_t number) {
  char name[32];
  std::snprintf(name, sizeof name, "%08llu.seg", static_cast<unsigned long long>(number));
  return name;
}

std::uint64_t written_end(std::string_view segment, std::uint64_t from) {
  std::uint64_t end = segment.size();
  while (end > from && segment[end - 1] == 0) --end;
  return std::max(end, from);
}

bool intact_record_after(std::string_view segment, std::uint64_t from) {
  const std::uint64_t end = written_end(segment, from);
  for (std::uint64_t at = from; at + kRecordHeaderBytes < end; ++at) {
    // Cheap header checks first; only a plausible candidate costs a CRC.
    std::uint32_t length = 0;
    std::memcpy(&length, segment.data() + at, 4);
    if (length < 4 || length > segment.size() - at - kRecordHeaderBytes) continue;
    auto kind = static_cast<std::uint8_t>(segment[at + 8]);
    auto flags = static_cast<std::uint8_t>(segment[at + 9]);
    if ((kind != static_cast<std::uint8_t>(RecordKind::kEvent) &&
         kind != static_cast<std::uint8_t>(RecordKind::kMetadata)) ||
        (flags & ~kLastInAppend) != 0 || segment[at + 10] != 0 || segment[at + 11] != 0) {
      continue;
    }
    if (read_frame(segment.substr(at)).status == RecordView::Status::kOk) return true;
  }
  return false;
}

}  // namespace keel::eventlog

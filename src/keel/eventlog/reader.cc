// Reading: one event by position (checked against what the index promised), the stream, $all,
// category and type reads, and the rules that hide events (metadata, deletes).
#include <algorithm>

#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {

Result<RecordedEvent> EventStore::Impl::read_at(std::uint64_t position) const {
  std::uint64_t location = index_.locations[position];
  auto segment = segments_.find(location_segment(location));
  if (segment == segments_.end()) {
    return Error(errc::corrupt,
                 "event " + std::to_string(position) + " points at a missing segment");
  }
  RecordView frame;
  if (location_offset(location) < segment->second->capacity)
    frame = read_frame(segment->second->bytes_from(location_offset(location)));
  if (frame.status != RecordView::Status::kOk || frame.kind != RecordKind::kEvent) {
    return Error(errc::corrupt,
                 segment->second->path + " offset " + std::to_string(location_offset(location)) +
                     ": the record of event " + std::to_string(position) + " fails its checks");
  }
  auto event = decode_event(frame);
  // The index is trusted to point at records, not to point at the right one: a checkpoint
  // with a valid CRC may still hold wrong locations. Never serve another event.
  if (event && event->position != position) {
    return Error(errc::corrupt,
                 segment->second->path + " offset " + std::to_string(location_offset(location)) +
                     ": the index has event " + std::to_string(position) +
                     " here, but the record there is event " + std::to_string(event->position));
  }
  return event;
}

bool EventStore::Impl::hidden_by_metadata(const RecordedEvent& event) const {
  if (!index_.any_metadata) return false;
  auto stream = index_.streams.find(event.stream);
  if (stream == index_.streams.end()) return false;
  // A soft delete hides through its truncate-before rule; a tombstone hides everything.
  return stream->second.metadata.tombstone || !visible(stream->second, event);
}

bool EventStore::Impl::visible(const StreamIndex& stream, const RecordedEvent& event) const {
  const StreamMetadata& rules = stream.metadata.rules;
  if (rules.truncate_before && event.version < *rules.truncate_before) return false;
  // Of the stream's events, the last max_count stay (written so that a huge max_count, meaning
  // "no limit", cannot overflow).
  if (rules.max_count && *rules.max_count < stream.positions.size() &&
      event.version < stream.positions.size() - *rules.max_count) {
    return false;
  }
  if (rules.max_age &&
      event.timestamp_ns <
          clock_.unix_now_ns() -
              std::chrono::duration_cast<std::chrono::nanoseconds>(*rules.max_age).count()) {
    return false;
  }
  return true;
}

Result<std::vector<RecordedEvent>> EventStore::Impl::read_stream(std::string_view name,
                                                                 std::uint64_t from,
                                                                 std::size_t max_count,
                                                                 Direction direction) {
  max_count = std::min<std::size_t>(max_count, options_.max_read_count);
  std::shared_lock index_lock(index_mutex_);
  std::vector<RecordedEvent> events;
  auto it = index_.streams.find(std::string(name));
  if (it == index_.streams.end()) return events;
  const StreamIndex& stream = it->second;
  if (stream.metadata.tombstone)
    return Error(errc::stream_deleted, "stream '" + std::string(name) + "' was hard-deleted");
  if (stream.metadata.soft_deleted) return events;
  const auto& positions = stream.positions;
  if (positions.empty()) return events;
  auto consider = [&](std::uint64_t version) -> Status {
    std::uint64_t position = positions[version];
    if (position == kRemovedLocation || index_.locations[position] == kRemovedLocation) return {};
    auto event = read_at(position);
    if (!event) return event.error();
    if (event->stream != it->first || event->version != version) {
      return Error(errc::corrupt, "event " + std::to_string(position) + " is " + event->stream +
                                      "@" + std::to_string(event->version) +
                                      ", but the index has " + it->first + "@" +
                                      std::to_string(version) + " there");
    }
    if (visible(stream, *event)) events.push_back(std::move(*event));
    return {};
  };
  if (direction == Direction::kForward) {
    for (std::uint64_t v = from; v < positions.size() && events.size() < max_count; ++v) {
      if (auto ok = consider(v); !ok) return ok.error();
    }
  } else {
    std::uint64_t v = std::min<std::uint64_t>(from, positions.size() - 1);
    for (;; --v) {
      if (events.size() >= max_count) break;
      if (auto ok = consider(v); !ok) return ok.error();
      if (v == 0) break;
    }
  }
  return events;
}

Result<std::vector<RecordedEvent>> EventStore::Impl::read_all(std::uint64_t from,
                                                              std::size_t max_count,
                                                              Direction direction) {
  max_count = std::min<std::size_t>(max_count, options_.max_read_count);
  std::shared_lock index_lock(index_mutex_);
  std::vector<RecordedEvent> events;
  const std::uint64_t end = committed_position_;
  if (end == 0) return events;
  auto consider = [&](std::uint64_t position) -> Status {
    if (index_.locations[position] == kRemovedLocation) return {};
    auto event = read_at(position);
    if (!event) return event.error();
    if (hidden_by_metadata(*event)) return {};
    events.push_back(std::move(*event));
    return {};
  };
  if (direction == Direction::kForward) {
    events.reserve(std::min<std::uint64_t>(max_count, end > from ? end - from : 0));
    for (std::uint64_t p = from; p < end && events.size() < max_count; ++p) {
      if (auto ok = consider(p); !ok) return ok.error();
    }
  } else {
    for (std::uint64_t p = std::min(from, end - 1);; --p) {
      if (events.size() >= max_count) break;
      if (auto ok = consider(p); !ok) return ok.error();
      if (p == 0) break;
    }
  }
  return events;
}

Result<std::vector<RecordedEvent>> EventStore::Impl::read_indexed(bool category,
                                                                  std::string_view name,
                                                                  std::uint64_t position,
                                                                  std::size_t max_count) {
  max_count = std::min<std::size_t>(max_count, options_.max_read_count);
  std::shared_lock index_lock(index_mutex_);
  std::vector<RecordedEvent> events;
  const auto& map = category ? index_.categories : index_.types;
  auto it = map.find(std::string(name));
  if (it == map.end()) return events;
  const auto& positions = it->second;
  for (auto p = std::lower_bound(positions.begin(), positions.end(), position);
       p != positions.end() && events.size() < max_count; ++p) {
    if (*p >= committed_position_ || index_.locations[*p] == kRemovedLocation) continue;
    auto event = read_at(*p);
    if (!event) return event.error();
    if (hidden_by_metadata(*event)) continue;
    events.push_back(std::move(*event));
  }
  return events;
}

EventStore::StreamList EventStore::Impl::list_streams(std::string_view prefix, std::size_t limit) {
  EventStore::StreamList out;
  {
    std::shared_lock index_lock(index_mutex_);
    for (const auto& [name, stream] : index_.streams) {
      if (!name.starts_with(prefix) || stream.positions.empty() || stream.metadata.soft_deleted ||
          stream.metadata.tombstone) {
        continue;
      }
      out.streams.push_back({name, stream.positions.size() - 1});
    }
  }
  // The first `limit` by name, without sorting every match.
  auto by_name = [](const auto& a, const auto& b) { return a.name < b.name; };
  if (out.streams.size() > limit) {
    std::nth_element(out.streams.begin(), out.streams.begin() + static_cast<std::ptrdiff_t>(limit),
                     out.streams.end(), by_name);
    out.streams.resize(limit);
    out.more = true;
  }
  std::sort(out.streams.begin(), out.streams.end(), by_name);
  return out;
}

std::optional<std::uint64_t> EventStore::Impl::stream_version(std::string_view name) {
  std::shared_lock index_lock(index_mutex_);
  auto it = index_.streams.find(std::string(name));
  if (it == index_.streams.end() || it->second.positions.empty() ||
      it->second.metadata.soft_deleted || it->second.metadata.tombstone) {
    return std::nullopt;
  }
  return it->second.positions.size() - 1;
}

StoredMetadata EventStore::Impl::stored_metadata(std::string_view name) {
  std::shared_lock index_lock(index_mutex_);
  auto it = index_.streams.find(std::string(name));
  return it == index_.streams.end() ? StoredMetadata{} : it->second.metadata;
}

}  // namespace keel::eventlog

// Model-based randomized test of EventStore: a random sequence of operations runs against a
// real store in a temporary directory and against a plain in-memory model of what the store
// promises, and after every operation the two must agree — the outcome of each append (its
// result, or which error), and every read field by field.
//
// Segments are 8 KiB, so appends roll over and scavenging has sealed segments to work on. The
// model places each record in a segment the way the store does (record sizes come from
// record.h's encoders), so it knows exactly which events a scavenge removes and which segments
// it rewrites or deletes. Time does not pass for max_age: the rules drawn are max_count and
// truncate_before, and the manual clock only gives every append its own timestamp.
//
// Seeds 1..kSeeds run by default. A failure names its seed and step; KEEL_SEED=<n> runs that
// seed alone, KEEL_SEEDS=<n> runs seeds 1..n (a longer search), KEEL_STEPS=<n> changes the
// number of steps per seed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "keel/eventlog/event_store.h"
#include "keel/eventlog/event_store_impl.h"  // StoredMetadata: the model sizes metadata records
#include "keel/eventlog/record.h"
#include "keel/eventlog/test_support.h"

namespace keel::eventlog {
namespace {

using testing::TempDir;

constexpr std::uint64_t kSegmentBytes = 8 * 1024;
constexpr std::uint64_t kSeeds = 40;
constexpr std::uint64_t kStepsPerSeed = 300;
constexpr std::uint64_t kEverything = 1000000;

const std::vector<std::string> kStreams = {"order-1", "order-2", "order-3",
                                           "cart-1",  "cart-2",  "user-1"};
const std::vector<std::string> kCategories = {"order", "cart", "user", "none"};
const std::vector<std::string> kTypes = {"Created", "Changed", "Closed"};

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? std::strtoull(text, nullptr, 10) : fallback;
}

std::string errc_name(std::optional<errc> code) {
  if (!code) return "ok";
  switch (*code) {
    case errc::wrong_expected_version:
      return "wrong_expected_version";
    case errc::stream_deleted:
      return "stream_deleted";
    case errc::duplicate_event_id:
      return "duplicate_event_id";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::disk_full:
      return "disk_full";
    case errc::io_error:
      return "io_error";
    case errc::corrupt:
      return "corrupt";
    case errc::closed:
      return "closed";
  }
  return "?";
}

std::string optional_text(const std::optional<std::uint64_t>& value) {
  return value ? std::to_string(*value) : "none";
}

std::string rules_text(const StreamMetadata& rules) {
  return "{max_count=" + optional_text(rules.max_count) +
         ", truncate_before=" + optional_text(rules.truncate_before) +
         ", max_age=" + (rules.max_age ? std::to_string(rules.max_age->count()) + "ns" : "none") +
         "}";
}

std::uint64_t event_record_bytes(const RecordedEvent& event) {
  std::string bytes;
  encode_event(event, false, bytes);
  return bytes.size();
}

std::uint64_t metadata_record_bytes(const std::string& stream, const StoredMetadata& metadata) {
  std::string bytes;
  encode_metadata(stream, metadata.to_json(), true, bytes);
  return bytes.size();
}

// ---- the model ----

struct ModelStream {
  std::uint64_t next_version = 0;
  std::vector<std::uint64_t> positions;  // by version
  StoredMetadata metadata;
  bool exists() const { return next_version > 0 && !metadata.soft_deleted; }
};

struct ModelRecord {
  std::optional<std::uint64_t> event_position;  // none for a metadata record
  std::uint64_t bytes = 0;
  std::optional<RemovedRange> removed;  // a scavenge's removed-range record
};

std::uint64_t removed_record_bytes() {
  std::string bytes;
  encode_removed({0, 1}, bytes);
  return bytes.size();
}

struct ModelSegment {
  std::uint64_t file_bytes = kSegmentBytes;  // preallocated; a rewritten one holds just its records
  std::vector<ModelRecord> records;
};

struct ModelAppend {
  std::optional<errc> error;
  std::int64_t detail = 0;  // the actual version, for wrong_expected_version
  AppendResult result;
  bool wrote = false;  // false for an empty batch: nothing to compare but the outcome
};

struct ModelRead {
  std::optional<errc> error;
  std::vector<RecordedEvent> events;
};

// What the store should do, with no I/O: streams, the log, the ids it remembers, and where each
// record sits in the segment files.
class Model {
 public:
  Model() { segments_[1] = {}; }

  ModelAppend append(const std::string& stream_name, ExpectedVersion expected,
                     const std::vector<EventData>& batch, std::int64_t now_ns) {
    ModelAppend out;
    std::set<Uuid> distinct;
    for (const auto& event : batch) {
      if (!distinct.insert(event.id).second) return fail(out, errc::duplicate_event_id);
    }
    if (auto duplicate = find_duplicate(stream_name, batch)) return *duplicate;

    ModelStream& stream = streams_[stream_name];
    if (stream.metadata.tombstone) return fail(out, errc::stream_deleted);
    if (!expected_ok(stream, expected, out.detail)) return fail(out, errc::wrong_expected_version);
    if (batch.empty()) return out;

    std::vector<RecordedEvent> recorded;
    std::vector<ModelRecord> records;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      RecordedEvent event{batch[i].id,        stream_name,
                          batch[i].type,      batch[i].data,
                          batch[i].metadata,  stream.next_version + i,
                          events_.size() + i, now_ns};
      records.push_back({event.position, event_record_bytes(event)});
      recorded.push_back(std::move(event));
    }
    // Appending to a soft-deleted stream brings it back; the store records that too.
    StoredMetadata after = stream.metadata;
    after.soft_deleted = false;
    if (stream.metadata.soft_deleted)
      records.push_back({std::nullopt, metadata_record_bytes(stream_name, after)});
    if (!place(records)) return fail(out, errc::invalid_argument);

    for (auto& event : recorded) {
      ids_[event.id] = event.position;
      stream.positions.push_back(event.position);
      events_.push_back(std::move(event));
      removed_.push_back(false);
    }
    stream.next_version += batch.size();
    stream.metadata = after;
    out.wrote = true;
    out.result.first_version = recorded.front().version;
    out.result.last_version = recorded.back().version;
    out.result.first_position = recorded.front().position;
    out.result.last_position = recorded.back().position;
    return out;
  }

  std::optional<errc> set_metadata(const std::string& stream_name, const StreamMetadata& rules) {
    ModelStream& stream = streams_[stream_name];
    if (stream.metadata.tombstone) return errc::stream_deleted;
    StoredMetadata stored = stream.metadata;
    stored.rules = rules;
    place({{std::nullopt, metadata_record_bytes(stream_name, stored)}});
    stream.metadata = stored;
    return std::nullopt;
  }

  std::optional<errc> delete_stream(const std::string& stream_name, ExpectedVersion expected,
                                    bool hard, std::int64_t& detail) {
    ModelStream& stream = streams_[stream_name];
    if (stream.metadata.tombstone) return errc::stream_deleted;
    if (!expected_ok(stream, expected, detail)) return errc::wrong_expected_version;
    StoredMetadata stored = stream.metadata;
    if (hard) {
      stored.tombstone = true;
    } else {
      // Everything appended so far stays hidden, also once the stream is recreated — even when
      // it was already soft-deleted.
      stored.soft_deleted = true;
      stored.rules.truncate_before = stream.next_version;
    }
    place({{std::nullopt, metadata_record_bytes(stream_name, stored)}});
    stream.metadata = stored;
    return std::nullopt;
  }

  // Scavenge works on sealed segments (all but the active one): it removes the events readers
  // can no longer see — except a stream's last event, which keeps the stream's version and the
  // log's next position known when the index is rebuilt — and keeps every metadata record.
  ScavengeReport scavenge() {
    ScavengeReport report;
    for (auto it = segments_.begin(); it != segments_.end() && it->first < active_;) {
      ModelSegment& segment = it->second;
      std::vector<ModelRecord> kept;
      std::uint64_t kept_bytes = 0;
      std::vector<std::uint64_t> removed;
      std::optional<RemovedRange> run;  // removed events not yet written as a range
      auto keep = [&](const ModelRecord& record) {
        kept.push_back(record);
        kept_bytes += record.bytes;
      };
      auto end_run = [&] {
        if (run) keep({std::nullopt, removed_record_bytes(), *std::exchange(run, std::nullopt)});
      };
      bool events_left = false;
      for (const ModelRecord& record : segment.records) {
        if (record.removed) {
          if (run && run->first_position + run->count == record.removed->first_position) {
            run->count += record.removed->count;  // an earlier range grows
            continue;
          }
          end_run();
          keep(record);
          continue;
        }
        bool stays = true;
        if (record.event_position) {
          const RecordedEvent& event = events_[*record.event_position];
          const ModelStream& stream = streams_.at(event.stream);
          stays = (!stream.metadata.tombstone && visible(stream, event)) ||
                  event.version + 1 == stream.next_version;
        }
        if (stays) {
          end_run();
          keep(record);
          events_left |= record.event_position.has_value();
        } else {
          removed.push_back(*record.event_position);
          if (run) {
            ++run->count;
          } else {
            run = RemovedRange{*record.event_position, 1};
          }
        }
      }
      end_run();
      if (removed.empty()) {
        ++it;
        continue;
      }
      for (std::uint64_t position : removed) removed_[position] = true;
      report.events_removed += removed.size();
      report.bytes_reclaimed += segment.file_bytes - kept_bytes;
      // A segment is never deleted (segment numbers have no gaps): one with no event left
      // holds its removed ranges and metadata records.
      ++(events_left ? report.segments_rewritten : report.segments_emptied);
      segment.records = std::move(kept);
      segment.file_bytes = kept_bytes;
      ++it;
    }
    return report;
  }

  // A rebuilt index remembers the ids of the events still in the log, not of scavenged ones.
  void rebuild_ids() {
    ids_.clear();
    for (std::uint64_t p = 0; p < events_.size(); ++p) {
      if (!removed_[p]) ids_[events_[p].id] = p;
    }
  }

  ModelRead read_stream(const std::string& name, std::uint64_t from, std::size_t max_count,
                        Direction direction) const {
    ModelRead out;
    auto it = streams_.find(name);
    if (it == streams_.end()) return out;
    const ModelStream& stream = it->second;
    if (stream.metadata.tombstone) {
      out.error = errc::stream_deleted;
      return out;
    }
    if (stream.metadata.soft_deleted || stream.next_version == 0) return out;
    auto consider = [&](std::uint64_t version) {
      std::uint64_t position = stream.positions[version];
      if (!removed_[position] && visible(stream, events_[position]))
        out.events.push_back(events_[position]);
    };
    if (direction == Direction::kForward) {
      for (std::uint64_t v = from; v < stream.next_version && out.events.size() < max_count; ++v)
        consider(v);
    } else {
      for (std::uint64_t v = std::min(from, stream.next_version - 1);; --v) {
        if (out.events.size() >= max_count) break;
        consider(v);
        if (v == 0) break;
      }
    }
    return out;
  }

  ModelRead read_all(std::uint64_t from, std::size_t max_count, Direction direction) const {
    ModelRead out;
    const std::uint64_t end = events_.size();
    if (end == 0) return out;
    auto consider = [&](std::uint64_t position) {
      if (in_all(position)) out.events.push_back(events_[position]);
    };
    if (direction == Direction::kForward) {
      for (std::uint64_t p = from; p < end && out.events.size() < max_count; ++p) consider(p);
    } else {
      for (std::uint64_t p = std::min(from, end - 1);; --p) {
        if (out.events.size() >= max_count) break;
        consider(p);
        if (p == 0) break;
      }
    }
    return out;
  }

  ModelRead read_indexed(bool category, const std::string& name, std::uint64_t from,
                         std::size_t max_count) const {
    ModelRead out;
    for (std::uint64_t p = from; p < events_.size() && out.events.size() < max_count; ++p) {
      const RecordedEvent& event = events_[p];
      bool match = category ? category_of(event.stream) == name : event.type == name;
      if (match && in_all(p)) out.events.push_back(event);
    }
    return out;
  }

  std::optional<std::uint64_t> stream_version(const std::string& name) const {
    auto it = streams_.find(name);
    if (it == streams_.end() || !it->second.exists() || it->second.metadata.tombstone)
      return std::nullopt;
    return it->second.next_version - 1;
  }

  StreamMetadata metadata(const std::string& name) const {
    auto it = streams_.find(name);
    return it == streams_.end() ? StreamMetadata{} : it->second.metadata.rules;
  }

  const ModelStream* stream(const std::string& name) const {
    auto it = streams_.find(name);
    return it == streams_.end() ? nullptr : &it->second;
  }
  std::uint64_t next_position() const { return events_.size(); }

 private:
  static ModelAppend fail(ModelAppend out, errc code) {
    out.error = code;
    return out;
  }

  // Re-appending ids already known: the first result again if these exact events were
  // appended together (and are still in the log to compare with); otherwise a conflict.
  std::optional<ModelAppend> find_duplicate(const std::string& stream,
                                            const std::vector<EventData>& batch) const {
    std::size_t known = 0;
    for (const auto& event : batch) known += ids_.contains(event.id) ? 1 : 0;
    if (known == 0) return std::nullopt;
    ModelAppend out;
    if (known != batch.size()) return fail(out, errc::duplicate_event_id);
    const std::uint64_t first = ids_.at(batch[0].id);
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const std::uint64_t position = first + i;
      if (ids_.at(batch[i].id) != position || removed_[position])
        return fail(out, errc::duplicate_event_id);
      const RecordedEvent& stored = events_[position];
      if (stored.stream != stream || stored.type != batch[i].type || stored.data != batch[i].data ||
          stored.metadata != batch[i].metadata) {
        return fail(out, errc::duplicate_event_id);
      }
    }
    out.wrote = true;
    out.result.duplicate = true;
    out.result.first_version = events_[first].version;
    out.result.last_version = events_[first + batch.size() - 1].version;
    out.result.first_position = first;
    out.result.last_position = first + batch.size() - 1;
    return out;
  }

  static bool expected_ok(const ModelStream& stream, ExpectedVersion expected,
                          std::int64_t& detail) {
    detail = stream.exists() ? static_cast<std::int64_t>(stream.next_version) - 1 : -1;
    switch (expected.kind()) {
      case ExpectedVersion::Kind::kAny:
        return true;
      case ExpectedVersion::Kind::kNoStream:
        return !stream.exists();
      case ExpectedVersion::Kind::kStreamExists:
        return stream.exists();
      case ExpectedVersion::Kind::kExact:
        return stream.exists() && stream.next_version == expected.version() + 1;
    }
    return false;
  }

  static bool visible(const ModelStream& stream, const RecordedEvent& event) {
    const StreamMetadata& rules = stream.metadata.rules;
    if (rules.truncate_before && event.version < *rules.truncate_before) return false;
    // Of the stream's next_version events, the last max_count stay.
    if (rules.max_count && *rules.max_count < stream.next_version &&
        event.version < stream.next_version - *rules.max_count) {
      return false;
    }
    return true;
  }

  // Whether $all, a category or a type shows the event.
  bool in_all(std::uint64_t position) const {
    if (removed_[position]) return false;
    const RecordedEvent& event = events_[position];
    const ModelStream& stream = streams_.at(event.stream);
    return !stream.metadata.tombstone && visible(stream, event);
  }

  // Places one append's records in the active segment, rolling to a new one when they do not
  // fit (an append never spans two). False when they would not fit even in an empty segment.
  bool place(const std::vector<ModelRecord>& records) {
    std::uint64_t bytes = 0;
    for (const auto& record : records) bytes += record.bytes;
    if (bytes > kSegmentBytes) return false;
    if (write_offset_ + bytes > segments_.at(active_).file_bytes) {
      segments_[++active_] = {};
      write_offset_ = 0;
    }
    auto& placed = segments_.at(active_).records;
    placed.insert(placed.end(), records.begin(), records.end());
    write_offset_ += bytes;
    return true;
  }

  std::vector<RecordedEvent> events_;  // by position
  std::vector<bool> removed_;          // by position: scavenged
  std::map<std::string, ModelStream> streams_;
  std::unordered_map<Uuid, std::uint64_t, UuidHash> ids_;
  std::map<std::uint64_t, ModelSegment> segments_;
  std::uint64_t active_ = 1;
  std::uint64_t write_offset_ = 0;
};

// ---- comparing ----

std::string positions_text(const std::vector<RecordedEvent>& events) {
  std::string text = "[";
  for (std::size_t i = 0; i < events.size(); ++i) {
    if (i > 0) text += ",";
    if (i == 12 && events.size() > 14) {
      text += "... " + std::to_string(events.size() - 13) + " more ...," +
              std::to_string(events.back().position);
      break;
    }
    text += std::to_string(events[i].position);
  }
  return text + "]";
}

// "" when they match, otherwise what differs first.
std::string diff_events(const std::vector<RecordedEvent>& expected,
                        const std::vector<RecordedEvent>& actual) {
  if (expected.size() != actual.size()) {
    return "expected " + std::to_string(expected.size()) + " events at positions " +
           positions_text(expected) + ", got " + std::to_string(actual.size()) + " at positions " +
           positions_text(actual);
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const RecordedEvent& want = expected[i];
    const RecordedEvent& got = actual[i];
    auto field = [&](const char* name, const std::string& w, const std::string& g) {
      return "event #" + std::to_string(i) + " (position " + std::to_string(want.position) +
             "): " + name + " expected '" + w + "', got '" + g + "'";
    };
    if (want.position != got.position)
      return field("position", std::to_string(want.position), std::to_string(got.position));
    if (want.stream != got.stream) return field("stream", want.stream, got.stream);
    if (want.version != got.version)
      return field("version", std::to_string(want.version), std::to_string(got.version));
    if (want.id != got.id) return field("id", want.id.to_string(), got.id.to_string());
    if (want.type != got.type) return field("type", want.type, got.type);
    if (want.data != got.data) return field("data", want.data, got.data);
    if (want.metadata != got.metadata) return field("metadata", want.metadata, got.metadata);
    if (want.timestamp_ns != got.timestamp_ns) {
      return field("timestamp_ns", std::to_string(want.timestamp_ns),
                   std::to_string(got.timestamp_ns));
    }
  }
  return "";
}

std::string diff_read(const ModelRead& expected, const Result<std::vector<RecordedEvent>>& actual) {
  if (expected.error) {
    if (actual.ok()) {
      return "expected " + errc_name(expected.error) + ", got " + std::to_string(actual->size()) +
             " events";
    }
    if (!actual.error().is(*expected.error))
      return "expected " + errc_name(expected.error) + ", got " + actual.error().to_string();
    return "";
  }
  if (!actual.ok()) return "expected events, got " + actual.error().to_string();
  return diff_events(expected.events, *actual);
}

std::string diff_rules(const StreamMetadata& expected, const StreamMetadata& actual) {
  if (expected.max_count == actual.max_count &&
      expected.truncate_before == actual.truncate_before && expected.max_age == actual.max_age) {
    return "";
  }
  return "metadata expected " + rules_text(expected) + ", got " + rules_text(actual);
}

// ---- one seeded run ----

class ModelRun {
 public:
  ModelRun(std::uint64_t seed, std::uint64_t steps) : seed_(seed), steps_(steps), random_(seed) {}

  // "" when the store agreed with the model at every step; otherwise the first disagreement.
  std::string run() {
    operation_ = "open";
    if (auto failed = open(); !failed.empty()) return report(0, failed);
    for (std::uint64_t step = 1; step <= steps_; ++step) {
      clock_.advance(1ms);  // every append gets its own timestamp
      std::string failed = step_once();
      if (failed.empty()) failed = check_stream_states();
      if (failed.empty() && step == steps_) failed = check_everything();
      if (!failed.empty()) return report(step, failed);
      recent_.push_back(operation_);
      if (recent_.size() > 8) recent_.pop_front();
    }
    if (auto closed = store_->close(); !closed) return report(steps_, closed.error().to_string());
    return "";
  }

 private:
  std::string report(std::uint64_t step, const std::string& what) const {
    std::string text = "seed " + std::to_string(seed_) + ", step " + std::to_string(step) + ": " +
                       operation_ + ": " + what +
                       "\n  replay with KEEL_SEED=" + std::to_string(seed_) +
                       "\n  operations before it:";
    for (const auto& operation : recent_) text += "\n    " + operation;
    return text;
  }

  StoreOptions options() const {
    StoreOptions options;
    options.segment_bytes = kSegmentBytes;
    options.durability = Durability::kNone;  // no fdatasync per append: keeps the test fast
    options.checkpoint_every_events = 37;    // checkpoints while appending, too
    return options;
  }

  std::string open() {
    auto opened = EventStore::open(dir_.path(), options(), clock_);
    if (!opened) return "open failed: " + opened.error().to_string();
    store_ = std::move(*opened);
    return "";
  }

  std::string step_once() {
    const std::uint64_t roll = random_.uniform(100);
    if (roll < 38) return append_new();
    if (roll < 44) return append_again();
    if (roll < 49) return append_reused_id();
    if (roll < 59) return read_stream();
    if (roll < 64) return read_all();
    if (roll < 68) return read_indexed(true);
    if (roll < 72) return read_indexed(false);
    if (roll < 79) return set_metadata();
    if (roll < 84) return delete_stream(false);
    if (roll < 85) return delete_stream(true);
    if (roll < 90) return scavenge();
    if (roll < 93) return checkpoint();
    return reopen();
  }

  // ---- what a step does ----

  // A copy: the pool grows while the caller holds the name.
  std::string pick_stream() { return streams_[random_.uniform(streams_.size())]; }

  ExpectedVersion pick_expected(const std::string& stream_name) {
    const ModelStream* stream = model_.stream(stream_name);
    const std::uint64_t next = stream != nullptr ? stream->next_version : 0;
    const std::uint64_t current = next > 0 ? next - 1 : 0;
    switch (random_.uniform(9)) {
      case 0:
        return ExpectedVersion::any();
      case 1:
        return ExpectedVersion::no_stream();
      case 2:
        return ExpectedVersion::stream_exists();
      case 3:
        return ExpectedVersion::exact(current + 1);
      case 4:
        return ExpectedVersion::exact(current > 0 ? current - 1 : 3);
      case 5:
        return ExpectedVersion::exact(random_.uniform(4));
      default:  // mostly right, so streams grow
        if (stream == nullptr || !stream->exists()) return ExpectedVersion::no_stream();
        return ExpectedVersion::exact(current);
    }
  }

  std::string random_text(std::size_t size) {
    std::string text(size, ' ');
    for (auto& c : text) c = static_cast<char>('a' + random_.uniform(26));
    return text;
  }

  EventData new_event() {
    EventData event;
    event.id = Uuid::random_v4(random_);
    event.type = kTypes[random_.uniform(kTypes.size())];
    // Mostly small events; some large ones fill segments fast, and a batch of them can be
    // larger than a whole segment.
    std::size_t size =
        random_.bernoulli(0.15) ? 1000 + random_.uniform(4000) : random_.uniform(150);
    event.data = "{\"v\":\"" + random_text(size) + "\"}";
    if (random_.bernoulli(0.3)) event.metadata = "{\"correlation\":\"" + random_text(8) + "\"}";
    return event;
  }

  std::string batch_text(const std::vector<EventData>& batch) {
    std::string text = std::to_string(batch.size()) + " events [";
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (i > 0) text += " ";
      text += batch[i].id.to_string().substr(0, 8) + ":" + batch[i].type + ":" +
              std::to_string(batch[i].data.size()) + "b";
    }
    return text + "]";
  }

  std::string do_append(const std::string& stream, ExpectedVersion expected,
                        const std::vector<EventData>& batch) {
    operation_ = "append(" + stream + ", " + expected.to_string() + ", " + batch_text(batch) + ")";
    ModelAppend want = model_.append(stream, expected, batch, clock_.unix_now_ns());
    auto got = store_->append(stream, expected, batch);
    if (want.error) {
      if (got.ok()) {
        return "expected " + errc_name(want.error) + ", got ok at positions " +
               std::to_string(got->first_position) + ".." + std::to_string(got->last_position) +
               (got->duplicate ? " (duplicate)" : "");
      }
      if (!got.error().is(*want.error))
        return "expected " + errc_name(want.error) + ", got " + got.error().to_string();
      if (*want.error == errc::wrong_expected_version && got.error().detail() != want.detail) {
        return "expected actual version " + std::to_string(want.detail) + " in the error, got " +
               (got.error().detail() ? std::to_string(*got.error().detail()) : "none");
      }
      return "";
    }
    if (!got.ok()) return "expected ok, got " + got.error().to_string();
    if (!want.wrote) return "";
    const AppendResult& w = want.result;
    const AppendResult& g = *got;
    if (w.duplicate != g.duplicate || w.first_version != g.first_version ||
        w.last_version != g.last_version || w.first_position != g.first_position ||
        w.last_position != g.last_position) {
      auto text = [](const AppendResult& r) {
        return "versions " + std::to_string(r.first_version) + ".." +
               std::to_string(r.last_version) + ", positions " + std::to_string(r.first_position) +
               ".." + std::to_string(r.last_position) + (r.duplicate ? ", duplicate" : "");
      };
      return "expected " + text(w) + "; got " + text(g);
    }
    if (!w.duplicate) history_.push_back({stream, batch});
    return "";
  }

  std::string append_new() {
    const std::string stream = pick_stream();
    std::vector<EventData> batch;
    std::size_t count = random_.uniform(6);  // 0..5; an empty batch only checks the version
    for (std::size_t i = 0; i < count; ++i) batch.push_back(new_event());
    return do_append(stream, pick_expected(stream), batch);
  }

  // An earlier batch again, ids and all: a retry, which must be recognised.
  std::string append_again() {
    if (history_.empty()) return append_new();
    const auto& [stream, batch] = history_[random_.uniform(history_.size())];
    // Mostly to the same stream; sometimes to another, which is a conflict.
    const std::string target = random_.bernoulli(0.85) ? stream : pick_stream();
    std::vector<EventData> copy = batch;
    return do_append(target, pick_expected(target), copy);
  }

  // An id used before, for an event with other content; or one id twice in a batch.
  std::string append_reused_id() {
    const std::string stream = pick_stream();
    std::vector<EventData> batch;
    for (std::size_t i = random_.uniform(3); i > 0; --i) batch.push_back(new_event());
    EventData reused = new_event();
    if (!history_.empty() && random_.bernoulli(0.7)) {
      const auto& earlier = history_[random_.uniform(history_.size())].second;
      reused.id = earlier[random_.uniform(earlier.size())].id;
    } else if (!batch.empty()) {
      reused.id = batch[random_.uniform(batch.size())].id;
    }
    batch.insert(batch.begin() + static_cast<std::ptrdiff_t>(random_.uniform(batch.size() + 1)),
                 reused);
    return do_append(stream, pick_expected(stream), batch);
  }

  std::string read_stream() {
    const std::string stream = pick_stream();
    const ModelStream* known = model_.stream(stream);
    const std::uint64_t next = known != nullptr ? known->next_version : 0;
    Direction direction = random_.bernoulli(0.5) ? Direction::kForward : Direction::kBackward;
    std::uint64_t from = random_.bernoulli(0.2) && direction == Direction::kBackward
                             ? UINT64_MAX
                             : random_.uniform(next + 3);
    std::size_t max_count = random_.bernoulli(0.3) ? kEverything : random_.uniform(6);
    operation_ = "read_stream(" + stream + ", from " + std::to_string(from) + ", max " +
                 std::to_string(max_count) +
                 (direction == Direction::kForward ? ", forward)" : ", backward)");
    return diff_read(model_.read_stream(stream, from, max_count, direction),
                     store_->read_stream(stream, from, max_count, direction));
  }

  std::string read_all() {
    Direction direction = random_.bernoulli(0.5) ? Direction::kForward : Direction::kBackward;
    std::uint64_t from = random_.bernoulli(0.2) && direction == Direction::kBackward
                             ? UINT64_MAX
                             : random_.uniform(model_.next_position() + 3);
    std::size_t max_count = random_.bernoulli(0.3) ? kEverything : random_.uniform(20);
    operation_ = "read_all(from " + std::to_string(from) + ", max " + std::to_string(max_count) +
                 (direction == Direction::kForward ? ", forward)" : ", backward)");
    return diff_read(model_.read_all(from, max_count, direction),
                     store_->read_all(from, max_count, direction));
  }

  std::string read_indexed(bool category) {
    const std::string& name = category ? kCategories[random_.uniform(kCategories.size())]
                                       : kTypes[random_.uniform(kTypes.size())];
    std::uint64_t from = random_.uniform(model_.next_position() + 3);
    std::size_t max_count = random_.bernoulli(0.3) ? kEverything : random_.uniform(10);
    operation_ = std::string(category ? "read_category(" : "read_event_type(") + name + ", from " +
                 std::to_string(from) + ", max " + std::to_string(max_count) + ")";
    return diff_read(model_.read_indexed(category, name, from, max_count),
                     category ? store_->read_category(name, from, max_count)
                              : store_->read_event_type(name, from, max_count));
  }

  std::string set_metadata() {
    const std::string stream = pick_stream();
    const ModelStream* known = model_.stream(stream);
    const std::uint64_t next = known != nullptr ? known->next_version : 0;
    StreamMetadata rules;
    switch (random_.uniform(5)) {
      case 0:
        break;  // clears every rule
      case 1:
        rules.max_count = 1 + random_.uniform(6);
        break;
      case 2:
        rules.truncate_before = random_.uniform(next + 3);
        break;
      case 3:
        rules.max_count = 1 + random_.uniform(6);
        rules.truncate_before = random_.uniform(next + 3);
        break;
      default:  // "no limit", spelled as large numbers
        rules.max_count = random_.bernoulli(0.5) ? UINT64_MAX : (1ull << 63) + random_.uniform(9);
        break;
    }
    operation_ = "set_metadata(" + stream + ", " + rules_text(rules) + ")";
    std::optional<errc> want = model_.set_metadata(stream, rules);
    Status got = store_->set_metadata(stream, rules);
    return diff_status(want, got, 0);
  }

  std::string delete_stream(bool hard) {
    const std::string stream = pick_stream();
    ExpectedVersion expected =
        random_.bernoulli(0.5) ? ExpectedVersion::any() : pick_expected(stream);
    operation_ = std::string(hard ? "hard" : "soft") + " delete_stream(" + stream + ", " +
                 expected.to_string() + ")";
    std::int64_t detail = 0;
    std::optional<errc> want = model_.delete_stream(stream, expected, hard, detail);
    Status got = store_->delete_stream(stream, expected, hard);
    // A tombstoned name is gone for good; a new one keeps long runs from running out.
    if (hard && !want) {
      streams_.push_back(std::string(category_of(stream)) + "-" +
                         std::to_string(streams_.size() + 1));
    }
    return diff_status(want, got, detail);
  }

  std::string diff_status(std::optional<errc> want, const Status& got, std::int64_t detail) {
    if (!want) return got.ok() ? "" : "expected ok, got " + got.error().to_string();
    if (got.ok()) return "expected " + errc_name(want) + ", got ok";
    if (!got.error().is(*want))
      return "expected " + errc_name(want) + ", got " + got.error().to_string();
    if (*want == errc::wrong_expected_version && got.error().detail() != detail)
      return "expected actual version " + std::to_string(detail) + " in the error";
    return "";
  }

  std::string scavenge() {
    operation_ = "scavenge()";
    ScavengeReport want = model_.scavenge();
    auto got = store_->scavenge();
    if (!got) return "expected a report, got " + got.error().to_string();
    if (want.events_removed != got->events_removed ||
        want.segments_emptied != got->segments_emptied ||
        want.segments_rewritten != got->segments_rewritten ||
        want.bytes_reclaimed != got->bytes_reclaimed) {
      auto text = [](const ScavengeReport& r) {
        return std::to_string(r.events_removed) + " events removed, " +
               std::to_string(r.segments_emptied) + " segments emptied, " +
               std::to_string(r.segments_rewritten) + " rewritten, " +
               std::to_string(r.bytes_reclaimed) + " bytes reclaimed";
      };
      return "expected " + text(want) + "; got " + text(*got);
    }
    return check_everything();
  }

  std::string checkpoint() {
    operation_ = "checkpoint()";
    Status got = store_->checkpoint();
    return got.ok() ? "" : "expected ok, got " + got.error().to_string();
  }

  // Close and open again; sometimes without index.chk, or with the marker an interrupted
  // scavenge leaves, so that the index is rebuilt from the log.
  std::string reopen() {
    const std::uint64_t how = random_.uniform(6);
    operation_ = how == 0   ? "reopen without index.chk"
                 : how == 1 ? "reopen with scavenge.pending left behind"
                            : "close and reopen";
    if (auto closed = store_->close(); !closed) return "close: " + closed.error().to_string();
    store_.reset();
    if (how == 0) std::filesystem::remove(dir_.path() + "/index.chk");
    if (how == 1) std::ofstream(dir_.path() + "/scavenge.pending") << "scavenge";
    if (how <= 1) model_.rebuild_ids();
    if (auto failed = open(); !failed.empty()) return failed;
    if (how == 1 && std::filesystem::exists(dir_.path() + "/scavenge.pending"))
      return "scavenge.pending is still there after open";
    return check_everything();
  }

  // ---- whole-store checks ----

  std::string check_stream_states() {
    if (store_->next_position() != model_.next_position()) {
      return "next_position() expected " + std::to_string(model_.next_position()) + ", got " +
             std::to_string(store_->next_position());
    }
    for (const auto& stream : streams_) {
      auto want = model_.stream_version(stream);
      auto got = store_->stream_version(stream);
      if (want != got) {
        return "stream_version(" + stream + ") expected " + optional_text(want) + ", got " +
               optional_text(got);
      }
      if (auto diff = diff_rules(model_.metadata(stream), store_->metadata(stream));
          !diff.empty()) {
        return stream + ": " + diff;
      }
    }
    return "";
  }

  std::string check_everything() {
    auto check = [](const std::string& what, const std::string& diff) {
      return diff.empty() ? "" : what + ": " + diff;
    };
    std::string failed =
        check("read_all forward", diff_read(model_.read_all(0, kEverything, Direction::kForward),
                                            store_->read_all(0, kEverything)));
    if (failed.empty()) {
      failed = check("read_all backward",
                     diff_read(model_.read_all(UINT64_MAX, kEverything, Direction::kBackward),
                               store_->read_all(UINT64_MAX, kEverything, Direction::kBackward)));
    }
    for (const auto& stream : streams_) {
      if (!failed.empty()) break;
      failed = check("read_stream(" + stream + ")",
                     diff_read(model_.read_stream(stream, 0, kEverything, Direction::kForward),
                               store_->read_stream(stream, 0, kEverything)));
    }
    for (const auto& category : kCategories) {
      if (!failed.empty()) break;
      failed = check("read_category(" + category + ")",
                     diff_read(model_.read_indexed(true, category, 0, kEverything),
                               store_->read_category(category, 0, kEverything)));
    }
    for (const auto& type : kTypes) {
      if (!failed.empty()) break;
      failed = check("read_event_type(" + type + ")",
                     diff_read(model_.read_indexed(false, type, 0, kEverything),
                               store_->read_event_type(type, 0, kEverything)));
    }
    return failed.empty() ? check_stream_states() : failed;
  }

  const std::uint64_t seed_;
  const std::uint64_t steps_;
  Random random_;
  ManualClock clock_;
  TempDir dir_;
  std::unique_ptr<EventStore> store_;
  Model model_;
  std::vector<std::string> streams_ = kStreams;
  std::vector<std::pair<std::string, std::vector<EventData>>> history_;  // appended batches
  std::string operation_;
  std::deque<std::string> recent_;
};

TEST(EventStoreModelTest, RandomOperationsAgreeWithTheModel) {
  const std::uint64_t steps = env_number("KEEL_STEPS", kStepsPerSeed);
  std::vector<std::uint64_t> seeds;
  if (std::uint64_t replay = env_number("KEEL_SEED", 0); replay != 0) {
    seeds.push_back(replay);
  } else {
    const std::uint64_t count = env_number("KEEL_SEEDS", kSeeds);
    for (std::uint64_t seed = 1; seed <= count; ++seed) seeds.push_back(seed);
  }
  for (std::uint64_t seed : seeds) {
    std::string failed = ModelRun(seed, steps).run();
    ASSERT_TRUE(failed.empty()) << failed;
  }
}

// ---- the disagreements the model found, each as a plain scenario ----

class EventStoreRegressionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.segment_bytes = kSegmentBytes;
    auto opened = EventStore::open(dir_.path(), options, clock_);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    store_ = std::move(*opened);
  }
  std::vector<EventData> events(int n) {
    std::vector<EventData> batch;
    for (int i = 0; i < n; ++i)
      batch.push_back(testing::make_event(random_, "Happened", std::to_string(i)));
    return batch;
  }
  std::vector<std::uint64_t> versions(const std::string& stream) {
    std::vector<std::uint64_t> result;
    auto read = store_->read_stream(stream, 0, 100);
    EXPECT_TRUE(read.ok()) << read.error().to_string();
    if (read.ok())
      for (const auto& event : *read) result.push_back(event.version);
    return result;
  }

  TempDir dir_;
  ManualClock clock_;
  Random random_{11};
  std::unique_ptr<EventStore> store_;
};

TEST_F(EventStoreRegressionTest, SoftDeletingAgainKeepsTheOldEventsHidden) {
  ASSERT_TRUE(store_->append("u-1", ExpectedVersion::any(), events(3)).ok());
  ASSERT_TRUE(store_->delete_stream("u-1", ExpectedVersion::any(), false).ok());
  ASSERT_TRUE(store_->delete_stream("u-1", ExpectedVersion::any(), false).ok());
  EXPECT_EQ(store_->metadata("u-1").truncate_before, std::optional<std::uint64_t>(3));
  auto all = store_->read_all(0, 100);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->empty()) << "a soft-deleted stream's events left $all";
  ASSERT_TRUE(store_->append("u-1", ExpectedVersion::no_stream(), events(1)).ok());
  EXPECT_EQ(versions("u-1"), std::vector<std::uint64_t>{3}) << "only the recreated event";
}

TEST_F(EventStoreRegressionTest, ABatchThatRepeatsAnIdIsRejected) {
  auto batch = events(2);
  batch[1].id = batch[0].id;
  auto result = store_->append("r-1", ExpectedVersion::any(), batch);
  ASSERT_FALSE(result.ok()) << "two events stored under one id";
  EXPECT_TRUE(result.error().is(errc::duplicate_event_id)) << result.error().to_string();
  EXPECT_EQ(store_->next_position(), 0u);
}

TEST_F(EventStoreRegressionTest, MaxCountOfUint64MaxHidesNothing) {
  ASSERT_TRUE(store_->append("c-1", ExpectedVersion::any(), events(4)).ok());
  ASSERT_TRUE(store_->set_metadata("c-1", {.max_count = UINT64_MAX}).ok());
  EXPECT_EQ(versions("c-1"), (std::vector<std::uint64_t>{0, 1, 2, 3}));
}

TEST_F(EventStoreRegressionTest, MaxAgeBeyondWhatADurationHoldsIsRejected) {
  // 2^62 ms overflowed converting to nanoseconds (undefined behaviour).
  auto parsed = StreamMetadata::from_json("{\"max_age_ms\":4611686018427387904}");
  ASSERT_FALSE(parsed.ok());
  EXPECT_TRUE(parsed.error().is(errc::invalid_argument)) << parsed.error().to_string();
  auto longest = StreamMetadata::from_json("{\"max_age_ms\":9223372036854}");
  ASSERT_TRUE(longest.ok()) << longest.error().to_string();
}

}  // namespace
}  // namespace keel::eventlog

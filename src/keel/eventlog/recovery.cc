// What EventStore::open() does to the log: lists and maps the segments, loads the index
// checkpoint and checks it against them, replays the log after it one complete append at a
// time (the walk and its rules are LogScanner's) and cuts a torn tail.
// docs/formats/eventlog.md ("Recovery: what open() does") is the contract.
#include <unistd.h>

#include <algorithm>

#include "keel/core/log.h"
#include "keel/eventlog/event_store_impl.h"
#include "keel/eventlog/log_scanner.h"

namespace keel::eventlog {
namespace {

// The smallest event record there is: one-byte stream name and type, no data.
std::uint64_t min_event_record_bytes() {
  static const std::uint64_t bytes = [] {
    RecordedEvent event;
    event.stream = "s";
    event.type = "t";
    std::string record;
    encode_event(event, true, record);
    return record.size();
  }();
  return bytes;
}

std::string position_gap_message(std::uint64_t found, std::uint64_t expected) {
  if (found < expected) {
    return "event position " + std::to_string(found) + " repeats or goes back (expected " +
           std::to_string(expected) + ")";
  }
  return "position " + std::to_string(found) + " where " + std::to_string(expected) +
         " was expected: positions " + std::to_string(expected) + " to " +
         std::to_string(found - 1) + " are missing (a segment, or part of one, is gone)";
}

Error damage(const std::string& path, std::uint64_t offset, const std::string& what) {
  return Error(errc::corrupt, path + " offset " + std::to_string(offset) + ": " + what +
                                  "; the store will not open (see `keel eventlog verify`)");
}

}  // namespace

// Applies each complete append to the index; the first problem that is damage stops the walk
// and becomes open()'s error. A torn tail is cut; damaged padding is a warning.
class EventStore::Impl::Replay final : public LogScanner::Visitor {
 public:
  explicit Replay(Impl& store) : store_(store) {
    // A removed range's count is not trusted to size the index: segments 1..n never held more
    // events than n segments' worth.
    std::uint64_t largest_segment = store.options_.segment_bytes;
    for (const auto& [number, segment] : store.segments_)
      largest_segment = std::max(largest_segment, segment->capacity);
    events_per_segment_ = largest_segment / min_event_record_bytes() + 1;
  }

  Status result() const { return error_ ? Status(*error_) : Status(); }

  bool on_append(const ScannedAppend& append) override {
    const ScannedRecord& last = append.records.back();
    if (last.is_removed) {
      const std::uint64_t log_end = last.removed.first_position + last.removed.count;
      if (log_end / events_per_segment_ >= append.segment) {
        return fail(damage(*append.path, last.offset,
                           "a removed range larger than the segments could hold"));
      }
      store_.index_.locations.resize(log_end, kRemovedLocation);
    }
    if (auto applied = store_.apply_recovered(append); !applied) return fail(applied.error());
    return true;
  }

  bool on_problem(const LogProblem& problem) override {
    using Kind = LogProblem::Kind;
    switch (problem.kind) {
      case Kind::kDamagedPadding:
        // In a sealed segment, bytes after its last append that cannot be a record and hide
        // none are damage to the zero padding, not to records; the position rule still
        // notices if anything is missing.
        log::get("eventlog")
            ->warn(
                "{} offset {}: non-zero bytes in the padding after the last record; "
                "no record is there",
                problem.path, problem.offset);
        return true;
      case Kind::kDataAfterEnd:
        return true;  // open() does not read unused space
      case Kind::kTornTail:
        return cut_torn_tail(problem);
      case Kind::kDamagedRecord:
        return fail(damage(problem.path, problem.offset,
                           std::string("record ") + frame_failure(problem.frame_status) +
                               (problem.intact_record_after ? " and an intact record follows it"
                                                            : " and later segments hold data") +
                               ", so this is not a torn write"));
      case Kind::kUndecodableRecord:
        return fail(damage(problem.path, problem.offset, problem.detail));
      case Kind::kPositionGap:
        return fail(damage(problem.path, problem.offset,
                           position_gap_message(problem.found, problem.expected)));
      case Kind::kIncompleteAppend:
        // Appends never span segments, so this one can only have been cut short — and later
        // segments hold later appends: not a torn tail.
        return fail(damage(problem.path, problem.offset,
                           "the append there lacks its last record, and later segments hold "
                           "data"));
      case Kind::kMissingSegments:
      case Kind::kUnreadableSegment:
      case Kind::kNotASegment:
        // recover() checks these before the walk; reaching them here is damage all the same.
        return fail(damage(
            problem.path, problem.offset,
            problem.detail.empty() ? "not a readable segment of this store" : problem.detail));
    }
    return fail(damage(problem.path, problem.offset, "damaged"));
  }

  void on_segment_walked(const Segment& segment, std::uint64_t records_end) override {
    store_.segments_.at(segment.number)->end = records_end;
  }

 private:
  bool fail(Error error) {
    error_ = std::move(error);
    return false;
  }

  // Zeros everything not zero after the last complete append: appends that never completed,
  // so none of them was acknowledged under kEveryCommit.
  bool cut_torn_tail(const LogProblem& problem) {
    log::get("eventlog")
        ->warn("{}: cutting a torn tail of {} bytes at offset {}", problem.path,
               problem.end - problem.offset, problem.offset);
    const Segment& segment = *store_.segments_.at(problem.segment);
    if (auto zeroed = store_.files_.zero(segment, problem.offset, problem.end); !zeroed) {
      return fail(zeroed.error());
    }
    return true;
  }

  Impl& store_;
  std::uint64_t events_per_segment_ = 1;
  std::optional<Error> error_;
};

Status EventStore::Impl::recover() {
  auto listing = list_store(directory_);
  if (!listing) return listing.error();
  for (std::size_t i = 0; i < listing->segments.size(); ++i) {
    const std::uint64_t number = listing->segments[i].number;
    // Segments run 1, 2, ... with none missing: scavenging rewrites a segment, never deletes it.
    if (number != i + 1) {
      return Error(errc::corrupt, files_.path(i + 1) +
                                      " is missing (segments are numbered from 1 with none "
                                      "missing); the store will not open (see `keel eventlog "
                                      "verify`)");
    }
    auto segment = files_.open(number);
    if (!segment) return segment.error();
    if (!starts_like_segment((*segment)->bytes())) {
      return Error(errc::corrupt, (*segment)->path +
                                      " does not start with a record header or zeros: it is "
                                      "not a segment of this store; the store will not open");
    }
    segments_[number] = *segment;
  }

  load_checkpoint();
  if (auto checked = check_checkpoint_segments(); !checked) return checked;

  // Replay the log after the checkpoint, one complete append at a time.
  LogScanner::Options from_checkpoint;
  from_checkpoint.start_segment = index_.replay_segment;
  from_checkpoint.start_offset = index_.replay_offset;
  from_checkpoint.next_position = index_.locations.size();
  LogScanner scanner(
      listing->segments,
      [this](std::uint64_t number) -> Result<std::shared_ptr<Segment>> {
        return segments_.at(number);
      },
      from_checkpoint);
  Replay replay(*this);
  scanner.run(replay);
  if (auto replayed = replay.result(); !replayed) return replayed;

  start_writing_after_recovery();
  if (segments_.empty()) {
    auto segment = files_.create(1);
    if (!segment) return segment.error();
    segments_[1] = *segment;
  }
  active_ = segments_.rbegin()->second;
  write_offset_ = active_->end;
  index_.replay_segment = active_->number;
  index_.replay_offset = write_offset_;
  return {};
}

// The index: from its checkpoint when there is a good one and no scavenge was cut short;
// otherwise empty, to be rebuilt from the whole log.
void EventStore::Impl::load_checkpoint() {
  bool scavenge_interrupted = ::access(path(kScavengeMarkerFileName).c_str(), F_OK) == 0;
  auto checkpoint = read_checkpoint(path(kCheckpointFileName));
  if (!checkpoint) {
    log::get("eventlog")
        ->warn("{}; rebuilding the index from the log", checkpoint.error().message());
  } else if (checkpoint->has_value() && !scavenge_interrupted) {
    index_ = std::move((*checkpoint)->first);
    for (const auto& [name, stream] : index_.streams) {
      const StoredMetadata& m = stream.metadata;
      index_.any_metadata |= stream.has_rules() || m.tombstone || m.soft_deleted;
    }
    for (const auto& [id, position] : (*checkpoint)->second) remember_id(id, position);
  }
  if (scavenge_interrupted) ::unlink(path(kScavengeMarkerFileName).c_str());
  if (!segments_.empty() && !segments_.contains(index_.replay_segment)) {
    // The checkpoint points into a segment that is gone: start over from the log.
    index_ = Index{};
    ids_.clear();
  }
  if (index_.streams.empty() && index_.locations.empty() && !segments_.empty()) {
    index_.replay_segment = segments_.begin()->first;
    index_.replay_offset = 0;
  }
}

// The checkpoint's segments are not read at open. Check at least that each still holds the
// last record the index has in it, so that a segment cut short or gone is reported here rather
// than as events that cannot be read.
Status EventStore::Impl::check_checkpoint_segments() const {
  std::map<std::uint64_t, std::uint64_t> last_offset;  // segment -> its last indexed record
  std::uint64_t current_segment = 0;
  std::uint64_t* current_offset = nullptr;  // positions run through the segments in order
  for (std::uint64_t location : index_.locations) {
    if (location == kRemovedLocation) continue;
    if (current_offset == nullptr || location_segment(location) != current_segment) {
      current_segment = location_segment(location);
      current_offset = &last_offset[current_segment];
    }
    *current_offset = std::max(*current_offset, location_offset(location));
  }
  for (const auto& [number, offset] : last_offset) {
    auto it = segments_.find(number);
    if (it == segments_.end()) {
      return Error(errc::corrupt,
                   files_.path(number) + " is missing, but the index checkpoint has events in it");
    }
    const Segment& segment = *it->second;
    if (offset >= segment.capacity ||
        read_frame(segment.bytes_from(offset)).status != RecordView::Status::kOk) {
      return Error(errc::corrupt,
                   segment.path + " offset " + std::to_string(offset) +
                       ": the index checkpoint has an event here, but the file " +
                       (offset >= segment.capacity
                            ? "ends at " + std::to_string(segment.capacity) + " (cut short?)"
                            : "has no good record there"));
    }
  }
  auto replay = segments_.find(index_.replay_segment);
  if (replay != segments_.end() && index_.replay_offset > replay->second->capacity) {
    return Error(errc::corrupt, replay->second->path + " ends at " +
                                    std::to_string(replay->second->capacity) +
                                    ", before the end of the records the index checkpoint has (" +
                                    std::to_string(index_.replay_offset) + "; cut short?)");
  }
  return {};
}

Status EventStore::Impl::apply_recovered(const ScannedAppend& append) {
  for (const ScannedRecord& record : append.records) {
    if (!record.is_event) continue;
    const RecordedEvent& event = record.event;
    index_.add_event(event.stream, event.version, event.position,
                     pack_location(append.segment, record.offset), event.type);
    remember_id(event.id, event.position);
  }
  for (const ScannedRecord& record : append.records) {
    if (record.is_event || record.is_removed) continue;
    auto stored = StoredMetadata::from_json(record.metadata.json);
    if (!stored)
      return Error(errc::corrupt, "metadata of stream '" + record.metadata.stream +
                                      "': " + stored.error().message());
    index_.streams[record.metadata.stream].metadata = *stored;
    index_.any_metadata = true;
  }
  // A recreated stream (appended after a soft delete) is no longer deleted.
  for (const ScannedRecord& record : append.records) {
    if (record.is_event) index_.streams[record.event.stream].metadata.soft_deleted = false;
  }
  return {};
}

// The writers' view follows from the recovered index.
void EventStore::Impl::start_writing_after_recovery() {
  next_position_ = index_.locations.size();
  committed_position_ = next_position_;
  for (const auto& [name, stream] : index_.streams) {
    StreamWriterState& writer = writers_[name];
    writer.next_version = stream.positions.size();
    writer.committed_version = writer.next_version;
    writer.metadata = stream.metadata;
    writer.soft_deleted = stream.metadata.soft_deleted;
    writer.tombstone = stream.metadata.tombstone;
  }
}

}  // namespace keel::eventlog

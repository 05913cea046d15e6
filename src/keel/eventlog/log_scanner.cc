#include "keel/eventlog/log_scanner.h"

#include <algorithm>
#include <optional>
#include <utility>

#include "keel/eventlog/errc.h"

namespace keel::eventlog {

const char* frame_failure(RecordView::Status status) {
  return status == RecordView::Status::kBadCrc      ? "fails its CRC"
         : status == RecordView::Status::kTruncated ? "is cut short"
                                                    : "is malformed";
}

bool starts_like_segment(std::string_view segment) {
  const std::string_view start = segment.substr(0, kRecordHeaderBytes + 4);
  return std::all_of(start.begin(), start.end(), [](char c) { return c == 0; }) ||
         plausible_header(segment);
}

std::uint64_t LogScanner::last_segment_with_data() {
  for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
    auto segment = source_(it->number);
    // One that cannot be read may hold anything: it counts as holding data.
    if (!segment || segment_written_end(**segment, 0) > 0) return it->number;
  }
  return segments_.empty() ? 0 : segments_.front().number;
}

bool LogScanner::run(Visitor& visitor) {
  next_position_ = options_.next_position;
  const std::uint64_t last_with_data = last_segment_with_data();
  std::uint64_t expected_number = 1;
  for (const SegmentFileEntry& entry : segments_) {
    if (entry.number < options_.start_segment) {
      expected_number = entry.number + 1;
      continue;
    }
    if (entry.number != expected_number) {
      LogProblem problem;
      problem.kind = LogProblem::Kind::kMissingSegments;
      problem.segment = entry.number;
      problem.path = entry.path;
      problem.found = entry.number;
      problem.expected = expected_number;
      if (!visitor.on_problem(problem)) return false;
    }
    expected_number = entry.number + 1;
    ++segments_walked_;
    if (entry.number > last_with_data) continue;  // empty
    auto segment = source_(entry.number);
    if (!segment) {
      LogProblem problem;
      problem.kind = LogProblem::Kind::kUnreadableSegment;
      problem.segment = entry.number;
      problem.path = entry.path;
      problem.last_segment = entry.number == last_with_data;
      problem.detail = segment.error().message();
      positions_unknown_ = true;
      if (!visitor.on_problem(problem)) return false;
      continue;
    }
    const std::uint64_t from = entry.number == options_.start_segment ? options_.start_offset : 0;
    if (!walk_segment(visitor, **segment, entry.number == last_with_data, from)) return false;
  }
  return true;
}

bool LogScanner::walk_segment(Visitor& visitor, const Segment& segment, bool last,
                              std::uint64_t from) {
  // Frames are read from the whole file; scans for non-zero bytes stop at its last data extent.
  const std::string_view bytes = segment.bytes();
  const std::string_view data = segment.data_bytes();
  std::uint64_t offset = from;
  std::uint64_t good_end = from;  // end of the last complete append
  auto problem_at = [&](LogProblem::Kind kind, std::uint64_t at) {
    LogProblem problem;
    problem.kind = kind;
    problem.segment = segment.number;
    problem.path = segment.path;
    problem.offset = at;
    problem.append_begin = good_end;
    problem.last_segment = last;
    return problem;
  };
  if (!starts_like_segment(bytes)) {
    positions_unknown_ = true;
    return visitor.on_problem(problem_at(LogProblem::Kind::kNotASegment, 0));
  }

  ScannedAppend append{segment.number, &segment.path, from, from, {}};
  bool append_broken = false;              // a record of the current append did not decode
  std::optional<RecordView::Status> torn;  // the walk stopped at what may be a torn write
  bool padding_damaged = false;            // the walk stopped at damaged padding
  while (offset < segment.capacity) {
    RecordView frame = read_frame(bytes.substr(offset));
    if (frame.status == RecordView::Status::kEnd) break;
    if (frame.status != RecordView::Status::kOk) {
      // (Not "zeros after its claimed end": a damaged length would hide what follows.)
      const bool intact_after = intact_record_after(data, offset + 1);
      if (last && !intact_after) {
        torn = frame.status;
        break;
      }
      if (!last && !intact_after && offset == good_end && append.records.empty() &&
          !append_broken && !plausible_header(bytes.substr(offset))) {
        if (!visitor.on_problem(problem_at(LogProblem::Kind::kDamagedPadding, offset))) {
          return false;
        }
        padding_damaged = true;
        break;
      }
      LogProblem problem = problem_at(LogProblem::Kind::kDamagedRecord, offset);
      problem.frame_status = frame.status;
      problem.intact_record_after = intact_after;
      // Nothing after damage in this segment can be read: what it hid is unknown.
      positions_unknown_ = true;
      return visitor.on_problem(problem);
    }
    ++records_;
    ScannedRecord record;
    record.offset = offset;
    record.is_event = frame.kind == RecordKind::kEvent;
    record.is_removed = frame.kind == RecordKind::kRemoved;
    std::optional<std::string> undecodable;
    if (record.is_removed) {
      auto removed = decode_removed(frame);
      if (!removed) {
        undecodable = removed.error().message();
      } else if (!append.records.empty() || append_broken) {
        undecodable = "a removed range inside another append";
      } else {
        record.removed = *removed;  // decode_removed() refuses a count of 0
      }
    } else if (record.is_event) {
      auto event = decode_event(frame);
      if (!event) {
        undecodable = event.error().message();
      } else if (event->version > event->position) {
        undecodable = "event version " + std::to_string(event->version) +
                      " is larger than its position " + std::to_string(event->position);
      } else {
        record.event = std::move(*event);
      }
    } else {
      auto metadata = decode_metadata(frame);
      if (!metadata) {
        undecodable = metadata.error().message();
      } else {
        record.metadata = std::move(*metadata);
      }
    }
    if (undecodable) {
      LogProblem problem = problem_at(LogProblem::Kind::kUndecodableRecord, offset);
      problem.detail = std::move(*undecodable);
      if (!visitor.on_problem(problem)) return false;
      append_broken = true;
    } else {
      append.records.push_back(std::move(record));
    }
    offset += frame.size;
    if (frame.flags & kLastInAppend) {
      append.begin = good_end;
      append.end = offset;
      if (append_broken) {
        visitor.on_broken_append(segment.number, good_end, offset);
        positions_unknown_ = true;
      } else {
        if (!check_positions(visitor, append, last)) return false;
        if (!visitor.on_append(append)) return false;
      }
      append.records.clear();
      append_broken = false;
      good_end = offset;
    }
  }

  const bool append_open = !append.records.empty() || append_broken;
  if (last) {
    visitor.on_segment_walked(segment, good_end);
    // What open() cuts: everything not zero after the last complete append.
    const std::uint64_t end = written_end(data, good_end);
    if (end <= good_end) return true;
    LogProblem problem = problem_at(LogProblem::Kind::kTornTail, good_end);
    problem.frame_status = torn.value_or(RecordView::Status::kOk);
    problem.append_open = append_open;
    problem.end = end;
    return visitor.on_problem(problem);
  }
  if (append_open) {
    // Appends never span segments, so this one can only have been cut short.
    LogProblem problem = problem_at(LogProblem::Kind::kIncompleteAppend, good_end);
    problem.end = offset;
    if (!visitor.on_problem(problem)) return false;
  }
  visitor.on_segment_walked(segment, good_end);
  if (!options_.check_unused_space) return true;
  const std::uint64_t end = padding_damaged ? offset : written_end(data, offset);
  if (end <= offset) return true;
  // Data the store never reads: damage to records only if a record is there.
  LogProblem problem = problem_at(LogProblem::Kind::kDataAfterEnd, offset);
  problem.end = end;
  problem.hides_record = intact_record_after(data, offset);
  return visitor.on_problem(problem);
}

bool LogScanner::check_positions(Visitor& visitor, const ScannedAppend& append, bool last) {
  for (const ScannedRecord& record : append.records) {
    if (!record.is_event && !record.is_removed) continue;
    const std::uint64_t position =
        record.is_removed ? record.removed.first_position : record.event.position;
    // After a problem that hid records, the first position is taken as it comes.
    if (!std::exchange(positions_unknown_, false) && position != next_position_) {
      LogProblem problem;
      problem.kind = LogProblem::Kind::kPositionGap;
      problem.segment = append.segment;
      problem.path = *append.path;
      problem.offset = record.offset;
      problem.append_begin = append.begin;
      problem.last_segment = last;
      problem.found = position;
      problem.expected = next_position_;
      if (!visitor.on_problem(problem)) return false;
    }
    next_position_ = record.is_removed ? position + record.removed.count
                                       : std::max(next_position_, position + 1);
  }
  return true;
}

}  // namespace keel::eventlog

// LogScanner: the one walk over the log, record by record, shared by EventStore::open()
// (recovery.cc) and `keel eventlog verify | dump | repair` (log_check.h), so that the store and
// the tools can never disagree about which appends the log holds. It applies the log's rules
// and reports what breaks them as LogProblems; what to do about each — refuse the store, cut a
// torn tail, print a warning — is the caller's. docs/formats/eventlog.md ("Recovery") is the
// prose version of the rules:
//
//  - segments are walked in number order; the last one holding any non-zero byte is the last
//    segment with data, and segments after it (a roll's new segment, created before a crash let
//    anything reach it) are empty and not walked;
//  - records are grouped into appends, each ending with the record flagged last-in-append; an
//    append is handed on only when it is complete and all its records decode;
//  - the torn-tail rule: in the last segment with data, a damaged record with no intact record
//    (a plausible header whose CRC matches) starting anywhere after it is a write the crash cut
//    short; everything not zero after the last complete append is then a torn tail;
//  - the padding rule: in a sealed segment, bytes right after its last append that cannot be a
//    record header and hide no intact record are damage to the zero padding, not to records;
//  - an append never spans segments: a sealed segment whose records end inside one is damaged;
//  - positions are gap-free: each event, or removed range, starts exactly where the log before
//    it ends (after a problem that hid records, the next position is taken as it comes).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/result.h"
#include "keel/eventlog/layout.h"
#include "keel/eventlog/record.h"
#include "keel/eventlog/segment_file.h"

namespace keel::eventlog {

struct ScannedRecord {
  std::uint64_t offset = 0;  // in its segment
  bool is_event = true;
  bool is_removed = false;  // a removed range (neither event nor metadata)
  RecordedEvent event;
  MetadataRecord metadata;
  RemovedRange removed;
  const std::string& stream() const { return is_event ? event.stream : metadata.stream; }
};

// One complete append whose records all decoded.
struct ScannedAppend {
  std::uint64_t segment = 0;
  const std::string* path = nullptr;  // the segment's
  std::uint64_t begin = 0;            // offsets in the segment
  std::uint64_t end = 0;
  std::vector<ScannedRecord> records;
};

// Something in the log that breaks one of its rules.
struct LogProblem {
  enum class Kind {
    kMissingSegments,    // segments expected_number … segment − 1 are not there
    kUnreadableSegment,  // the file cannot be opened or mapped (`detail` says why)
    kNotASegment,        // it starts with neither zeros nor a plausible record header
    kDamagedRecord,      // a frame that fails its checks and is not a torn write
    kUndecodableRecord,  // a good frame whose body is wrong (`detail` says how)
    kPositionGap,        // found_position where expected_position was due
    kIncompleteAppend,   // a sealed segment's records end (at `end`) inside the append at `offset`
    kDamagedPadding,     // non-zero bytes after a sealed segment's last append: no record there
    kDataAfterEnd,       // non-zero bytes [offset, end) after a zero length ends a sealed
                         // segment's records (LogScanner::Options::check_unused_space)
    kTornTail,           // bytes [offset, end) after the last complete append of the log
  };
  Kind kind = Kind::kDamagedRecord;
  std::uint64_t segment = 0;
  std::string path;
  std::uint64_t offset = 0;
  // The end of the last complete append at or before the problem: cutting the log here keeps
  // everything before the problem.
  std::uint64_t append_begin = 0;
  bool last_segment = false;  // the problem is in the last segment with data
  // kDamagedRecord, kTornTail: how the record fails (kOk: a torn tail without a damaged record).
  RecordView::Status frame_status = RecordView::Status::kOk;
  bool intact_record_after = false;  // kDamagedRecord
  bool append_open = false;          // kTornTail: an append there lacks its last record
  bool hides_record = false;         // kDataAfterEnd: an intact record is among the bytes
  std::uint64_t end = 0;             // kIncompleteAppend, kDataAfterEnd, kTornTail
  std::uint64_t found = 0;           // kPositionGap: position; kMissingSegments: segment
  std::uint64_t expected = 0;
  std::string detail;  // kUnreadableSegment, kUndecodableRecord
};

// "fails its CRC", "is cut short" or "is malformed".
const char* frame_failure(RecordView::Status status);

// Whether `segment` starts as a segment of this store: with zeros or a plausible record header.
bool starts_like_segment(std::string_view segment);

class LogScanner {
 public:
  class Visitor {
   public:
    virtual ~Visitor() = default;
    // A complete append, after the position rule. Returning false stops the walk.
    virtual bool on_append(const ScannedAppend& append) = 0;
    // Returning false stops the walk.
    virtual bool on_problem(const LogProblem& problem) = 0;
    // An append that ended but whose records did not all decode (each was reported).
    virtual void on_broken_append(std::uint64_t /*segment*/, std::uint64_t /*begin*/,
                                  std::uint64_t /*end*/) {}
    // The walk of a segment ended without damage: its complete appends end at `records_end`.
    // Called before a kTornTail problem in that segment.
    virtual void on_segment_walked(const Segment& /*segment*/, std::uint64_t /*records_end*/) {}
  };
  // Segment `number` (one of those listed), mapped; an error when it cannot be.
  using SegmentSource = std::function<Result<std::shared_ptr<Segment>>(std::uint64_t number)>;
  struct Options {
    // Where the walk starts: a segment, an offset in it (the end of a complete append) and the
    // position the log has reached there. Segments before it are not walked.
    std::uint64_t start_segment = 1;
    std::uint64_t start_offset = 0;
    std::uint64_t next_position = 0;
    // Report kDataAfterEnd (verify): data the store never reads.
    bool check_unused_space = false;
  };

  // `segments` by number, as listed.
  LogScanner(std::vector<SegmentFileEntry> segments, SegmentSource source, Options options)
      : segments_(std::move(segments)), source_(std::move(source)), options_(options) {}

  // Walks the log; false when the visitor stopped it.
  bool run(Visitor& visitor);

  std::uint64_t segments_walked() const { return segments_walked_; }  // empty ones included
  std::uint64_t records() const { return records_; }  // every good frame, events and metadata

 private:
  bool walk_segment(Visitor& visitor, const Segment& segment, bool last, std::uint64_t from);
  bool check_positions(Visitor& visitor, const ScannedAppend& append, bool last);
  std::uint64_t last_segment_with_data();

  const std::vector<SegmentFileEntry> segments_;
  const SegmentSource source_;
  const Options options_;
  std::uint64_t segments_walked_ = 0;
  std::uint64_t records_ = 0;
  std::uint64_t next_position_ = 0;  // after the last event or removed range seen
  bool positions_unknown_ = false;   // a problem hid what came after next_position_
};

}  // namespace keel::eventlog

#include "keel/eventlog/log_check.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {

FileRead read_whole_file(const std::string& path) {
  FileRead result;
  // O_NONBLOCK: a FIFO must not block; it is refused below, as is anything not a regular file.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    result.error = std::string("cannot open: ") + std::strerror(errno);
    return result;
  }
  struct stat info;
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    result.error = "not a regular file: move it out of the directory";
    ::close(fd);
    return result;
  }
  result.opened = true;
  result.bytes.resize(static_cast<std::size_t>(info.st_size));
  std::size_t done = 0;
  while (done < result.bytes.size()) {
    ssize_t n = ::pread(fd, result.bytes.data() + done, result.bytes.size() - done,
                        static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      result.failed_at = done;
      result.error = std::string("cannot read: ") + std::strerror(errno);
      break;
    }
    if (n == 0) break;  // the file shrank while we read it
    done += static_cast<std::size_t>(n);
  }
  result.bytes.resize(done);
  ::close(fd);
  return result;
}

void LogChecker::run() {
  LogScanner::Options from_the_start;
  from_the_start.check_unused_space = true;
  LogScanner scanner(
      listing_.segments,
      [this](std::uint64_t number) -> Result<std::shared_ptr<Segment>> {
        auto entry = std::find_if(listing_.segments.begin(), listing_.segments.end(),
                                  [&](const SegmentFileEntry& e) { return e.number == number; });
        auto segment = open_segment_read_only(entry->path);
        if (segment) (*segment)->number = number;
        return segment;
      },
      from_the_start);
  scanner.run(*this);
  segments_read = scanner.segments_walked();
  records = scanner.records();
}

bool LogChecker::checked(std::uint64_t location) const {
  return std::none_of(unchecked_.begin(), unchecked_.end(), [&](const auto& range) {
    return location >= range.first && location < range.second;
  });
}

void LogChecker::log_problem(bool error, std::uint64_t segment, const std::string& path,
                             std::uint64_t offset, std::string what, std::uint64_t cut_offset) {
  Finding finding;
  finding.error = error;
  finding.problem = {path, offset, std::move(what)};
  finding.target = Target::kLog;
  finding.segment = segment;
  finding.cut_offset = cut_offset;
  sink_(std::move(finding));
}

bool LogChecker::on_append(const ScannedAppend& append) {
  check_append(append);
  return on_append_(append);
}

void LogChecker::on_broken_append(std::uint64_t segment, std::uint64_t begin, std::uint64_t end) {
  unchecked_.emplace_back(pack_location(segment, begin), pack_location(segment, end));
}

bool LogChecker::on_problem(const LogProblem& problem) {
  using Kind = LogProblem::Kind;
  const std::uint64_t segment_end = pack_location(problem.segment + 1, 0);
  auto report = [&](bool error, std::string what) {
    log_problem(error, problem.segment, problem.path, problem.offset, std::move(what),
                problem.append_begin);
  };
  switch (problem.kind) {
    case Kind::kMissingSegments:
      report(true, "segments " + segment_file_name(problem.expected) + " to " +
                       segment_file_name(problem.found - 1) +
                       " are missing (segments are numbered from 1 with none missing): the store "
                       "will not open; what follows the hole is not part of the log");
      break;
    case Kind::kUnreadableSegment:
      report(true, problem.detail);
      unchecked_.emplace_back(pack_location(problem.segment, 0), segment_end);
      break;
    case Kind::kNotASegment:
      report(true,
             "does not start with a record header or zeros: not a segment of this store "
             "(open() refuses it)");
      unchecked_.emplace_back(pack_location(problem.segment, 0), segment_end);
      break;
    case Kind::kDamagedRecord:
      report(true, std::string("record ") + frame_failure(problem.frame_status) +
                       (problem.last_segment
                            ? " and an intact record follows it: damage, not a torn write"
                            : " in a segment that is not the last: damage, not a torn write") +
                       "; nothing after it in this segment can be read");
      unchecked_.emplace_back(pack_location(problem.segment, problem.append_begin), segment_end);
      break;
    case Kind::kUndecodableRecord:
      report(true, problem.detail);
      break;
    case Kind::kPositionGap:
      // Positions going back are reported, in other words, by check_append().
      if (problem.found > problem.expected) {
        positions_missing += problem.found - problem.expected;
        report(true, "position " + std::to_string(problem.found) + " where " +
                         std::to_string(problem.expected) + " was expected: positions " +
                         std::to_string(problem.expected) + " to " +
                         std::to_string(problem.found - 1) +
                         " are missing (a segment, or part of one, is gone); open() refuses the "
                         "store");
      }
      break;
    case Kind::kIncompleteAppend:
      report(true,
             "the append starting here is not complete: the segment's records end at offset " +
                 std::to_string(problem.end) +
                 " without a record flagged last-in-append (an append never spans segments)");
      break;
    case Kind::kDamagedPadding:
      report(false,
             "non-zero bytes in the padding after the last record (they are not a record header "
             "and no record follows them): damage to unused space, nothing is lost; open() "
             "ignores them");
      break;
    case Kind::kDataAfterEnd:
      // Data the store never reads: damage to records only if a record is there.
      report(problem.hides_record,
             "the records end here (a zero length) but " +
                 std::to_string(problem.end - problem.offset) +
                 " bytes of data follow, up to offset " + std::to_string(problem.end) +
                 (problem.hides_record
                      ? ", with an intact record among them: the store never reads it"
                      : "; no record is among them: damage to unused space, nothing is lost"));
      break;
    case Kind::kTornTail: {
      const std::string what =
          problem.frame_status != RecordView::Status::kOk
              ? std::string("a record that ") + frame_failure(problem.frame_status)
          : problem.append_open ? "an append without its last record"
                                : "bytes after the end of the records";
      report(false, "torn tail: " + std::to_string(problem.end - problem.offset) +
                        " bytes from here hold " + what +
                        ", not a complete append; open() will cut them");
      break;
    }
  }
  return true;
}

void LogChecker::check_append(const ScannedAppend& append) {
  const std::uint64_t segment = append.segment;
  const std::string& path = *append.path;
  if (append.records.front().is_removed) {
    positions_missing += append.records.front().removed.count;
    return;
  }
  const std::string& stream = append.records.front().stream();
  std::optional<std::uint64_t> previous_position;
  std::optional<std::uint64_t> previous_version;
  for (const ScannedRecord& record : append.records) {
    const std::string& name = record.stream();
    if (name != stream) {
      log_problem(true, segment, path, record.offset,
                  "one append holds records of streams '" + stream + "' and '" + name + "'",
                  append.begin);
    }
    StreamState& state = streams[name];
    if (!record.is_event) {
      ++metadata_records;
      auto stored = StoredMetadata::from_json(record.metadata.json);
      if (!stored) {
        log_problem(true, segment, path, record.offset,
                    "metadata of stream '" + name + "': " + stored.error().message(), append.begin);
      } else if (stored->tombstone) {
        state.tombstone = true;
      }
      continue;
    }
    ++events;
    const RecordedEvent& event = record.event;
    if (last_position && event.position <= *last_position) {
      log_problem(true, segment, path, record.offset,
                  "event position " + std::to_string(event.position) +
                      " repeats or goes back (an earlier event has position " +
                      std::to_string(*last_position) + ")",
                  append.begin);
    } else {
      if (previous_position && event.position != *previous_position + 1) {
        log_problem(true, segment, path, record.offset,
                    "positions within one append are not consecutive (" +
                        std::to_string(*previous_position) + " then " +
                        std::to_string(event.position) + ")",
                    append.begin);
      }
      if (!first_position) first_position = event.position;
      last_position = event.position;
    }
    if (state.last_version && event.version <= *state.last_version) {
      log_problem(true, segment, path, record.offset,
                  "stream '" + name + "' version " + std::to_string(event.version) +
                      " does not increase (an earlier event of the stream is version " +
                      std::to_string(*state.last_version) + ")",
                  append.begin);
    } else {
      if (previous_version && event.version != *previous_version + 1) {
        log_problem(true, segment, path, record.offset,
                    "versions within one append are not consecutive (" +
                        std::to_string(*previous_version) + " then " +
                        std::to_string(event.version) + ")",
                    append.begin);
      }
      state.last_version = event.version;
    }
    if (state.tombstone) {
      log_problem(true, segment, path, record.offset,
                  "event of stream '" + name + "' after the stream was hard-deleted", append.begin);
    }
    previous_position = event.position;
    previous_version = event.version;
  }
}

}  // namespace keel::eventlog

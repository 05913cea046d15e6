#include "keel/eventlog/inspect.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <new>
#include <stdexcept>

#include "keel/core/hash.h"
#include "keel/eventlog/crc32c.h"
#include "keel/eventlog/event_store_impl.h"
#include "keel/eventlog/record.h"

namespace keel::eventlog {
namespace {

constexpr char kCheckpointName[] = "index.chk";
constexpr char kScavengeMarker[] = "scavenge.pending";
constexpr char kQuarantine[] = "quarantine";
// index.chk: magic, replay segment, replay offset, count, then the locations (checkpoint.cc).
constexpr std::uint64_t kCheckpointLocationsAt = 8 + 8 + 8 + 8;
constexpr std::size_t kDumpFieldChars = 200;

std::string join(const std::string& directory, const std::string& name) {
  return directory + "/" + name;
}

std::string snapshot_file_name(std::string_view stream) {
  char name[32];
  std::snprintf(name, sizeof name, "%016llx.snap", static_cast<unsigned long long>(hash64(stream)));
  return name;
}

std::string location_text(std::uint64_t location) {
  return segment_file_name(location_segment(location)) + " offset " +
         std::to_string(location_offset(location));
}

// ---- reading files without trusting them ----

struct FileRead {
  bool opened = false;
  std::string bytes;                       // what could be read
  std::optional<std::uint64_t> failed_at;  // a read error at this offset cut `bytes` short
  std::string error;                       // why it could not be opened or read
};

FileRead read_file(const std::string& path) {
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

// A segment mapped read-only rather than read into memory: segments can be large, and a
// sparse one huge. `bytes` ends at the file's last data extent (what lies after it is zeros).
class MappedSegment {
 public:
  explicit MappedSegment(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) {
      error = std::string("cannot open: ") + std::strerror(errno);
      return;
    }
    struct stat info;
    if (::fstat(fd_, &info) != 0 || !S_ISREG(info.st_mode)) {
      error = "not a regular file: move it out of the directory";
      return;
    }
    size = static_cast<std::uint64_t>(info.st_size);
    if (size > 0) {
      void* map = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd_, 0);
      if (map == MAP_FAILED) {
        error = std::string("cannot map: ") + std::strerror(errno);
        return;
      }
      map_ = static_cast<const char*>(map);
    }
    bytes = std::string_view(map_, data_extent_end(fd_, size));
    opened = true;
  }
  ~MappedSegment() {
    if (map_ != nullptr) ::munmap(const_cast<char*>(map_), size);
    if (fd_ >= 0) ::close(fd_);
  }
  MappedSegment(const MappedSegment&) = delete;
  MappedSegment& operator=(const MappedSegment&) = delete;

  bool opened = false;
  std::string error;
  std::uint64_t size = 0;
  std::string_view bytes;

 private:
  int fd_ = -1;
  const char* map_ = nullptr;
};

// ---- the directory ----

struct SegmentFile {
  std::uint64_t number = 0;
  std::string name;
  std::string path;
};

struct Listing {
  std::vector<SegmentFile> segments;  // by number
  // 12-character *.seg names without 8 digits: not segments, though they look like them.
  std::vector<std::string> misnamed;
  std::vector<std::string> leftovers;  // *.tmp, *.scavenge, *.repair: interrupted writes
};

Result<Listing> list_directory(const std::string& directory) {
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) {
    return Error(errc::io_error,
                 "cannot read directory " + directory + ": " + std::strerror(errno));
  }
  Listing listing;
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name.size() == 12 && name.ends_with(".seg")) {
      if (std::all_of(name.begin(), name.begin() + 8,
                      [](char c) { return c >= '0' && c <= '9'; })) {
        listing.segments.push_back({std::stoull(name.substr(0, 8)), name, join(directory, name)});
      } else {
        listing.misnamed.push_back(name);
      }
    } else if (name.ends_with(".tmp") || name.ends_with(".scavenge") || name.ends_with(".repair")) {
      listing.leftovers.push_back(name);
    }
  }
  ::closedir(dir);
  std::sort(listing.segments.begin(), listing.segments.end(),
            [](const SegmentFile& a, const SegmentFile& b) { return a.number < b.number; });
  std::sort(listing.misnamed.begin(), listing.misnamed.end());
  std::sort(listing.leftovers.begin(), listing.leftovers.end());
  return listing;
}

// ---- findings ----

// What a problem is in, so that repair knows what to move aside.
enum class Target { kLog, kCheckpoint, kSnapshot, kFile };

struct Finding {
  bool error = true;
  VerifyProblem problem;
  Target target = Target::kFile;
  std::uint64_t segment = 0;     // kLog: the segment's number
  std::uint64_t cut_offset = 0;  // kLog: the append boundary at or before the damage
};

using FindingSink = std::function<void(Finding)>;

// ---- walking the log ----

struct ScannedRecord {
  std::uint64_t offset = 0;
  bool is_event = true;
  bool is_removed = false;  // a removed range (neither event nor metadata)
  RecordedEvent event;
  MetadataRecord metadata;
  RemovedRange removed;
  const std::string& stream() const { return is_event ? event.stream : metadata.stream; }
};

// One complete append (its last record carries kLastInAppend) whose records all decoded.
struct ScannedAppend {
  const SegmentFile* segment = nullptr;
  std::uint64_t begin = 0;
  std::uint64_t end = 0;
  std::vector<ScannedRecord> records;
};

struct StreamState {
  std::optional<std::uint64_t> last_version;
  bool tombstone = false;
};

// Reads every segment in order, checks frames and the log's logic, and hands each complete
// append to `on_append` (which returns false to stop). The torn-tail rule is
// EventStore::Impl::recover()'s: what it would cut is a warning; any other damage is an error.
class LogScanner {
 public:
  using AppendHandler = std::function<bool(const ScannedAppend&)>;

  LogScanner(const Listing& listing, FindingSink sink, AppendHandler on_append)
      : listing_(listing), sink_(std::move(sink)), on_append_(std::move(on_append)) {}

  void run() {
    // The torn-tail rule applies to the last segment holding anything: segments after it are
    // empty (a roll's new segment, created before a crash let anything reach it).
    std::uint64_t last_with_data = listing_.segments.empty() ? 0 : listing_.segments[0].number;
    for (auto it = listing_.segments.rbegin(); it != listing_.segments.rend(); ++it) {
      MappedSegment file(it->path);
      if (!file.opened || written_end(file.bytes, 0) > 0) {
        last_with_data = it->number;
        break;
      }
    }
    std::uint64_t expected_number = 1;
    for (std::size_t i = 0; i < listing_.segments.size() && !stopped_; ++i) {
      const SegmentFile& segment = listing_.segments[i];
      if (segment.number != expected_number) {
        Finding finding;
        finding.problem = {
            segment.path, 0,
            "segments " + segment_file_name(expected_number) + " to " +
                segment_file_name(segment.number - 1) +
                " are missing (segments are numbered from 1 with none missing): the store will "
                "not open; what follows the hole is not part of the log"};
        finding.target = Target::kLog;
        finding.segment = segment.number;
        sink_(std::move(finding));
      }
      expected_number = segment.number + 1;
      if (segment.number > last_with_data) {
        ++segments_read;
        continue;  // empty
      }
      scan_segment(segment, segment.number == last_with_data);
    }
  }

  std::uint64_t segments_read = 0;
  std::uint64_t records = 0;
  std::uint64_t events = 0;
  std::uint64_t metadata_records = 0;
  std::optional<std::uint64_t> first_position;
  std::optional<std::uint64_t> last_position;
  std::uint64_t positions_missing = 0;
  std::map<std::string, StreamState> streams;

  // Whether the record at `location` was checked: false inside a damaged append and after
  // damage that stopped the walk of a segment (the error there covers it).
  bool checked(std::uint64_t location) const {
    return std::none_of(unchecked_.begin(), unchecked_.end(), [&](const auto& range) {
      return location >= range.first && location < range.second;
    });
  }

 private:
  void log_problem(bool error, const SegmentFile& segment, std::uint64_t offset, std::string what,
                   std::uint64_t cut_offset) {
    Finding finding;
    finding.error = error;
    finding.problem = {segment.path, offset, std::move(what)};
    finding.target = Target::kLog;
    finding.segment = segment.number;
    finding.cut_offset = cut_offset;
    sink_(std::move(finding));
  }

  void scan_segment(const SegmentFile& segment, bool last);
  void check_append(const ScannedAppend& append);
  // Positions are gap-free: scavenged ones are accounted for by removed-range records.
  void check_next_position(const SegmentFile& segment, std::uint64_t offset, std::uint64_t position,
                           std::uint64_t append_begin) {
    // After damage stopped the walk of a segment, what it hid is unknown: no second error.
    if (std::exchange(positions_unknown_, false)) return;
    if (position <= next_position_) return;  // going back: reported by check_append
    positions_missing += position - next_position_;
    log_problem(true, segment, offset,
                "position " + std::to_string(position) + " where " +
                    std::to_string(next_position_) + " was expected: positions " +
                    std::to_string(next_position_) + " to " + std::to_string(position - 1) +
                    " are missing (a segment, or part of one, is gone); open() refuses the store",
                append_begin);
  }

  const Listing& listing_;
  FindingSink sink_;
  AppendHandler on_append_;
  bool stopped_ = false;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> unchecked_;  // [begin, end) locations
  std::uint64_t next_position_ = 0;  // after the last event or removed range seen
  bool positions_unknown_ = false;   // damage hid what came after next_position_
};

void LogScanner::scan_segment(const SegmentFile& segment, bool last) {
  MappedSegment file(segment.path);
  ++segments_read;
  const std::uint64_t segment_end = pack_location(segment.number + 1, 0);
  if (!file.opened) {
    log_problem(true, segment, 0, file.error, 0);
    unchecked_.emplace_back(pack_location(segment.number, 0), segment_end);
    positions_unknown_ = true;
    return;
  }
  const std::string_view bytes = file.bytes;
  const std::string_view start = bytes.substr(0, kRecordHeaderBytes + 4);
  if (std::any_of(start.begin(), start.end(), [](char c) { return c != 0; }) &&
      !plausible_header(bytes)) {
    log_problem(true, segment, 0,
                "does not start with a record header or zeros: not a segment of this store "
                "(open() refuses it)",
                0);
    unchecked_.emplace_back(pack_location(segment.number, 0), segment_end);
    positions_unknown_ = true;
    return;
  }
  std::uint64_t offset = 0;
  std::uint64_t good_end = 0;  // end of the last complete append
  ScannedAppend append{&segment, 0, 0, {}};
  bool append_broken = false;    // a record of the current append failed to decode
  bool damaged = false;          // an error stopped the walk: nothing after it is checked
  std::string torn_record;       // why the walk stopped at a record that may be a torn write
  bool padding_damaged = false;  // non-zero bytes after the records, already reported
  while (offset < bytes.size() && !stopped_) {
    RecordView frame = read_frame(bytes.substr(offset));
    if (frame.status == RecordView::Status::kEnd) break;
    if (frame.status != RecordView::Status::kOk) {
      const char* why = frame.status == RecordView::Status::kBadCrc      ? "fails its CRC"
                        : frame.status == RecordView::Status::kTruncated ? "is cut short"
                                                                         : "is malformed";
      const bool intact_after = intact_record_after(bytes, offset + 1);
      if (last && !intact_after) {
        torn_record = std::string("a record that ") + why;
        break;
      }
      if (!last && !intact_after && offset == good_end && append.records.empty() &&
          !append_broken && !plausible_header(bytes.substr(offset))) {
        log_problem(false, segment, offset,
                    std::string("non-zero bytes in the padding after the last record (they are "
                                "not a record header and no record follows them): damage to "
                                "unused space, nothing is lost; open() ignores them"),
                    good_end);
        padding_damaged = true;
        break;
      }
      log_problem(true, segment, offset,
                  std::string("record ") + why +
                      (last ? " and an intact record follows it: damage, not a torn write"
                            : " in a segment that is not the last: damage, not a torn write") +
                      "; nothing after it in this segment can be read",
                  good_end);
      damaged = true;
      break;
    }
    ++records;
    ScannedRecord record;
    record.offset = offset;
    record.is_event = frame.kind == RecordKind::kEvent;
    record.is_removed = frame.kind == RecordKind::kRemoved;
    bool decoded = true;
    if (record.is_removed) {
      auto removed = decode_removed(frame);
      if (removed && (!append.records.empty() || append_broken)) {
        removed = Error(errc::corrupt, "a removed range inside another append");
      }
      if (removed) {
        record.removed = *removed;
      } else {
        decoded = false;
        log_problem(true, segment, offset, removed.error().message(), good_end);
      }
    } else if (record.is_event) {
      auto event = decode_event(frame);
      if (event) {
        record.event = std::move(*event);
      } else {
        decoded = false;
        log_problem(true, segment, offset, event.error().message(), good_end);
      }
    } else {
      auto metadata = decode_metadata(frame);
      if (metadata) {
        record.metadata = std::move(*metadata);
      } else {
        decoded = false;
        log_problem(true, segment, offset, metadata.error().message(), good_end);
      }
    }
    if (decoded) {
      append.records.push_back(std::move(record));
    } else {
      append_broken = true;
    }
    offset += frame.size;
    if (frame.flags & kLastInAppend) {
      append.begin = good_end;
      append.end = offset;
      if (!append_broken) {
        check_append(append);
        if (!on_append_(append)) stopped_ = true;
      }
      if (append_broken) {
        unchecked_.emplace_back(pack_location(segment.number, good_end),
                                pack_location(segment.number, offset));
        positions_unknown_ = true;
      }
      append.records.clear();
      append_broken = false;
      good_end = offset;
    }
  }
  if (stopped_) return;
  if (damaged) {
    unchecked_.emplace_back(pack_location(segment.number, good_end), segment_end);
    positions_unknown_ = true;
    return;
  }
  const bool append_open = !append.records.empty() || append_broken;
  if (last) {
    // What open() cuts: everything not zero after the last complete append.
    std::uint64_t end = written_end(bytes, good_end);
    if (end > good_end) {
      std::string what = !torn_record.empty() ? torn_record
                         : append_open        ? "an append without its last record"
                                              : "bytes after the end of the records";
      log_problem(false, segment, good_end,
                  "torn tail: " + std::to_string(end - good_end) + " bytes from here hold " + what +
                      ", not a complete append; open() will cut them",
                  good_end);
    }
    return;
  }
  if (append_open) {
    log_problem(true, segment, good_end,
                "the append starting here is not complete: the segment's records end at offset " +
                    std::to_string(offset) +
                    " without a record flagged last-in-append (an append never spans segments)",
                good_end);
  }
  std::uint64_t end = padding_damaged ? offset : written_end(bytes, offset);
  if (end > offset) {
    // Data the store never reads: damage to records only if a record is there.
    const bool record_hidden = intact_record_after(bytes, offset);
    log_problem(record_hidden, segment, offset,
                "the records end here (a zero length) but " + std::to_string(end - offset) +
                    " bytes of data follow, up to offset " + std::to_string(end) +
                    (record_hidden ? ", with an intact record among them: the store never reads it"
                                   : "; no record is among them: damage to unused space, "
                                     "nothing is lost"),
                good_end);
  }
}

void LogScanner::check_append(const ScannedAppend& append) {
  const SegmentFile& segment = *append.segment;
  if (append.records.front().is_removed) {
    const ScannedRecord& record = append.records.front();
    check_next_position(segment, record.offset, record.removed.first_position, append.begin);
    next_position_ = record.removed.first_position + record.removed.count;
    positions_missing += record.removed.count;
    return;
  }
  const std::string& stream = append.records.front().stream();
  std::optional<std::uint64_t> previous_position;
  std::optional<std::uint64_t> previous_version;
  for (const ScannedRecord& record : append.records) {
    const std::string& name = record.stream();
    if (name != stream) {
      log_problem(true, segment, record.offset,
                  "one append holds records of streams '" + stream + "' and '" + name + "'",
                  append.begin);
    }
    StreamState& state = streams[name];
    if (!record.is_event) {
      ++metadata_records;
      auto stored = StoredMetadata::from_json(record.metadata.json);
      if (!stored) {
        log_problem(true, segment, record.offset,
                    "metadata of stream '" + name + "': " + stored.error().message(), append.begin);
      } else if (stored->tombstone) {
        state.tombstone = true;
      }
      continue;
    }
    ++events;
    const RecordedEvent& event = record.event;
    check_next_position(segment, record.offset, event.position, append.begin);
    next_position_ = std::max(next_position_, event.position + 1);
    if (last_position && event.position <= *last_position) {
      log_problem(true, segment, record.offset,
                  "event position " + std::to_string(event.position) +
                      " repeats or goes back (an earlier event has position " +
                      std::to_string(*last_position) + ")",
                  append.begin);
    } else {
      if (previous_position && event.position != *previous_position + 1) {
        log_problem(true, segment, record.offset,
                    "positions within one append are not consecutive (" +
                        std::to_string(*previous_position) + " then " +
                        std::to_string(event.position) + ")",
                    append.begin);
      }
      if (!first_position) first_position = event.position;
      last_position = event.position;
    }
    if (state.last_version && event.version <= *state.last_version) {
      log_problem(true, segment, record.offset,
                  "stream '" + name + "' version " + std::to_string(event.version) +
                      " does not increase (an earlier event of the stream is version " +
                      std::to_string(*state.last_version) + ")",
                  append.begin);
    } else {
      if (previous_version && event.version != *previous_version + 1) {
        log_problem(true, segment, record.offset,
                    "versions within one append are not consecutive (" +
                        std::to_string(*previous_version) + " then " +
                        std::to_string(event.version) + ")",
                    append.begin);
      }
      state.last_version = event.version;
    }
    if (state.tombstone) {
      log_problem(true, segment, record.offset,
                  "event of stream '" + name + "' after the stream was hard-deleted", append.begin);
    }
    previous_position = event.position;
    previous_version = event.version;
  }
}

// ---- index.chk ----

// The checkpoint as open() would use it, when it would.
struct TrustedCheckpoint {
  Index index;
  std::uint64_t replay_location = 0;
  std::vector<bool> matched;  // by position: an event was found where the index says
  bool replay_point_found = false;
};

std::optional<TrustedCheckpoint> load_checkpoint(const std::string& directory,
                                                 const Listing& listing, bool& present,
                                                 const FindingSink& sink) {
  const std::string path = join(directory, kCheckpointName);
  auto problem = [&](bool error, const std::string& file, std::uint64_t offset,
                     const std::string& what) {
    Finding finding;
    finding.error = error;
    finding.problem = {file, offset, what};
    finding.target = Target::kCheckpoint;
    sink(std::move(finding));
  };
  struct stat info;
  present = ::stat(path.c_str(), &info) == 0;
  if (!present) return std::nullopt;
  Result<LoadedCheckpoint> loaded = Error(errc::corrupt, path + ": index checkpoint unreadable");
  try {
    loaded = read_checkpoint(path);
  } catch (const std::bad_alloc&) {
    // read_checkpoint() reserves what the file's counts say; garbage that passes the CRC can
    // ask for more memory than there is.
    loaded = Error(errc::corrupt, path + ": index checkpoint holds impossible counts");
  } catch (const std::length_error&) {
    loaded = Error(errc::corrupt, path + ": index checkpoint holds impossible counts");
  }
  if (!loaded) {
    bool unreadable = loaded.error().is(errc::io_error);
    problem(unreadable, path, 0,
            loaded.error().message() +
                (unreadable ? "" : "; open() ignores it and rebuilds the index from the log"));
    return std::nullopt;
  }
  if (!loaded->has_value()) return std::nullopt;
  if (::access(join(directory, kScavengeMarker).c_str(), F_OK) == 0) {
    problem(false, join(directory, kScavengeMarker), 0,
            "a scavenge was cut short: open() ignores index.chk, rebuilds the index from the log "
            "and removes this marker");
    return std::nullopt;
  }
  TrustedCheckpoint checkpoint;
  checkpoint.index = std::move((*loaded)->first);
  const Index& index = checkpoint.index;
  bool replay_segment_exists =
      std::any_of(listing.segments.begin(), listing.segments.end(),
                  [&](const SegmentFile& s) { return s.number == index.replay_segment; });
  if (!listing.segments.empty() && !replay_segment_exists) {
    problem(false, path, 8,
            "its replay point is in " + segment_file_name(index.replay_segment) +
                ", which does not exist: open() ignores index.chk and rebuilds the index from "
                "the log");
    return std::nullopt;
  }
  if (index.replay_offset >= (1ull << kOffsetBits)) {
    problem(true, path, 16,
            "its replay offset " + std::to_string(index.replay_offset) + " is impossible");
    return std::nullopt;
  }
  checkpoint.replay_location = pack_location(index.replay_segment, index.replay_offset);
  checkpoint.replay_point_found = index.replay_offset == 0;
  checkpoint.matched.assign(index.locations.size(), false);
  return checkpoint;
}

// Checks one append against the checkpoint: every event before the replay point must be listed
// at its location.
void check_against_checkpoint(TrustedCheckpoint& checkpoint, const std::string& checkpoint_path,
                              const ScannedAppend& append, const FindingSink& sink) {
  const SegmentFile& segment = *append.segment;
  if (segment.number == checkpoint.index.replay_segment &&
      append.end == checkpoint.index.replay_offset) {
    checkpoint.replay_point_found = true;
  }
  for (const ScannedRecord& record : append.records) {
    if (!record.is_event) continue;
    std::uint64_t location = pack_location(segment.number, record.offset);
    if (location >= checkpoint.replay_location) return;
    std::uint64_t position = record.event.position;
    const auto& locations = checkpoint.index.locations;
    std::string what;
    if (position >= locations.size()) {
      what = "event at position " + std::to_string(position) +
             " lies before index.chk's replay point, but index.chk does not list it: the store "
             "will not show it";
    } else if (locations[position] == location) {
      checkpoint.matched[position] = true;
      continue;
    } else if (locations[position] == kRemoved) {
      what = "event at position " + std::to_string(position) +
             " is in the log, but index.chk marks it removed: the store will not show it";
    } else {
      what = "event at position " + std::to_string(position) + " is here, but index.chk says " +
             location_text(locations[position]);
    }
    Finding finding;
    finding.problem = {segment.path, record.offset, what + " (" + checkpoint_path + ")"};
    finding.target = Target::kCheckpoint;
    sink(std::move(finding));
  }
}

// Locations the log walk could not check (after damage) are left to the log's own errors.
void finish_checkpoint_check(const TrustedCheckpoint& checkpoint, const std::string& path,
                             const LogScanner& log, const FindingSink& sink) {
  auto error = [&](std::uint64_t offset, const std::string& what) {
    Finding finding;
    finding.problem = {path, offset, what};
    finding.target = Target::kCheckpoint;
    sink(std::move(finding));
  };
  if (!checkpoint.replay_point_found && log.checked(checkpoint.replay_location)) {
    error(8, "its replay point (" + location_text(checkpoint.replay_location) +
                 ") is not the end of a complete append in the log: open() would replay the log "
                 "from there");
  }
  const auto& locations = checkpoint.index.locations;
  for (std::uint64_t position = 0; position < locations.size(); ++position) {
    if (locations[position] == kRemoved || checkpoint.matched[position] ||
        !log.checked(locations[position])) {
      continue;
    }
    error(kCheckpointLocationsAt + 8 * position,
          "lists position " + std::to_string(position) + " at " +
              location_text(locations[position]) +
              ", but no event with that position is there before the replay point");
  }
}

// ---- snapshots ----

void check_snapshots(const std::string& directory, const LogScanner& log, VerifyReport& report,
                     const FindingSink& sink) {
  const std::string snapshots = join(directory, "snapshots");
  DIR* dir = ::opendir(snapshots.c_str());
  if (dir == nullptr) {
    if (errno != ENOENT) {  // absent is fine: open() creates it
      Finding finding;
      finding.error = false;
      finding.problem = {snapshots, 0, std::string("cannot read: ") + std::strerror(errno)};
      sink(std::move(finding));
    }
    return;
  }
  std::vector<std::string> names;
  while (dirent* entry = ::readdir(dir)) names.emplace_back(entry->d_name);
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  auto problem = [&](bool error, const std::string& path, std::uint64_t offset,
                     const std::string& what) {
    Finding finding;
    finding.error = error;
    finding.problem = {path, offset, what};
    finding.target = error ? Target::kSnapshot : Target::kFile;
    sink(std::move(finding));
  };
  for (const std::string& name : names) {
    const std::string path = join(snapshots, name);
    if (name.ends_with(".tmp")) {
      problem(false, path, 0, "left over from an interrupted snapshot write; safe to delete");
      continue;
    }
    if (!name.ends_with(".snap")) continue;
    FileRead file = read_file(path);
    if (!file.opened || file.failed_at) {
      problem(true, path, file.failed_at.value_or(0), file.error);
      continue;
    }
    const std::string& bytes = file.bytes;
    const char* damaged = "load_snapshot() fails for its stream";
    if (bytes.size() < 8 + 4 + 8 + 4 + 4 || bytes.compare(0, 8, "KEELSNP1") != 0) {
      problem(true, path, 0, std::string("no KEELSNP1 header: ") + damaged);
      continue;
    }
    std::uint32_t crc = 0;
    std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
    if (crc32c(bytes.data(), bytes.size() - 4) != crc) {
      problem(true, path, bytes.size() - 4, std::string("fails its CRC: ") + damaged);
      continue;
    }
    std::uint32_t stream_size = 0;
    std::uint32_t data_size = 0;
    std::uint64_t version = 0;
    std::memcpy(&stream_size, bytes.data() + 8, 4);
    if (12 + std::uint64_t{stream_size} + 12 + 4 > bytes.size()) {
      problem(true, path, 8, std::string("its stream name runs past the end: ") + damaged);
      continue;
    }
    std::memcpy(&version, bytes.data() + 12 + stream_size, 8);
    std::memcpy(&data_size, bytes.data() + 20 + stream_size, 4);
    if (24 + std::uint64_t{stream_size} + data_size + 4 != bytes.size()) {
      problem(true, path, 20 + std::uint64_t{stream_size},
              std::string("its data length does not match the file's size: ") + damaged);
      continue;
    }
    ++report.snapshots;
    const std::string stream = bytes.substr(12, stream_size);
    if (snapshot_file_name(stream) != name) {
      problem(false, path, 12,
              "holds stream '" + stream + "', whose snapshot is " + snapshot_file_name(stream) +
                  ": load_snapshot() never reads this file");
      continue;
    }
    auto state = log.streams.find(stream);
    if (state == log.streams.end() || !state->second.last_version) {
      problem(false, path, 12 + std::uint64_t{stream_size},
              "snapshot of stream '" + stream + "' at version " + std::to_string(version) +
                  ", but the log holds no event of that stream");
    } else if (version > *state->second.last_version) {
      problem(false, path, 12 + std::uint64_t{stream_size},
              "snapshot of stream '" + stream + "' at version " + std::to_string(version) +
                  ", beyond the stream's last event in the log (version " +
                  std::to_string(*state->second.last_version) + ")");
    }
  }
}

// ---- verify ----

// verify_store(), also handing every finding, listed or not, to `all` when given.
Result<VerifyReport> verify(const std::string& directory, std::vector<Finding>* all) {
  auto listing = list_directory(directory);
  if (!listing) return listing.error();
  VerifyReport report;
  FindingSink sink = [&](Finding finding) {
    auto& list = finding.error ? report.errors : report.warnings;
    if (list.size() < VerifyReport::kMaxListed) {
      list.push_back(finding.problem);
    } else {
      ++(finding.error ? report.errors_not_listed : report.warnings_not_listed);
    }
    if (all != nullptr) all->push_back(std::move(finding));
  };
  for (const std::string& name : listing->misnamed) {
    Finding finding;
    finding.error = false;
    finding.problem = {join(directory, name), 0,
                       "named like a segment but not NNNNNNNN.seg: open() does not read it; "
                       "move it out of the directory"};
    sink(std::move(finding));
  }
  for (const std::string& name : listing->leftovers) {
    Finding finding;
    finding.error = false;
    finding.problem = {join(directory, name), 0,
                       "left over from an interrupted write; open() ignores it, safe to delete"};
    sink(std::move(finding));
  }
  if (listing->segments.empty()) {
    Finding finding;
    finding.error = false;
    finding.problem = {directory, 0,
                       "no segment files (NNNNNNNN.seg): an empty store, or not a store's "
                       "directory"};
    sink(std::move(finding));
  }

  const std::string checkpoint_path = join(directory, kCheckpointName);
  std::optional<TrustedCheckpoint> checkpoint =
      load_checkpoint(directory, *listing, report.checkpoint_present, sink);
  LogScanner log(*listing, sink, [&](const ScannedAppend& append) {
    if (checkpoint) check_against_checkpoint(*checkpoint, checkpoint_path, append, sink);
    return true;
  });
  log.run();
  if (checkpoint) finish_checkpoint_check(*checkpoint, checkpoint_path, log, sink);
  check_snapshots(directory, log, report, sink);

  report.segments = log.segments_read;
  report.records = log.records;
  report.events = log.events;
  report.metadata_records = log.metadata_records;
  report.streams = log.streams.size();
  report.first_position = log.first_position;
  report.last_position = log.last_position;
  report.positions_missing = log.positions_missing;
  return report;
}

// ---- dump ----

// Printable ASCII as is; other bytes escaped. Stops after about `max_chars` characters.
std::string escape(std::string_view bytes, std::size_t max_chars, bool escape_space) {
  std::string out;
  std::size_t i = 0;
  for (; i < bytes.size() && out.size() < max_chars; ++i) {
    auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c < 0x20 || c >= 0x7f || (escape_space && c == ' ')) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i < bytes.size()) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

std::string iso8601(std::int64_t unix_ns) {
  constexpr std::int64_t kBillion = 1000000000;
  std::int64_t seconds = unix_ns / kBillion;
  std::int64_t nanos = unix_ns % kBillion;
  if (nanos < 0) {
    nanos += kBillion;
    --seconds;
  }
  auto time = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (::gmtime_r(&time, &tm) == nullptr || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999) {
    return std::to_string(unix_ns) + "ns";
  }
  char text[48];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02d.%06lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(nanos / 1000));
  return text;
}

// ---- repair ----

class DirectoryLock {
 public:
  ~DirectoryLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status acquire(const std::string& directory) {
    std::string path = join(directory, "LOCK");
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) return io_error("cannot open", path, errno);
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      return Error(errc::io_error,
                   directory + " is open in another process (LOCK is held); stop it first");
    }
    return {};
  }

 private:
  int fd_ = -1;
};

// Moves files into DIR/quarantine/ (never over an earlier one) and remembers what it moved.
class Quarantine {
 public:
  explicit Quarantine(std::string directory) : directory_(std::move(directory)) {}

  // `name` is relative to the store's directory; the file keeps it below quarantine/.
  Result<std::string> destination(const std::string& name) {
    std::string base = std::string(kQuarantine) + "/" + name;
    std::vector<std::string> folders = {kQuarantine};
    if (auto slash = name.rfind('/'); slash != std::string::npos) {
      folders.push_back(std::string(kQuarantine) + "/" + name.substr(0, slash));
    }
    for (const std::string& folder : folders) {
      if (::mkdir(join(directory_, folder).c_str(), 0755) != 0 && errno != EEXIST) {
        return io_error("cannot create", join(directory_, folder), errno);
      }
    }
    std::string relative = base;
    for (int n = 1; ::access(join(directory_, relative).c_str(), F_OK) == 0; ++n) {
      relative = base + "." + std::to_string(n);
    }
    return relative;
  }

  Status move(const std::string& name) {
    auto to = destination(name);
    if (!to) return to.error();
    if (::rename(join(directory_, name).c_str(), join(directory_, *to).c_str()) != 0) {
      return io_error("cannot move into " + std::string(kQuarantine) + ":", join(directory_, name),
                      errno);
    }
    moved.push_back(*to);
    return {};
  }

  // Keeps `name` as it is now under quarantine/ (a hard link) and puts `bytes_before_cut`
  // followed by zeros, in a file of the same size, in its place.
  Status cut(const std::string& name, std::string_view bytes_before_cut, std::uint64_t size) {
    auto to = destination(name);
    if (!to) return to.error();
    std::string path = join(directory_, name);
    std::string temporary = path + ".repair";
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return io_error("cannot create", temporary, errno);
    auto fail = [&](const char* what) {
      int error_number = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      return io_error(what, temporary, error_number);
    };
    std::size_t written = 0;
    while (written < bytes_before_cut.size()) {
      ssize_t n = ::write(fd, bytes_before_cut.data() + written, bytes_before_cut.size() - written);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail("cannot write");
      }
      written += static_cast<std::size_t>(n);
    }
    // posix_fallocate returns its error; it does not set errno.
    if (int failed = size > 0 ? ::posix_fallocate(fd, 0, static_cast<off_t>(size)) : 0;
        failed != 0) {
      errno = failed;
      return fail("cannot allocate");
    }
    if (::fdatasync(fd) != 0) return fail("cannot sync");
    ::close(fd);
    if (::link(path.c_str(), join(directory_, *to).c_str()) != 0) {
      int error_number = errno;
      ::unlink(temporary.c_str());
      return io_error("cannot link into " + std::string(kQuarantine) + ":", path, error_number);
    }
    moved.push_back(*to);
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
      return io_error("cannot rename", temporary, errno);
    }
    return {};
  }

  Status sync() {
    for (const std::string& sub :
         {std::string(kQuarantine), std::string(kQuarantine) + "/snapshots",
          std::string("snapshots"), std::string()}) {
      std::string path = sub.empty() ? directory_ : join(directory_, sub);
      if (::access(path.c_str(), F_OK) != 0) continue;
      if (auto synced = sync_directory(path); !synced) return synced;
    }
    return {};
  }

  std::vector<std::string> moved;

 private:
  std::string directory_;
};

bool before_cut(std::uint64_t segment, std::uint64_t end, std::uint64_t cut_segment,
                std::uint64_t cut_offset) {
  return segment < cut_segment || (segment == cut_segment && end <= cut_offset);
}

}  // namespace

std::string VerifyProblem::to_string() const {
  return file + " offset " + std::to_string(offset) + ": " + what;
}

std::string VerifyReport::summary() const {
  std::string text = std::to_string(segments) + " segments, " + std::to_string(records) +
                     " records: " + std::to_string(events) + " events in " +
                     std::to_string(streams) + " streams, " + std::to_string(metadata_records) +
                     " metadata records\n";
  if (first_position) {
    text += "positions " + std::to_string(*first_position) + " to " +
            std::to_string(*last_position) + ", " + std::to_string(positions_missing) +
            " missing (scavenged, or lost where an error says so)\n";
  }
  text += std::string("index checkpoint: ") + (checkpoint_present ? "present" : "absent") + ", " +
          std::to_string(snapshots) + " snapshots\n";
  text += std::to_string(errors.size() + errors_not_listed) + " errors, " +
          std::to_string(warnings.size() + warnings_not_listed) + " warnings";
  return text;
}

Result<VerifyReport> verify_store(const std::string& directory) {
  return verify(directory, nullptr);
}

Status dump_store(const std::string& directory, std::ostream& out, const DumpOptions& options) {
  auto listing = list_directory(directory);
  if (!listing) return listing.error();
  if (options.limit == 0) return {};
  bool damaged = false;
  for (const std::string& name : listing->misnamed) {
    out << "# warning: " << join(directory, name)
        << ": named like a segment but not NNNNNNNN.seg; not read\n";
  }
  std::size_t printed = 0;
  std::uint64_t next_position = 0;  // after the last event seen, of any stream
  FindingSink sink = [&](Finding finding) {
    damaged = damaged || finding.error;
    out << (finding.error ? "# error: " : "# warning: ") << finding.problem.to_string() << "\n";
  };
  LogScanner log(*listing, sink, [&](const ScannedAppend& append) {
    for (const ScannedRecord& record : append.records) {
      if (record.is_removed) {
        next_position = record.removed.first_position + record.removed.count;
        if (options.from_position && next_position <= *options.from_position) continue;
        if (!options.stream.empty()) continue;
        out << "- removed positions " << record.removed.first_position << " to "
            << next_position - 1 << " (scavenged)\n";
        continue;
      }
      if (!record.is_event) {
        if (options.from_position && next_position < *options.from_position) continue;
        if (!options.stream.empty() && record.metadata.stream != options.stream) continue;
        out << "- " << escape(record.metadata.stream, kDumpFieldChars, true) << " metadata "
            << escape(record.metadata.json, kDumpFieldChars, false) << "\n";
        continue;
      }
      const RecordedEvent& event = record.event;
      next_position = std::max(next_position, event.position + 1);
      if (options.from_position && event.position < *options.from_position) continue;
      if (!options.stream.empty() && event.stream != options.stream) continue;
      out << event.position << ' ' << escape(event.stream, kDumpFieldChars, true) << '@'
          << event.version << ' ' << escape(event.type, kDumpFieldChars, true) << ' '
          << event.id.to_string() << ' ' << iso8601(event.timestamp_ns);
      if (options.data) out << ' ' << escape(event.data, kDumpFieldChars, false);
      out << '\n';
      if (++printed >= options.limit) return false;
    }
    return true;
  });
  log.run();
  out.flush();
  if (damaged) {
    return Error(errc::corrupt, "the log in " + directory +
                                    " is damaged (see the lines starting with '# error'); run "
                                    "`keel eventlog verify " +
                                    directory + "`");
  }
  return {};
}

Result<RepairReport> repair_truncate_at_first_error(const std::string& directory) {
  DirectoryLock lock;
  if (auto locked = lock.acquire(directory); !locked) return locked.error();
  std::vector<Finding> findings;
  auto before = verify(directory, &findings);
  if (!before) return before.error();
  RepairReport report;

  // Where the log is cut: the earliest append boundary any log error asks for.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> cut;
  bool checkpoint_bad = false;
  std::vector<std::string> bad_files;  // relative to the directory
  for (const Finding& finding : findings) {
    if (!finding.error) continue;
    if (finding.target == Target::kLog) {
      std::pair<std::uint64_t, std::uint64_t> at{finding.segment, finding.cut_offset};
      if (!cut || at < *cut) {
        cut = at;
        report.first_error = finding.problem.to_string();
      }
    } else if (finding.target == Target::kCheckpoint) {
      checkpoint_bad = true;
    } else {
      std::string relative = finding.problem.file.substr(directory.size() + 1);
      if (std::find(bad_files.begin(), bad_files.end(), relative) == bad_files.end())
        bad_files.push_back(relative);
    }
  }
  if (!cut && !checkpoint_bad && bad_files.empty()) {
    report.after = std::move(*before);
    return report;
  }
  report.changed = true;

  auto listing = list_directory(directory);
  if (!listing) return listing.error();
  std::map<std::string, std::uint64_t> kept_versions;  // stream -> last version before the cut
  if (cut) {
    LogScanner log(
        *listing, [](Finding) {},
        [&](const ScannedAppend& append) {
          bool kept = before_cut(append.segment->number, append.end, cut->first, cut->second);
          for (const ScannedRecord& record : append.records) {
            if (!record.is_event) continue;
            if (kept) {
              ++report.events_kept;
              kept_versions[record.event.stream] = record.event.version;
              report.first_lost_position = record.event.position + 1;
            } else {
              ++report.readable_events_lost;
            }
          }
          return true;
        });
    log.run();
    if (!report.first_lost_position) report.first_lost_position = 0;
    report.cut_file = join(directory, segment_file_name(cut->first));
    report.cut_offset = cut->second;
  }

  Quarantine quarantine(directory);
  // The index first: with it gone, open() rebuilds from whatever the log holds at any moment.
  if ((cut || checkpoint_bad) && ::access(join(directory, kCheckpointName).c_str(), F_OK) == 0) {
    if (auto moved = quarantine.move(kCheckpointName); !moved) return moved.error();
  }
  if (cut) {
    for (auto it = listing->segments.rbegin(); it != listing->segments.rend(); ++it) {
      if (it->number <= cut->first) break;
      if (auto moved = quarantine.move(it->name); !moved) return moved.error();
    }
    const std::string name = segment_file_name(cut->first);
    if (cut->second == 0) {
      if (auto moved = quarantine.move(name); !moved) return moved.error();
    } else {
      MappedSegment file(join(directory, name));
      if (!file.opened || file.size < cut->second) {
        return Error(errc::io_error,
                     join(directory, name) + ": cannot read the part to keep: " + file.error);
      }
      // What lies past the last data extent is zeros: the cut copy has them from fallocate.
      std::string_view kept = file.bytes.substr(0, cut->second);
      if (auto done = quarantine.cut(name, kept, file.size); !done) return done.error();
    }
    // Snapshots that include events no longer in the log would rebuild state the log lacks.
    const std::string snapshots = join(directory, "snapshots");
    if (DIR* dir = ::opendir(snapshots.c_str())) {
      std::vector<std::string> stale;
      while (dirent* entry = ::readdir(dir)) {
        std::string name_in_dir = entry->d_name;
        if (!name_in_dir.ends_with(".snap")) continue;
        FileRead file = read_file(join(snapshots, name_in_dir));
        const std::string& bytes = file.bytes;
        std::uint32_t stream_size = 0;
        std::uint64_t version = 0;
        if (bytes.size() < 28) continue;  // damaged: a finding of its own
        std::memcpy(&stream_size, bytes.data() + 8, 4);
        if (24 + std::uint64_t{stream_size} > bytes.size()) continue;
        std::memcpy(&version, bytes.data() + 12 + stream_size, 8);
        auto kept = kept_versions.find(bytes.substr(12, stream_size));
        if (kept == kept_versions.end() || kept->second < version)
          stale.push_back("snapshots/" + name_in_dir);
      }
      ::closedir(dir);
      for (const std::string& name_in_dir : stale) {
        if (std::find(bad_files.begin(), bad_files.end(), name_in_dir) == bad_files.end())
          bad_files.push_back(name_in_dir);
      }
    }
  }
  for (const std::string& name : bad_files) {
    if (::access(join(directory, name).c_str(), F_OK) != 0) continue;
    if (auto moved = quarantine.move(name); !moved) return moved.error();
  }
  if (auto synced = quarantine.sync(); !synced) return synced.error();
  report.quarantined = quarantine.moved;

  auto after = verify(directory, nullptr);
  if (!after) return after.error();
  report.after = std::move(*after);
  return report;
}

}  // namespace keel::eventlog

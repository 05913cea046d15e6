// `keel eventlog verify`: the log (LogChecker, over the walk open() uses), index.chk against
// the log, snapshots against their streams, and leftovers.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>

#include "keel/eventlog/event_store_impl.h"
#include "keel/eventlog/inspect.h"
#include "keel/eventlog/log_check.h"
#include "keel/eventlog/snapshot.h"

namespace keel::eventlog {
namespace {

// ---- index.chk ----

// The checkpoint as open() would use it, when it would.
struct TrustedCheckpoint {
  Index index;
  std::uint64_t replay_location = 0;
  std::vector<bool> matched;  // by position: an event was found where the index says
  bool replay_point_found = false;
};

std::optional<TrustedCheckpoint> load_checkpoint(const std::string& directory,
                                                 const StoreListing& listing, bool& present,
                                                 const FindingSink& sink) {
  const std::string path = path_in(directory, kCheckpointFileName);
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
  if (::access(path_in(directory, kScavengeMarkerFileName).c_str(), F_OK) == 0) {
    problem(false, path_in(directory, kScavengeMarkerFileName), 0,
            "a scavenge was cut short: open() ignores index.chk, rebuilds the index from the log "
            "and removes this marker");
    return std::nullopt;
  }
  TrustedCheckpoint checkpoint;
  checkpoint.index = std::move((*loaded)->first);
  const Index& index = checkpoint.index;
  bool replay_segment_exists =
      std::any_of(listing.segments.begin(), listing.segments.end(),
                  [&](const SegmentFileEntry& s) { return s.number == index.replay_segment; });
  if (!listing.segments.empty() && !replay_segment_exists) {
    problem(false, path, kCheckpointReplaySegmentAt,
            "its replay point is in " + segment_file_name(index.replay_segment) +
                ", which does not exist: open() ignores index.chk and rebuilds the index from "
                "the log");
    return std::nullopt;
  }
  if (index.replay_offset >= (1ull << kOffsetBits)) {
    problem(true, path, kCheckpointReplayOffsetAt,
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
  if (append.segment == checkpoint.index.replay_segment &&
      append.end == checkpoint.index.replay_offset) {
    checkpoint.replay_point_found = true;
  }
  for (const ScannedRecord& record : append.records) {
    if (!record.is_event) continue;
    std::uint64_t location = pack_location(append.segment, record.offset);
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
    } else if (locations[position] == kRemovedLocation) {
      what = "event at position " + std::to_string(position) +
             " is in the log, but index.chk marks it removed: the store will not show it";
    } else {
      what = "event at position " + std::to_string(position) + " is here, but index.chk says " +
             location_text(locations[position]);
    }
    Finding finding;
    finding.problem = {*append.path, record.offset, what + " (" + checkpoint_path + ")"};
    finding.target = Target::kCheckpoint;
    sink(std::move(finding));
  }
}

// Locations the log walk could not check (after damage) are left to the log's own errors.
void finish_checkpoint_check(const TrustedCheckpoint& checkpoint, const std::string& path,
                             const LogChecker& log, const FindingSink& sink) {
  auto error = [&](std::uint64_t offset, const std::string& what) {
    Finding finding;
    finding.problem = {path, offset, what};
    finding.target = Target::kCheckpoint;
    sink(std::move(finding));
  };
  if (!checkpoint.replay_point_found && log.checked(checkpoint.replay_location)) {
    error(kCheckpointReplaySegmentAt,
          "its replay point (" + location_text(checkpoint.replay_location) +
              ") is not the end of a complete append in the log: open() would replay the log "
              "from there");
  }
  const auto& locations = checkpoint.index.locations;
  for (std::uint64_t position = 0; position < locations.size(); ++position) {
    if (locations[position] == kRemovedLocation || checkpoint.matched[position] ||
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

void check_snapshots(const std::string& directory, const LogChecker& log, VerifyReport& report,
                     const FindingSink& sink) {
  const std::string snapshots = path_in(directory, kSnapshotsDirectoryName);
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
    const std::string path = path_in(snapshots, name);
    if (name.ends_with(".tmp")) {
      problem(false, path, 0, "left over from an interrupted snapshot write; safe to delete");
      continue;
    }
    if (!name.ends_with(".snap")) continue;
    FileRead file = read_whole_file(path);
    if (!file.opened || file.failed_at) {
      problem(true, path, file.failed_at.value_or(0), file.error);
      continue;
    }
    const char* damaged = "load_snapshot() fails for its stream";
    const DecodedSnapshot decoded = decode_snapshot(file.bytes);
    switch (decoded.status) {
      case DecodedSnapshot::Status::kOk:
        break;
      case DecodedSnapshot::Status::kNoHeader:
        problem(true, path, decoded.damage_offset, std::string("no KEELSNP1 header: ") + damaged);
        continue;
      case DecodedSnapshot::Status::kBadCrc:
        problem(true, path, decoded.damage_offset, std::string("fails its CRC: ") + damaged);
        continue;
      case DecodedSnapshot::Status::kStreamPastEnd:
        problem(true, path, decoded.damage_offset,
                std::string("its stream name runs past the end: ") + damaged);
        continue;
      case DecodedSnapshot::Status::kLengthMismatch:
        problem(true, path, decoded.damage_offset,
                std::string("its data length does not match the file's size: ") + damaged);
        continue;
    }
    ++report.snapshots;
    const std::string& stream = decoded.stream;
    const std::uint64_t version = decoded.snapshot.version;
    if (snapshot_file_name(stream) != name) {
      problem(false, path, 12,
              "holds stream '" + stream + "', whose snapshot is " + snapshot_file_name(stream) +
                  ": load_snapshot() never reads this file");
      continue;
    }
    auto state = log.streams.find(stream);
    if (state == log.streams.end() || !state->second.last_version) {
      problem(false, path, decoded.version_offset,
              "snapshot of stream '" + stream + "' at version " + std::to_string(version) +
                  ", but the log holds no event of that stream");
    } else if (version > *state->second.last_version) {
      problem(false, path, decoded.version_offset,
              "snapshot of stream '" + stream + "' at version " + std::to_string(version) +
                  ", beyond the stream's last event in the log (version " +
                  std::to_string(*state->second.last_version) + ")");
    }
  }
}

}  // namespace

// verify_store(), also handing every finding, listed or not, to `all` when given.
Result<VerifyReport> verify_with_findings(const std::string& directory, std::vector<Finding>* all) {
  auto listing = list_store(directory);
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
    finding.problem = {path_in(directory, name), 0,
                       "named like a segment but not NNNNNNNN.seg: open() does not read it; "
                       "move it out of the directory"};
    sink(std::move(finding));
  }
  for (const std::string& name : listing->leftovers) {
    Finding finding;
    finding.error = false;
    finding.problem = {path_in(directory, name), 0,
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

  const std::string checkpoint_path = path_in(directory, kCheckpointFileName);
  std::optional<TrustedCheckpoint> checkpoint =
      load_checkpoint(directory, *listing, report.checkpoint_present, sink);
  LogChecker log(*listing, sink, [&](const ScannedAppend& append) {
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
  return verify_with_findings(directory, nullptr);
}

}  // namespace keel::eventlog

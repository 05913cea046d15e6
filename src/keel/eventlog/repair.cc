// `keel eventlog repair --truncate-at-first-error`: keeps the log's exact valid prefix (up to
// the append before verify's first error) and moves everything else into quarantine/.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>

#include "keel/core/file.h"
#include "keel/eventlog/event_store_impl.h"
#include "keel/eventlog/inspect.h"
#include "keel/eventlog/log_check.h"
#include "keel/eventlog/snapshot.h"

namespace keel::eventlog {
namespace {

class DirectoryLock {
 public:
  ~DirectoryLock() {
    if (fd_ >= 0) ::close(fd_);
  }
  Status acquire(const std::string& directory) {
    std::string path = path_in(directory, kLockFileName);
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
    std::string base = std::string(kQuarantineDirectoryName) + "/" + name;
    std::vector<std::string> folders = {kQuarantineDirectoryName};
    if (auto slash = name.rfind('/'); slash != std::string::npos) {
      folders.push_back(std::string(kQuarantineDirectoryName) + "/" + name.substr(0, slash));
    }
    for (const std::string& folder : folders) {
      if (::mkdir(path_in(directory_, folder).c_str(), 0755) != 0 && errno != EEXIST) {
        return io_error("cannot create", path_in(directory_, folder), errno);
      }
    }
    std::string relative = base;
    for (int n = 1; ::access(path_in(directory_, relative).c_str(), F_OK) == 0; ++n) {
      relative = base + "." + std::to_string(n);
    }
    return relative;
  }

  Status move(const std::string& name) {
    auto to = destination(name);
    if (!to) return to.error();
    if (::rename(path_in(directory_, name).c_str(), path_in(directory_, *to).c_str()) != 0) {
      return io_error("cannot move into " + std::string(kQuarantineDirectoryName) + ":",
                      path_in(directory_, name), errno);
    }
    moved.push_back(*to);
    return {};
  }

  // Keeps `name` as it is now under quarantine/ (a hard link) and puts `bytes_before_cut`
  // followed by zeros, in a file of the same size, in its place.
  Status cut(const std::string& name, std::string_view bytes_before_cut, std::uint64_t size) {
    auto to = destination(name);
    if (!to) return to.error();
    std::string path = path_in(directory_, name);
    std::string temporary = path + kRepairSuffix;
    int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return io_error("cannot create", temporary, errno);
    auto fail = [&](const char* what) {
      int error_number = errno;
      ::close(fd);
      ::unlink(temporary.c_str());
      return io_error(what, temporary, error_number);
    };
    if (int failed = write_all(fd, bytes_before_cut); failed != 0) {
      errno = failed;
      return fail("cannot write");
    }
    // posix_fallocate returns its error; it does not set errno.
    if (int failed = size > 0 ? ::posix_fallocate(fd, 0, static_cast<off_t>(size)) : 0;
        failed != 0) {
      errno = failed;
      return fail("cannot allocate");
    }
    if (::fdatasync(fd) != 0) return fail("cannot sync");
    ::close(fd);
    if (::link(path.c_str(), path_in(directory_, *to).c_str()) != 0) {
      int error_number = errno;
      ::unlink(temporary.c_str());
      return io_error("cannot link into " + std::string(kQuarantineDirectoryName) + ":", path,
                      error_number);
    }
    moved.push_back(*to);
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
      return io_error("cannot rename", temporary, errno);
    }
    return {};
  }

  Status sync() {
    for (const std::string& sub :
         {std::string(kQuarantineDirectoryName),
          std::string(kQuarantineDirectoryName) + "/" + kSnapshotsDirectoryName,
          std::string(kSnapshotsDirectoryName), std::string()}) {
      std::string path = sub.empty() ? directory_ : path_in(directory_, sub);
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

Result<RepairReport> repair_truncate_at_first_error(const std::string& directory) {
  DirectoryLock lock;
  if (auto locked = lock.acquire(directory); !locked) return locked.error();
  std::vector<Finding> findings;
  auto before = verify_with_findings(directory, &findings);
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

  auto listing = list_store(directory);
  if (!listing) return listing.error();
  std::map<std::string, std::uint64_t> kept_versions;  // stream -> last version before the cut
  if (cut) {
    LogChecker log(
        *listing, [](Finding) {},
        [&](const ScannedAppend& append) {
          bool kept = before_cut(append.segment, append.end, cut->first, cut->second);
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
    report.cut_file = path_in(directory, segment_file_name(cut->first));
    report.cut_offset = cut->second;
  }

  Quarantine quarantine(directory);
  // The index first: with it gone, open() rebuilds from whatever the log holds at any moment.
  if ((cut || checkpoint_bad) &&
      ::access(path_in(directory, kCheckpointFileName).c_str(), F_OK) == 0) {
    if (auto moved = quarantine.move(kCheckpointFileName); !moved) return moved.error();
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
      auto file = open_segment_read_only(path_in(directory, name));
      if (!file || (*file)->capacity < cut->second) {
        return Error(errc::io_error, path_in(directory, name) + ": cannot read the part to keep: " +
                                         (file ? std::string() : file.error().message()));
      }
      // What lies past the last data extent is zeros: the cut copy has them from fallocate.
      std::string_view kept = (*file)->data_bytes().substr(0, cut->second);
      if (auto done = quarantine.cut(name, kept, (*file)->capacity); !done) return done.error();
    }
    // Snapshots that include events no longer in the log would rebuild state the log lacks.
    const std::string snapshots = path_in(directory, kSnapshotsDirectoryName);
    if (DIR* dir = ::opendir(snapshots.c_str())) {
      std::vector<std::string> stale;
      while (dirent* entry = ::readdir(dir)) {
        std::string name_in_dir = entry->d_name;
        if (!name_in_dir.ends_with(".snap")) continue;
        const DecodedSnapshot decoded =
            decode_snapshot(read_whole_file(path_in(snapshots, name_in_dir)).bytes);
        // A damaged one is an error of its own, moved aside with the others.
        if (decoded.status != DecodedSnapshot::Status::kOk) continue;
        auto kept = kept_versions.find(decoded.stream);
        if (kept == kept_versions.end() || kept->second < decoded.snapshot.version)
          stale.push_back(std::string(kSnapshotsDirectoryName) + "/" + name_in_dir);
      }
      ::closedir(dir);
      for (const std::string& name_in_dir : stale) {
        if (std::find(bad_files.begin(), bad_files.end(), name_in_dir) == bad_files.end())
          bad_files.push_back(name_in_dir);
      }
    }
  }
  for (const std::string& name : bad_files) {
    if (::access(path_in(directory, name).c_str(), F_OK) != 0) continue;
    if (auto moved = quarantine.move(name); !moved) return moved.error();
  }
  if (auto synced = quarantine.sync(); !synced) return synced.error();
  report.quarantined = quarantine.moved;

  auto after = verify_with_findings(directory, nullptr);
  if (!after) return after.error();
  report.after = std::move(*after);
  return report;
}

}  // namespace keel::eventlog

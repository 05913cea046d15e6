// Segment files: the one layer through which the store touches its files' bytes — segments
// created preallocated, opened and mapped, written with pwrite, synced with fdatasync, their
// torn tails zeroed — so that disk faults are injected in one place (StoreOptions::inject_fault),
// as LevelDB's Env does for all of its I/O. Also the few file helpers the store's other files
// (index.chk, snapshots, scavenge.pending) use.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "keel/core/result.h"

namespace keel::eventlog {

// One segment file, mapped read-only in full.
struct Segment {
  std::uint64_t number = 0;
  std::string path;
  int fd = -1;
  const char* map = nullptr;
  std::uint64_t capacity = 0;      // file size
  std::uint64_t end = 0;           // end of the records readers may see (set by the store)
  std::atomic<bool> dirty{false};  // written since the last sync (set by the store)

  Segment() = default;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  std::string_view bytes() const { return {map, static_cast<std::size_t>(capacity)}; }
  std::string_view bytes_from(std::uint64_t offset) const {
    return {map + offset, static_cast<std::size_t>(capacity - offset)};
  }
  // The bytes up to the file's last data extent: what lies after it is zeros the file system
  // never wrote, so scans for non-zero bytes stop there (a huge sparse file costs nothing).
  std::string_view data_bytes() const;
};

// Where the file's last data extent ends (SEEK_DATA / SEEK_HOLE); `size` when the file system
// cannot tell.
std::uint64_t data_extent_end(int fd, std::uint64_t size);
// Offset just past the last non-zero byte of `segment` at or after `from`; `from` when none.
std::uint64_t segment_written_end(const Segment& segment, std::uint64_t from);

// For the offline tools: maps `path` read-only (O_RDONLY, never written). Refuses anything not
// a regular file without blocking on it. The error says why in a few words ("cannot open: …",
// "not a regular file: …", "cannot map: …"), for a report that names the file itself.
Result<std::shared_ptr<Segment>> open_segment_read_only(const std::string& path);

// The store's segment files in one directory.
class SegmentFiles {
 public:
  // Called before each file operation ("fallocate", "write", "sync", "roll-wait"); a non-zero
  // errno makes that operation fail with it. Empty: no faults.
  using FaultHook = std::function<int(std::string_view operation)>;

  SegmentFiles(std::string directory, std::uint64_t segment_bytes, FaultHook inject_fault)
      : directory_(std::move(directory)),
        segment_bytes_(segment_bytes),
        inject_fault_(std::move(inject_fault)) {}

  // An existing segment, opened read-write and mapped. errc::corrupt when it is not a regular
  // file (a FIFO is refused, never read), errc::io_error when it cannot be opened or mapped.
  Result<std::shared_ptr<Segment>> open(std::uint64_t number) const;
  // A new segment, allocated at its full size (so that a commit changes no file size and a full
  // disk shows here, as errc::disk_full, with nothing half-written), the directory synced.
  Result<std::shared_ptr<Segment>> create(std::uint64_t number) const;
  // Replaces segment `number` with `bytes` (written beside it, synced, renamed over it) and
  // opens the new file. For scavenging, which rewrites sealed segments.
  Result<std::shared_ptr<Segment>> rewrite(std::uint64_t number, std::string_view bytes) const;

  // Writes `bytes` at `offset` with pwrite, whole.
  Status write(const Segment& segment, std::uint64_t offset, std::string_view bytes) const;
  // fdatasync.
  Status sync(const Segment& segment) const;
  // Overwrites [from, to) with zeros and syncs: cuts a torn tail at open. (No fault hook: the
  // hook's operations are those of a running store.)
  Status zero(const Segment& segment, std::uint64_t from, std::uint64_t to) const;

  // The fault hook's answer for `operation` (0: go ahead).
  int fault(std::string_view operation) const {
    return inject_fault_ ? inject_fault_(operation) : 0;
  }
  std::string path(std::uint64_t number) const;
  // fdatasync calls made by sync() so far.
  std::uint64_t syncs() const { return syncs_.load(std::memory_order_relaxed); }

 private:
  Result<std::shared_ptr<Segment>> map(std::uint64_t number, bool create) const;

  mutable std::atomic<std::uint64_t> syncs_{0};
  const std::string directory_;
  const std::uint64_t segment_bytes_;
  const FaultHook inject_fault_;
};

// File helpers that report errno with the path; ENOSPC becomes errc::disk_full.
Error io_error(const std::string& what, const std::string& path, int error_number);
Status sync_directory(const std::string& directory);
// Writes PATH.tmp, fdatasyncs it, renames it over `path` and fsyncs the directory: a crash
// leaves the old file or the new one.
Status write_file_atomically(const std::string& path, std::string_view bytes);

}  // namespace keel::eventlog

#include "keel/eventlog/segment_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "keel/core/file.h"
#include "keel/eventlog/errc.h"
#include "keel/eventlog/layout.h"
#include "keel/eventlog/record.h"

namespace keel::eventlog {
namespace {

// Where mapping a file failed, and errno then.
enum class MapStep { kDone, kStat, kNotRegular, kMap };
struct MapOutcome {
  MapStep failed = MapStep::kDone;
  int error_number = 0;
};

// Maps the whole of the open `segment.fd` read-only, refusing anything not a regular file.
MapOutcome map_whole_file(Segment& segment) {
  struct stat info;
  if (::fstat(segment.fd, &info) != 0) return {MapStep::kStat, errno};
  if (!S_ISREG(info.st_mode)) return {MapStep::kNotRegular, 0};
  segment.capacity = static_cast<std::uint64_t>(info.st_size);
  if (segment.capacity > 0) {
    void* map = ::mmap(nullptr, segment.capacity, PROT_READ, MAP_SHARED, segment.fd, 0);
    if (map == MAP_FAILED) return {MapStep::kMap, errno};
    segment.map = static_cast<const char*>(map);
  }
  return {};
}

}  // namespace

Segment::~Segment() {
  if (map != nullptr) ::munmap(const_cast<char*>(map), capacity);
  if (fd >= 0) ::close(fd);
}

std::string_view Segment::data_bytes() const {
  return {map, static_cast<std::size_t>(data_extent_end(fd, capacity))};
}

std::uint64_t data_extent_end(int fd, std::uint64_t size) {
  std::uint64_t end = 0;
  off_t at = 0;
  while (static_cast<std::uint64_t>(at) < size) {
    off_t data = ::lseek(fd, at, SEEK_DATA);
    if (data < 0) return errno == ENXIO ? end : size;  // ENXIO: no data after `at`
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) return size;
    end = static_cast<std::uint64_t>(hole);
    at = hole;
  }
  return std::min(end, size);
}

std::uint64_t segment_written_end(const Segment& segment, std::uint64_t from) {
  std::uint64_t data_end = data_extent_end(segment.fd, segment.capacity);
  if (data_end <= from) return from;
  return written_end(std::string_view(segment.map, data_end), from);
}

Result<std::shared_ptr<Segment>> open_segment_read_only(const std::string& path) {
  auto segment = std::make_shared<Segment>();
  segment->path = path;
  // O_NONBLOCK: a FIFO must not block; it is refused below, as is anything not a regular file.
  segment->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (segment->fd < 0) {
    return Error(errc::io_error, std::string("cannot open: ") + std::strerror(errno));
  }
  MapOutcome mapped = map_whole_file(*segment);
  switch (mapped.failed) {
    case MapStep::kDone:
      return segment;
    case MapStep::kStat:
    case MapStep::kNotRegular:
      return Error(errc::corrupt, "not a regular file: move it out of the directory");
    case MapStep::kMap:
      return Error(errc::io_error,
                   std::string("cannot map: ") + std::strerror(mapped.error_number));
  }
  return segment;
}

std::string SegmentFiles::path(std::uint64_t number) const {
  return path_in(directory_, segment_file_name(number));
}

Result<std::shared_ptr<Segment>> SegmentFiles::open(std::uint64_t number) const {
  return map(number, false);
}

Result<std::shared_ptr<Segment>> SegmentFiles::create(std::uint64_t number) const {
  return map(number, true);
}

Result<std::shared_ptr<Segment>> SegmentFiles::map(std::uint64_t number, bool create) const {
  auto segment = std::make_shared<Segment>();
  segment->number = number;
  segment->path = path(number);
  // O_NONBLOCK: a FIFO named like a segment must not block open(); it is refused below.
  segment->fd = ::open(segment->path.c_str(),
                       O_RDWR | O_CLOEXEC | O_NONBLOCK | (create ? O_CREAT | O_EXCL : 0), 0644);
  if (segment->fd < 0) return io_error("cannot open segment", segment->path, errno);
  if (create) {
    int error_number = fault("fallocate");
    // posix_fallocate returns its error; it does not set errno.
    if (error_number == 0)
      error_number = ::posix_fallocate(segment->fd, 0, static_cast<off_t>(segment_bytes_));
    if (error_number == 0) {
      if (auto synced = sync_directory(directory_); !synced) return synced.error();
    } else {
      ::unlink(segment->path.c_str());
      return io_error("cannot allocate segment", segment->path, error_number);
    }
  }
  MapOutcome mapped = map_whole_file(*segment);
  switch (mapped.failed) {
    case MapStep::kDone:
      return segment;
    case MapStep::kStat:
      return io_error("cannot stat", segment->path, mapped.error_number);
    case MapStep::kNotRegular:
      return Error(errc::corrupt, segment->path +
                                      " is not a regular file; the store will not open (move it "
                                      "out of the directory)");
    case MapStep::kMap:
      return io_error("cannot map", segment->path, mapped.error_number);
  }
  return segment;
}

Result<std::shared_ptr<Segment>> SegmentFiles::rewrite(std::uint64_t number,
                                                       std::string_view bytes) const {
  const std::string final_path = path(number);
  const std::string temporary = final_path + kScavengeSuffix;
  if (auto written = write_file_atomically(temporary, bytes); !written) return written.error();
  if (::rename(temporary.c_str(), final_path.c_str()) != 0) {
    return io_error("cannot rename", temporary, errno);
  }
  return open(number);
}

Status SegmentFiles::write(const Segment& segment, std::uint64_t offset,
                           std::string_view bytes) const {
  std::size_t written = 0;
  while (written < bytes.size()) {
    int injected = fault("write");
    ssize_t n = injected != 0 ? (errno = injected, -1)
                              : ::pwrite(segment.fd, bytes.data() + written, bytes.size() - written,
                                         static_cast<off_t>(offset + written));
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("cannot write", segment.path, errno);
    }
    written += static_cast<std::size_t>(n);
  }
  return {};
}

Status SegmentFiles::sync(const Segment& segment) const {
  syncs_.fetch_add(1, std::memory_order_relaxed);
  int injected = fault("sync");
  if (injected != 0 || ::fdatasync(segment.fd) != 0) {
    return io_error("cannot sync", segment.path, injected != 0 ? injected : errno);
  }
  return {};
}

Status SegmentFiles::zero(const Segment& segment, std::uint64_t from, std::uint64_t to) const {
  std::string zeros(to - from, '\0');
  if (::pwrite(segment.fd, zeros.data(), zeros.size(), static_cast<off_t>(from)) !=
          static_cast<ssize_t>(zeros.size()) ||
      ::fdatasync(segment.fd) != 0) {
    return io_error("cannot cut the torn tail of", segment.path, errno);
  }
  return {};
}

// ---- file helpers ----

Error io_error(const std::string& what, const std::string& path, int error_number) {
  return Error(error_number == ENOSPC ? errc::disk_full : errc::io_error,
               what + " " + path + ": " + std::strerror(error_number));
}

Status sync_directory(const std::string& directory) {
  if (auto failed = keel::sync_directory(directory)) {
    return io_error(failed->what, failed->path, failed->error_number);
  }
  return {};
}

Status write_file_atomically(const std::string& path, std::string_view bytes) {
  if (auto failed = keel::write_file_atomically(path, bytes)) {
    return io_error(failed->what, failed->path, failed->error_number);
  }
  return {};
}

}  // namespace keel::eventlog

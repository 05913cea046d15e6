// Snapshots: the file format, and EventStore's save_snapshot() / load_snapshot().
#include "keel/eventlog/snapshot.h"

#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "keel/eventlog/crc32c.h"
#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {

namespace {
constexpr char kSnapshotMagic[] = "KEELSNP1";
constexpr std::size_t kSnapshotFixedBytes = 8 + 4 + 8 + 4 + 4;
}  // namespace

std::string encode_snapshot(std::string_view stream, const Snapshot& snapshot) {
  std::string bytes = kSnapshotMagic;
  auto put = [&](const void* data, std::size_t size) {
    bytes.append(static_cast<const char*>(data), size);
  };
  std::uint32_t stream_size = static_cast<std::uint32_t>(stream.size());
  std::uint32_t data_size = static_cast<std::uint32_t>(snapshot.data.size());
  put(&stream_size, 4);
  bytes += stream;
  put(&snapshot.version, 8);
  put(&data_size, 4);
  bytes += snapshot.data;
  std::uint32_t crc = crc32c(bytes.data(), bytes.size());
  put(&crc, 4);
  return bytes;
}

DecodedSnapshot decode_snapshot(std::string_view bytes) {
  using Status = DecodedSnapshot::Status;
  DecodedSnapshot decoded;
  auto damaged = [&](Status status, std::uint64_t offset) {
    decoded.status = status;
    decoded.damage_offset = offset;
    return decoded;
  };
  if (bytes.size() < kSnapshotFixedBytes || bytes.compare(0, 8, kSnapshotMagic) != 0) {
    return damaged(Status::kNoHeader, 0);
  }
  std::uint32_t crc = 0;
  std::memcpy(&crc, bytes.data() + bytes.size() - 4, 4);
  if (crc32c(bytes.data(), bytes.size() - 4) != crc)
    return damaged(Status::kBadCrc, bytes.size() - 4);
  std::uint32_t stream_size = 0;
  std::uint32_t data_size = 0;
  std::memcpy(&stream_size, bytes.data() + 8, 4);
  if (12 + std::uint64_t{stream_size} + 12 + 4 > bytes.size()) {
    return damaged(Status::kStreamPastEnd, 8);
  }
  decoded.stream = bytes.substr(12, stream_size);
  decoded.version_offset = 12 + std::uint64_t{stream_size};
  std::memcpy(&decoded.snapshot.version, bytes.data() + 12 + stream_size, 8);
  std::memcpy(&data_size, bytes.data() + 20 + stream_size, 4);
  if (24 + std::uint64_t{stream_size} + data_size + 4 != bytes.size()) {
    return damaged(Status::kLengthMismatch, 20 + std::uint64_t{stream_size});
  }
  decoded.snapshot.data = bytes.substr(24 + stream_size, data_size);
  return decoded;
}

Status EventStore::Impl::save_snapshot(std::string_view stream, const Snapshot& snapshot) {
  return write_file_atomically(path(snapshot_path_in_store(stream)),
                               encode_snapshot(stream, snapshot));
}

Result<std::optional<Snapshot>> EventStore::Impl::load_snapshot(std::string_view stream) {
  std::string file_path = path(snapshot_path_in_store(stream));
  struct stat info;
  if (::stat(file_path.c_str(), &info) != 0) return std::optional<Snapshot>();
  if (!S_ISREG(info.st_mode)) {  // a FIFO would block the read below
    return Error(errc::corrupt, file_path + ": snapshot is not a regular file");
  }
  std::ifstream file(file_path, std::ios::binary);
  if (!file) return std::optional<Snapshot>();
  std::ostringstream buffer;
  buffer << file.rdbuf();
  DecodedSnapshot decoded = decode_snapshot(buffer.str());
  auto damaged = [&] { return Error(errc::corrupt, file_path + ": snapshot fails its checks"); };
  switch (decoded.status) {
    case DecodedSnapshot::Status::kNoHeader:
    case DecodedSnapshot::Status::kBadCrc:
    case DecodedSnapshot::Status::kStreamPastEnd:
      return damaged();
    case DecodedSnapshot::Status::kLengthMismatch:
    case DecodedSnapshot::Status::kOk:
      break;
  }
  // Another stream with the same XXH3 hash saved the file last: no snapshot of this one.
  if (decoded.stream != stream) return std::optional<Snapshot>();
  if (decoded.status != DecodedSnapshot::Status::kOk) return damaged();
  return std::optional<Snapshot>(std::move(decoded.snapshot));
}

}  // namespace keel::eventlog

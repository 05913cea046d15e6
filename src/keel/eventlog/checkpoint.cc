#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "keel/eventlog/crc32c.h"
#include "keel/eventlog/event_store_impl.h"

namespace keel::eventlog {
namespace {

constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'I', 'D', 'X', '1'};

class Writer {
 public:
  template <typename T>
  void put(T value) {
    char bytes[sizeof(T)];
    std::memcpy(bytes, &value, sizeof(T));
    out.append(bytes, sizeof(T));
  }
  void put_string(std::string_view text) {
    put<std::uint32_t>(static_cast<std::uint32_t>(text.size()));
    out += text;
  }
  void put_positions(const std::vector<std::uint64_t>& values) {
    put<std::uint64_t>(values.size());
    out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(std::uint64_t));
  }
  std::string out;
};

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}
  template <typename T>
  bool get(T& value) {
    if (bytes_.size() - at_ < sizeof(T)) return false;
    std::memcpy(&value, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool get_string(std::string& text) {
    std::uint32_t size = 0;
    if (!get(size) || bytes_.size() - at_ < size) return false;
    text.assign(bytes_.substr(at_, size));
    at_ += size;
    return true;
  }
  bool get_positions(std::vector<std::uint64_t>& values) {
    std::uint64_t count = 0;
    if (!get(count) || (bytes_.size() - at_) / sizeof(std::uint64_t) < count) return false;
    values.resize(count);
    // An empty vector's data() may be null, which memcpy may not be given even for 0 bytes.
    if (count > 0) std::memcpy(values.data(), bytes_.data() + at_, count * sizeof(std::uint64_t));
    at_ += count * sizeof(std::uint64_t);
    return true;
  }
  bool done() const { return at_ == bytes_.size(); }
  std::uint64_t remaining() const { return bytes_.size() - at_; }

 private:
  std::string_view bytes_;
  std::size_t at_ = 0;
};

void put_map(Writer& w, const std::unordered_map<std::string, std::vector<std::uint64_t>>& map) {
  w.put<std::uint64_t>(map.size());
  for (const auto& [name, positions] : map) {
    w.put_string(name);
    w.put_positions(positions);
  }
}

bool get_map(Reader& r, std::unordered_map<std::string, std::vector<std::uint64_t>>& map) {
  std::uint64_t count = 0;
  if (!r.get(count)) return false;
  map.reserve(std::min<std::uint64_t>(count, r.remaining() / 12));  // a crafted count cannot OOM
  for (std::uint64_t i = 0; i < count; ++i) {
    std::string name;
    std::vector<std::uint64_t> positions;
    if (!r.get_string(name) || !r.get_positions(positions)) return false;
    map.emplace(std::move(name), std::move(positions));
  }
  return true;
}

}  // namespace

void Index::add_event(const std::string& stream, std::uint64_t version, std::uint64_t position,
                      std::uint64_t location, const std::string& type) {
  if (locations.size() <= position) locations.resize(position + 1, kRemovedLocation);
  locations[position] = location;
  StreamIndex& index = streams[stream];
  if (index.positions.size() <= version) index.positions.resize(version + 1, kRemovedLocation);
  index.positions[version] = position;
  categories[std::string(category_of(stream))].push_back(position);
  types[type].push_back(position);
}

Status write_checkpoint(const std::string& path, const Index& index,
                        const std::vector<std::pair<Uuid, std::uint64_t>>& ids) {
  Writer w;
  w.out.append(kMagic, sizeof kMagic);
  w.put<std::uint64_t>(index.replay_segment);
  w.put<std::uint64_t>(index.replay_offset);
  w.put_positions(index.locations);
  w.put<std::uint64_t>(index.streams.size());
  for (const auto& [name, stream] : index.streams) {
    w.put_string(name);
    w.put_positions(stream.positions);
    w.put_string(stream.metadata.to_json());
  }
  put_map(w, index.categories);
  put_map(w, index.types);
  w.put<std::uint64_t>(ids.size());
  for (const auto& [id, position] : ids) {
    w.out.append(reinterpret_cast<const char*>(id.bytes().data()), 16);
    w.put<std::uint64_t>(position);
  }
  w.put<std::uint32_t>(crc32c(w.out.data(), w.out.size()));
  return write_file_atomically(path, w.out);
}

Result<LoadedCheckpoint> read_checkpoint(const std::string& path) {
  // O_NONBLOCK: a FIFO in its place must not block open(); it is refused below.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return LoadedCheckpoint();
    return io_error("cannot open", path, errno);
  }
  auto damaged = [&](const char* what) {
    return Error(errc::corrupt, path + ": index checkpoint " + what);
  };
  struct stat info;
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    return damaged("is not a regular file");
  }
  // Mapped, not read into memory: a huge (sparse) file costs address space only.
  const auto size = static_cast<std::size_t>(info.st_size);
  void* map = size == 0 ? nullptr : ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) return io_error("cannot map", path, errno);
  struct Unmap {
    void* map;
    std::size_t size;
    ~Unmap() {
      if (map != nullptr) ::munmap(map, size);
    }
  } unmap{map, size};
  const std::string_view bytes(static_cast<const char*>(map), size);
  if (bytes.size() < sizeof kMagic + 4 || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return damaged("has no KEELIDX1 header");
  }
  std::uint32_t stored_crc;
  std::memcpy(&stored_crc, bytes.data() + bytes.size() - 4, 4);
  if (crc32c(bytes.data(), bytes.size() - 4) != stored_crc) return damaged("fails its CRC");

  Reader r(bytes.substr(sizeof kMagic, bytes.size() - sizeof kMagic - 4));
  Index index;
  std::vector<std::pair<Uuid, std::uint64_t>> ids;
  std::uint64_t stream_count = 0;
  if (!r.get(index.replay_segment) || !r.get(index.replay_offset) ||
      !r.get_positions(index.locations) || !r.get(stream_count)) {
    return damaged("is cut short");
  }
  index.streams.reserve(std::min<std::uint64_t>(stream_count, r.remaining() / 16));
  for (std::uint64_t i = 0; i < stream_count; ++i) {
    std::string name, json;
    StreamIndex stream;
    if (!r.get_string(name) || !r.get_positions(stream.positions) || !r.get_string(json)) {
      return damaged("is cut short in its streams");
    }
    auto metadata = StoredMetadata::from_json(json);
    if (!metadata) return damaged("holds unreadable stream metadata");
    stream.metadata = *metadata;
    index.streams.emplace(std::move(name), std::move(stream));
  }
  std::uint64_t id_count = 0;
  if (!get_map(r, index.categories) || !get_map(r, index.types) || !r.get(id_count)) {
    return damaged("is cut short in its category or type index");
  }
  ids.reserve(std::min<std::uint64_t>(id_count, r.remaining() / 24));
  for (std::uint64_t i = 0; i < id_count; ++i) {
    std::array<std::uint8_t, 16> raw;
    std::uint64_t position;
    for (auto& byte : raw) {
      if (!r.get(byte)) return damaged("is cut short in its event ids");
    }
    if (!r.get(position)) return damaged("is cut short in its event ids");
    ids.emplace_back(Uuid::from_bytes(raw.data()), position);
  }
  if (!r.done()) return damaged("has trailing bytes");
  return LoadedCheckpoint(std::make_pair(std::move(index), std::move(ids)));
}

}  // namespace keel::eventlog

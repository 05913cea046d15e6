// Internals of EventStore, shared by its .cc files. Not part of the public API.
#pragma once

#include <atomic>
#include <map>
#include <unordered_set>

#include "keel/eventlog/event_store.h"
#include "keel/eventlog/record.h"

namespace keel::eventlog {

inline constexpr std::uint64_t kRemoved = ~0ull;
inline constexpr int kOffsetBits = 40;

inline std::uint64_t pack_location(std::uint64_t segment, std::uint64_t offset) {
  return (segment << kOffsetBits) | offset;
}
inline std::uint64_t location_segment(std::uint64_t location) { return location >> kOffsetBits; }
inline std::uint64_t location_offset(std::uint64_t location) {
  return location & ((1ull << kOffsetBits) - 1);
}

// One segment file, mapped read-only in full.
struct Segment {
  std::uint64_t number = 0;
  std::string path;
  int fd = -1;
  const char* map = nullptr;
  std::uint64_t capacity = 0;      // file size
  std::uint64_t end = 0;           // end of the records readers may see
  std::atomic<bool> dirty{false};  // written since the last sync
  ~Segment();
  std::string_view bytes_from(std::uint64_t offset) const {
    return {map + offset, static_cast<std::size_t>(capacity - offset)};
  }
};

// Stream state as stored in metadata records: the user's rules plus deletion.
struct StoredMetadata {
  StreamMetadata rules;
  bool soft_deleted = false;
  bool tombstone = false;
  std::string to_json() const;
  static Result<StoredMetadata> from_json(std::string_view json);
};

// What readers see of a stream.
struct StreamIndex {
  std::vector<std::uint64_t> positions;  // by version; kRemoved where scavenged
  StoredMetadata metadata;
  bool has_rules() const {
    const auto& r = metadata.rules;
    return r.max_count || r.max_age || r.truncate_before;
  }
};

// What writers check appends against (includes appends not yet durable).
struct StreamWriterState {
  StoredMetadata metadata;  // including changes not yet durable
  std::uint64_t next_version = 0;
  std::uint64_t committed_version = 0;  // next_version as readers see it
  bool soft_deleted = false;
  bool tombstone = false;
  bool exists() const { return next_version > 0 && !soft_deleted; }
};

// A change waiting for its append to become durable before readers see it.
struct PendingItem {
  bool is_event = true;
  std::string stream;
  // events
  std::uint64_t position = 0;
  std::uint64_t version = 0;
  std::uint64_t location = 0;
  std::string type;
  Uuid id;
  // metadata
  StoredMetadata metadata;
};

struct PendingChunk {
  std::uint64_t segment = 0;
  std::uint64_t offset = 0;
  std::string bytes;
};

// The in-memory index, replaced wholesale when loading a checkpoint.
struct Index {
  std::vector<std::uint64_t> locations;  // by position
  std::unordered_map<std::string, StreamIndex> streams;
  std::unordered_map<std::string, std::vector<std::uint64_t>> categories;
  std::unordered_map<std::string, std::vector<std::uint64_t>> types;
  // False while no stream has ever had metadata: then every event in the log is visible and
  // $all, category and type reads skip the per-event stream lookup.
  bool any_metadata = false;
  std::uint64_t replay_segment = 1;  // where the log tail after this index starts
  std::uint64_t replay_offset = 0;

  void add_event(const std::string& stream, std::uint64_t version, std::uint64_t position,
                 std::uint64_t location, const std::string& type);
};

// Index checkpoint file (index.chk).
Status write_checkpoint(const std::string& path, const Index& index,
                        const std::vector<std::pair<Uuid, std::uint64_t>>& ids);
// Ok(nullopt) when absent; an error when present but damaged.
using LoadedCheckpoint =
    std::optional<std::pair<Index, std::vector<std::pair<Uuid, std::uint64_t>>>>;
Result<LoadedCheckpoint> read_checkpoint(const std::string& path);

// File helpers that report errno with the path.
Error io_error(const std::string& what, const std::string& path, int error_number);
Status sync_directory(const std::string& directory);
Status write_file_atomically(const std::string& path, std::string_view bytes);

}  // namespace keel::eventlog

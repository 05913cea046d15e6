// The store directory's layout: the name of every file the store and the offline tools
// (`keel eventlog verify | dump | repair`) use, how the directory is listed, and how an event's
// place in a segment is packed into one number (a location). One definition, so that
// EventStore::open() and the tools can never disagree about what a file is.
// docs/formats/eventlog.md ("Directory") is the prose version.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/result.h"

namespace keel::eventlog {

inline constexpr char kLockFileName[] = "LOCK";
inline constexpr char kCheckpointFileName[] = "index.chk";
inline constexpr char kScavengeMarkerFileName[] = "scavenge.pending";
inline constexpr char kSnapshotsDirectoryName[] = "snapshots";
inline constexpr char kQuarantineDirectoryName[] = "quarantine";
// A file being written carries one of these suffixes until it is complete and synced, then is
// renamed over its real name; one left behind is from an interrupted write.
inline constexpr char kTemporarySuffix[] = ".tmp";      // any file (write_file_atomically)
inline constexpr char kScavengeSuffix[] = ".scavenge";  // NNNNNNNN.seg.scavenge: a rewrite
inline constexpr char kRepairSuffix[] = ".repair";      // NNNNNNNN.seg.repair: a cut copy

// Byte offsets of index.chk's fields (checkpoint.cc): magic, replay segment, replay offset, the
// location count, then one 8-byte location per position.
inline constexpr std::uint64_t kCheckpointReplaySegmentAt = 8;
inline constexpr std::uint64_t kCheckpointReplayOffsetAt = 16;
inline constexpr std::uint64_t kCheckpointLocationsAt = 32;

// "00000001.seg": 8 decimal digits.
std::string segment_file_name(std::uint64_t number);
// The number in a segment's file name; nullopt for any other name.
std::optional<std::uint64_t> parse_segment_file_name(std::string_view name);
// "snapshots/0123456789abcdef.snap": 16 lowercase hex digits of XXH3-64 (seed 0) of the stream.
std::string snapshot_file_name(std::string_view stream);  // the name in snapshots/
std::string snapshot_path_in_store(std::string_view stream);
// `directory/name`.
std::string path_in(const std::string& directory, std::string_view name);

// A location: where an event's record is, `segment << 40 | offset` (so segments are at most
// 2^40 bytes); kRemovedLocation for a position scavenging removed.
inline constexpr int kOffsetBits = 40;
inline constexpr std::uint64_t kRemovedLocation = ~0ull;
inline std::uint64_t pack_location(std::uint64_t segment, std::uint64_t offset) {
  return (segment << kOffsetBits) | offset;
}
inline std::uint64_t location_segment(std::uint64_t location) { return location >> kOffsetBits; }
inline std::uint64_t location_offset(std::uint64_t location) {
  return location & ((1ull << kOffsetBits) - 1);
}
// "00000003.seg offset 81920".
std::string location_text(std::uint64_t location);

struct SegmentFileEntry {
  std::uint64_t number = 0;
  std::string name;
  std::string path;
};

// What a store directory holds, as far as its names tell.
struct StoreListing {
  std::vector<SegmentFileEntry> segments;  // by number
  // 12-character *.seg names without 8 digits: not segments, though they look like them.
  std::vector<std::string> misnamed;
  std::vector<std::string> leftovers;  // *.tmp, *.scavenge, *.repair: interrupted writes
  // The first number missing from 1, 2, … up to the last segment; nullopt when none is.
  std::optional<std::uint64_t> first_missing_segment() const;
};

// Lists `directory` (names only: nothing is opened). Fails with errc::io_error when it cannot
// be read.
Result<StoreListing> list_store(const std::string& directory);

}  // namespace keel::eventlog

// The snapshot file (snapshots/*.snap; layout.h names it), shared by EventStore's
// save_snapshot() / load_snapshot() and by `keel eventlog verify | repair`:
//
//   "KEELSNP1", u32 stream length, the stream name, u64 version, u32 data length, the data,
//   u32 CRC-32C of every byte before it
//
// Integers are little-endian; lengths must add up to the file's size.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "keel/eventlog/event_store.h"

namespace keel::eventlog {

std::string encode_snapshot(std::string_view stream, const Snapshot& snapshot);

struct DecodedSnapshot {
  enum class Status {
    kOk,
    kNoHeader,        // shorter than the fixed fields, or no KEELSNP1 magic
    kBadCrc,          // at damage_offset: the CRC
    kStreamPastEnd,   // at damage_offset: the stream name's length runs past the end
    kLengthMismatch,  // at damage_offset: the data length does not match the file's size
  };
  Status status = Status::kOk;
  std::uint64_t damage_offset = 0;
  std::string stream;  // known from kLengthMismatch on
  std::uint64_t version_offset = 0;
  Snapshot snapshot;  // kOk
};

// Checks and decodes a whole snapshot file, in the order above.
DecodedSnapshot decode_snapshot(std::string_view bytes);

}  // namespace keel::eventlog

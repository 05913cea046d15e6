// Offline tools for an event store's directory: check it (`keel eventlog verify`), list it
// (`keel eventlog dump`) and cut it back to its last good append (`keel eventlog repair`).
// docs/formats/eventlog.md describes the files they read.
//
// verify_store() and dump_store() only read: they open every file read-only, never take the
// store's LOCK and never call EventStore::open() (which would cut a torn tail and rewrite the
// index). They may run beside a live store, but then the tail that is being written can show
// as torn; run them on a stopped store for an exact answer. repair_truncate_at_first_error()
// writes, so it takes the LOCK and refuses while a store has the directory open.
//
// All three read each segment whole into memory with read(2), one at a time, not through mmap:
// an unreadable sector is reported as a problem instead of killing the process with SIGBUS.
// Damaged bytes of any kind are reported, never trusted.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "keel/core/result.h"

namespace keel::eventlog {

// One thing wrong in one file. `offset` is a byte offset in `file` (0 when the problem is with
// the file as a whole).
struct VerifyProblem {
  std::string file;
  std::uint64_t offset = 0;
  std::string what;
  std::string to_string() const;  // "FILE offset N: WHAT"
};

struct VerifyReport {
  std::uint64_t segments = 0;
  std::uint64_t records = 0;           // every framed record read, events and metadata
  std::uint64_t events = 0;            // in complete appends
  std::uint64_t metadata_records = 0;  // in complete appends
  std::uint64_t streams = 0;
  std::uint64_t snapshots = 0;
  std::optional<std::uint64_t> first_position;
  std::optional<std::uint64_t> last_position;
  // Positions between first and last with no event: removed by scavenging (or lost, in which
  // case an error says where).
  std::uint64_t positions_missing = 0;
  bool checkpoint_present = false;
  // Damage: EventStore::open() refuses the store, or opens it but shows wrong or missing data.
  std::vector<VerifyProblem> errors;
  // Findings open() handles by itself (a torn tail it cuts, an index checkpoint it ignores and
  // rebuilds) and leftovers worth knowing about.
  std::vector<VerifyProblem> warnings;
  // Problems beyond the first kMaxListed of each list are counted here, not listed.
  std::uint64_t errors_not_listed = 0;
  std::uint64_t warnings_not_listed = 0;
  static constexpr std::size_t kMaxListed = 1000;

  bool ok() const { return errors.empty(); }
  // A few lines of counts: segments, records, events, streams, positions, problems.
  std::string summary() const;
};

// Checks everything in `directory`:
//  - every segment (NNNNNNNN.seg) in order: each record's frame (length, CRC32C, kind) and body;
//    the bytes after the last record are zero; in every segment but the last, every append is
//    complete (ends with the last-in-append flag) — in the last one an incomplete append or a
//    damaged record followed only by zeros is a torn tail that open() cuts (a warning);
//  - the log's logic: positions strictly increase across the whole log, each stream's versions
//    strictly increase, the records of one append belong to one stream with consecutive
//    positions and versions, no event follows a stream's hard delete, metadata JSON parses;
//  - index.chk when present: its header and CRC, that its replay point is an append boundary,
//    that every location it lists holds an event with that position, and that every event
//    before its replay point is listed where it is (a damaged or ignored checkpoint is a
//    warning: open() rebuilds the index from the log);
//  - snapshots/*.snap: header, CRC and lengths (errors), a file name that does not match its
//    stream or a version beyond the stream's last event (warnings);
//  - leftovers of interrupted writes (*.tmp, *.scavenge, *.repair) and files named like segments
//    that are not (warnings: open() ignores them).
// Fails (errc::io_error) only when `directory` cannot be listed; damage is in the report.
Result<VerifyReport> verify_store(const std::string& directory);

struct DumpOptions {
  std::string stream;  // only this stream; empty: every stream
  std::optional<std::uint64_t> from_position;
  std::size_t limit = std::numeric_limits<std::size_t>::max();  // events printed
  bool data = true;                                             // print each event's data
};

// Writes the log to `out`, one line per event of a complete append, in log order:
//   POSITION STREAM@VERSION TYPE ID TIMESTAMP DATA
// with the timestamp in ISO 8601 UTC (microseconds), and DATA the event's data with bytes
// outside printable ASCII escaped (\n, \t, \\, \xHH) and cut after 200 characters (its full size
// follows in parentheses). Stream metadata records print as
//   - STREAM metadata JSON
// They have no position; with from_position they show once the log has reached it. The log is
// shown raw: events hidden by deletes or stream metadata but not yet scavenged are listed.
// Damage and a torn tail are noted inline on lines starting with '#', and the listing goes on
// with the next segment. Fails with errc::corrupt after listing when damage was found (not for a
// torn tail), errc::io_error when `directory` cannot be listed.
Status dump_store(const std::string& directory, std::ostream& out, const DumpOptions& options);

struct RepairReport {
  bool changed = false;  // false: verify found no damage in the log, nothing was touched
  std::string cut_file;  // the segment cut at its first error
  std::uint64_t cut_offset = 0;
  std::string first_error;                           // what verify found there
  std::uint64_t events_kept = 0;                     // events before the cut
  std::optional<std::uint64_t> first_lost_position;  // the position the next append gets
  std::uint64_t readable_events_lost = 0;            // events verify could read at or after the cut
  std::vector<std::string> quarantined;  // files moved into DIR/quarantine/, as moved to
  VerifyReport after;                    // verify_store() after the repair
};

// `keel eventlog repair --truncate-at-first-error`: removes every error verify_store() reports,
// keeping the log up to the last complete append before its first error. It
//  1. takes the LOCK (fails while a store has the directory open);
//  2. moves index.chk into DIR/quarantine/ when the log is cut or the checkpoint has errors
//     (open() then rebuilds the index from the log);
//  3. moves every segment after the first damaged one into DIR/quarantine/;
//  4. replaces the damaged segment by a copy holding only its bytes before the cut (zeros after,
//     same size) — the original stays as DIR/quarantine/NNNNNNNN.seg, a hard link made before
//     the copy is renamed into place, so there is no moment without the segment — or, when the
//     cut is at offset 0, moves the segment aside whole;
//  5. moves into DIR/quarantine/snapshots/ every damaged snapshot, and, when the log was cut,
//     every snapshot whose stream no longer reaches its version.
// Nothing is deleted: moving the quarantined files back (over the cut copy) restores the
// directory as it was. What is lost is every event at or after the cut, in the damaged segment
// and in every later one, acknowledged or not; the next append reuses the first lost position.
// Warnings are left alone. A store with no errors is not touched (`changed` is false).
Result<RepairReport> repair_truncate_at_first_error(const std::string& directory);

}  // namespace keel::eventlog

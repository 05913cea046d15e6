// What `keel eventlog verify | dump | repair` (inspect.h) share: findings — a problem, its
// severity and what it is in — and LogChecker, which walks the log with LogScanner (the walk
// EventStore::open() uses), words each problem the scanner reports for people, and adds the
// checks of the log's logic that no store operation needs (one stream per append, increasing
// versions, nothing after a tombstone, metadata JSON). Internal to those tools.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "keel/eventlog/inspect.h"
#include "keel/eventlog/layout.h"
#include "keel/eventlog/log_scanner.h"

namespace keel::eventlog {

// What a problem is in, so that repair knows what to move aside.
enum class Target { kLog, kCheckpoint, kSnapshot, kFile };

struct Finding {
  bool error = true;  // false: a warning
  VerifyProblem problem;
  Target target = Target::kFile;
  std::uint64_t segment = 0;     // kLog: the segment's number
  std::uint64_t cut_offset = 0;  // kLog: the append boundary at or before the damage
};

using FindingSink = std::function<void(Finding)>;

struct StreamState {
  std::optional<std::uint64_t> last_version;
  bool tombstone = false;
};

class LogChecker final : public LogScanner::Visitor {
 public:
  // Gets each complete append after its checks; returns false to stop the walk.
  using AppendHandler = std::function<bool(const ScannedAppend&)>;

  LogChecker(const StoreListing& listing, FindingSink sink, AppendHandler on_append)
      : listing_(listing), sink_(std::move(sink)), on_append_(std::move(on_append)) {}

  // Walks every segment from the first, reading each read-only, one at a time.
  void run();

  std::uint64_t segments_read = 0;
  std::uint64_t records = 0;
  std::uint64_t events = 0;
  std::uint64_t metadata_records = 0;
  std::optional<std::uint64_t> first_position;
  std::optional<std::uint64_t> last_position;
  std::uint64_t positions_missing = 0;
  std::map<std::string, StreamState> streams;

  // Whether the record at `location` was checked: false inside a damaged append and after
  // damage that stopped the walk of a segment (the error there covers it).
  bool checked(std::uint64_t location) const;

  bool on_append(const ScannedAppend& append) override;
  bool on_problem(const LogProblem& problem) override;
  void on_broken_append(std::uint64_t segment, std::uint64_t begin, std::uint64_t end) override;

 private:
  void log_problem(bool error, std::uint64_t segment, const std::string& path, std::uint64_t offset,
                   std::string what, std::uint64_t cut_offset);
  void check_append(const ScannedAppend& append);

  const StoreListing& listing_;
  FindingSink sink_;
  AppendHandler on_append_;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> unchecked_;  // [begin, end) locations
};

// A small file read whole with pread, never trusted.
struct FileRead {
  bool opened = false;
  std::string bytes;                       // what could be read
  std::optional<std::uint64_t> failed_at;  // a read error at this offset cut `bytes` short
  std::string error;                       // why it could not be opened or read
};
FileRead read_whole_file(const std::string& path);

// verify_store(), also handing every finding, listed or not, to `all` when given (verify.cc).
Result<VerifyReport> verify_with_findings(const std::string& directory, std::vector<Finding>* all);

}  // namespace keel::eventlog

// `keel ctl elect` candidate processes and what they print, for the whole-process election
// test, bench/election and `keel demo`: start N candidates in one election, each writing a
// fenced key while it leads; signal them (SIGKILL, SIGSTOP, SIGTERM); wait for events; check
// that etcd accepted fenced writes only in token order.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/testing/subprocess.h"

namespace keel::testing {

// One line of `keel ctl elect` output, parsed.
struct CandidateEvent {
  enum class Kind {
    kCampaigning,
    kElected,
    kWriteAccepted,
    kWriteRejected,
    kLost,
    kResigned,
    kOther
  };
  int candidate = -1;  // index in Candidates
  Kind kind = Kind::kOther;
  std::int64_t token = 0;                      // elected, lost, resigned, writes
  std::int64_t revision = 0;                   // accepted writes
  std::chrono::steady_clock::time_point seen;  // when this process read the line
  std::string line;
};

CandidateEvent parse_candidate_line(int candidate, std::string_view line);

struct CandidateOptions {
  std::string keel_binary;  // path of the `keel` executable
  std::string endpoint;     // etcd client URL
  std::string election;
  Duration ttl = 2s;
  Duration write_interval = 20ms;  // between fenced writes while leading
  int writes_after_loss = 0;       // old-token writes tried after losing
  bool once = false;               // exit after losing instead of campaigning again
};

class Candidates {
 public:
  explicit Candidates(CandidateOptions options) : options_(std::move(options)) {}
  // SIGCONTs and SIGKILLs the candidates still running.
  ~Candidates();
  Candidates(const Candidates&) = delete;
  Candidates& operator=(const Candidates&) = delete;

  // Starts one more candidate (value "candidate-<index>"); its index.
  Result<int> add();
  // Waits until one candidate leads and `count` have printed that they campaign (the leader
  // among them). The leader's index, or an error with everything printed so far.
  Result<int> wait_settled(int count, Duration timeout);

  Subprocess& process(int index) { return *processes_.at(static_cast<std::size_t>(index)); }
  int count() const { return static_cast<int>(processes_.size()); }

  using Match = std::function<bool(const CandidateEvent&)>;
  static Match is(CandidateEvent::Kind kind, int candidate = -1);
  static Match elected_other_than(int candidate);
  // Waits (real time) for an event at index >= `from` that matches.
  std::optional<CandidateEvent> wait_for(const Match& match, std::size_t from, Duration timeout);
  std::size_t size();
  std::vector<CandidateEvent> events();
  std::string dump();  // every line, prefixed with its candidate, for failure messages

  // Fenced writes etcd accepted although a write with a higher token had been accepted before
  // them (by revision), or from a candidate after it printed that it lost that token. Zero when
  // fencing works.
  int stale_writes_accepted();

 private:
  CandidateOptions options_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<CandidateEvent> events_;
};

}  // namespace keel::testing

#include "keel/testing/candidates.h"

#include <signal.h>

#include <algorithm>
#include <map>
#include <regex>

#include "keel/coord/coordinator.h"

namespace keel::testing {

CandidateEvent parse_candidate_line(int candidate, std::string_view text) {
  static const std::regex kTokened(R"(^t=\d+ (elected|lost|resigned) token=(\d+))");
  static const std::regex kWrite(
      R"(^t=\d+ write token=(\d+) seq=\d+ (accepted revision=(\d+)|rejected))");
  static const std::regex kCampaigning(R"(^t=\d+ campaigning )");
  using Kind = CandidateEvent::Kind;
  CandidateEvent event{
      .candidate = candidate, .seen = std::chrono::steady_clock::now(), .line = std::string(text)};
  std::smatch m;
  if (std::regex_search(event.line, m, kTokened)) {
    event.kind = m[1] == "elected" ? Kind::kElected
                 : m[1] == "lost"  ? Kind::kLost
                                   : Kind::kResigned;
    event.token = std::stoll(m[2]);
  } else if (std::regex_search(event.line, m, kWrite)) {
    event.token = std::stoll(m[1]);
    event.kind = m[3].matched ? Kind::kWriteAccepted : Kind::kWriteRejected;
    if (m[3].matched) event.revision = std::stoll(m[3]);
  } else if (std::regex_search(event.line, m, kCampaigning)) {
    event.kind = Kind::kCampaigning;
  }
  return event;
}

Candidates::~Candidates() {
  for (auto& process : processes_) process->signal(SIGCONT);
  processes_.clear();  // each SIGKILLs its child if still running
}

Result<int> Candidates::add() {
  const int index = count();
  auto to_ms = [](Duration d) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  };
  auto argv = std::vector<std::string>(
      {options_.keel_binary, "ctl", "--endpoints", options_.endpoint, "elect", options_.election,
       "candidate-" + std::to_string(index), "--ttl-ms", to_ms(options_.ttl), "--fenced-key",
       options_.election + "-resource", "--write-interval-ms", to_ms(options_.write_interval),
       "--writes-after-loss", std::to_string(options_.writes_after_loss)});
  if (options_.once) argv.push_back("--once");
  auto process = Subprocess::spawn(std::move(argv), [this, index](std::string_view line) {
    auto event = parse_candidate_line(index, line);
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(event));
    changed_.notify_all();
  });
  if (!process) return process.error();
  processes_.push_back(std::move(*process));
  return index;
}

Result<int> Candidates::wait_settled(int count, Duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto elected = wait_for(is(CandidateEvent::Kind::kElected), 0, timeout);
  if (!elected) return Error(coord::errc::unavailable, "no candidate was elected:\n" + dump());
  for (int i = 0; i < count; ++i) {
    if (!wait_for(is(CandidateEvent::Kind::kCampaigning, i), 0,
                  deadline - std::chrono::steady_clock::now())) {
      return Error(coord::errc::unavailable,
                   "candidate " + std::to_string(i) + " never campaigned:\n" + dump());
    }
  }
  return elected->candidate;
}

Candidates::Match Candidates::is(CandidateEvent::Kind kind, int candidate) {
  return [kind, candidate](const CandidateEvent& e) {
    return e.kind == kind && (candidate < 0 || e.candidate == candidate);
  };
}

Candidates::Match Candidates::elected_other_than(int candidate) {
  return [candidate](const CandidateEvent& e) {
    return e.kind == CandidateEvent::Kind::kElected && e.candidate != candidate;
  };
}

std::optional<CandidateEvent> Candidates::wait_for(const Match& match, std::size_t from,
                                                   Duration timeout) {
  std::unique_lock lock(mutex_);
  std::optional<CandidateEvent> found;
  changed_.wait_for(lock, timeout, [&] {
    for (std::size_t i = from; i < events_.size(); ++i) {
      if (match(events_[i])) {
        found = events_[i];
        return true;
      }
    }
    return false;
  });
  return found;
}

std::size_t Candidates::size() {
  std::lock_guard lock(mutex_);
  return events_.size();
}

std::vector<CandidateEvent> Candidates::events() {
  std::lock_guard lock(mutex_);
  return events_;
}

std::string Candidates::dump() {
  std::string text;
  for (const auto& event : events()) {
    text += "  [" + std::to_string(event.candidate) + "] " + event.line + "\n";
  }
  return text;
}

int Candidates::stale_writes_accepted() {
  using Kind = CandidateEvent::Kind;
  int stale = 0;
  std::vector<std::pair<std::int64_t, std::int64_t>> accepted;  // revision, token
  std::map<int, std::int64_t> lost_token;
  for (const auto& event : events()) {
    if (event.kind == Kind::kLost) lost_token[event.candidate] = event.token;
    if (event.kind != Kind::kWriteAccepted) continue;
    accepted.emplace_back(event.revision, event.token);
    auto lost = lost_token.find(event.candidate);
    if (lost != lost_token.end() && lost->second == event.token) ++stale;
  }
  std::sort(accepted.begin(), accepted.end());
  std::int64_t highest = 0;
  for (const auto& [revision, token] : accepted) {
    if (token < highest) ++stale;
    highest = std::max(highest, token);
  }
  return stale;
}

}  // namespace keel::testing

// kill -9 against the event store: a writer process appends with Durability::kEveryCommit and
// reports every acknowledged event; the test kills it at a random moment, round after round on
// the same store, and checks that the store holds every acknowledged event exactly once, where
// the writer was told it is, and that `keel eventlog verify` finds no damage.
//
// Whole-process and on real time (20-200 ms per round), unlike the unit tests. The rounds are
// drawn from a seed: KEEL_CRASH_SEED=N replays the same choices (the kill moments still land
// differently, as real time does).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/random.h"
#include "keel/eventlog/event_store.h"
#include "keel/eventlog/inspect.h"
#include "keel/eventlog/test_support.h"

extern char** environ;

namespace keel::eventlog {
namespace {

constexpr int kRounds = 25;

struct Ack {
  std::string stream;
  std::uint64_t version = 0;
  std::uint64_t position = 0;
  std::string id;
};

struct WriterRun {
  std::vector<Ack> acks;
  int status = 0;
  std::string malformed;  // a line that does not parse
};

// Starts the writer, lets it run `run_for`, kills it with SIGKILL and returns every line it
// printed before dying.
WriterRun run_writer_and_kill(const std::string& directory, int threads, std::uint64_t seed,
                              std::chrono::milliseconds run_for) {
  WriterRun run;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << std::strerror(errno);
    return run;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  std::string threads_text = std::to_string(threads);
  std::string seed_text = std::to_string(seed);
  std::string program = KEEL_CRASH_WRITER;
  std::vector<char*> argv = {program.data(), const_cast<char*>(directory.c_str()),
                             threads_text.data(), seed_text.data(), nullptr};
  pid_t pid = -1;
  int spawned = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pipe_fds[1]);
  if (spawned != 0) {
    ::close(pipe_fds[0]);
    ADD_FAILURE() << "cannot start " << program << ": " << std::strerror(spawned);
    return run;
  }

  std::string output;
  auto drain = [&](int timeout_ms) {  // false at end of file
    pollfd readable{pipe_fds[0], POLLIN, 0};
    if (::poll(&readable, 1, timeout_ms) <= 0) return true;
    char buffer[65536];
    ssize_t n = ::read(pipe_fds[0], buffer, sizeof buffer);
    if (n > 0) output.append(buffer, static_cast<std::size_t>(n));
    return n > 0 || (n < 0 && errno == EINTR);
  };
  const auto deadline = std::chrono::steady_clock::now() + run_for;
  bool open = true;
  while (open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    open = drain(static_cast<int>(left.count()) + 1);
  }
  ::kill(pid, SIGKILL);
  while (open) open = drain(-1);  // whatever it wrote before dying
  ::close(pipe_fds[0]);
  ::waitpid(pid, &run.status, 0);

  // Only whole lines: a line the kill cut short was never flushed as a whole, so it is unacked.
  std::istringstream lines(output.substr(0, output.rfind('\n') + 1));
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    Ack ack;
    if (!(fields >> ack.stream >> ack.version >> ack.position >> ack.id)) {
      run.malformed = line;
      break;
    }
    run.acks.push_back(std::move(ack));
  }
  return run;
}

// verify_store()'s report, with a failure for every error in it.
VerifyReport expect_no_damage(const std::string& directory, const std::string& when) {
  auto report = verify_store(directory);
  EXPECT_TRUE(report.ok()) << report.error().to_string();
  if (!report.ok()) return {};
  std::string errors;
  for (const auto& error : report->errors) errors += "\n  " + error.to_string();
  EXPECT_TRUE(report->ok()) << "verify found damage " << when << ":" << errors;
  return *report;
}

TEST(EventlogCrashTest, AcknowledgedAppendsSurviveKillNine) {
  std::uint64_t seed = 20240611;
  if (const char* text = std::getenv("KEEL_CRASH_SEED")) seed = std::strtoull(text, nullptr, 10);
  SCOPED_TRACE("KEEL_CRASH_SEED=" + std::to_string(seed));
  Random random(seed);
  testing::TempDir dir;
  std::map<std::uint64_t, Ack> acked;  // by position, over every round
  std::uint64_t acked_total = 0;
  std::uint64_t torn_tails = 0;  // rounds whose kill left a torn tail
  std::uint64_t events_in_log = 0;
  std::uint64_t segments = 0;
  SteadyClock clock;

  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int threads = 2 + static_cast<int>(random.uniform(3));
    const auto run_for = std::chrono::milliseconds(20 + random.uniform(181));
    WriterRun run = run_writer_and_kill(dir.path(), threads, seed * 100 + round, run_for);
    ASSERT_TRUE(WIFSIGNALED(run.status) && WTERMSIG(run.status) == SIGKILL)
        << "the writer ended by itself (status " << run.status << "); see its stderr above";
    ASSERT_TRUE(run.malformed.empty()) << "unreadable line from the writer: " << run.malformed;
    for (Ack& ack : run.acks) {
      ASSERT_FALSE(acked.contains(ack.position))
          << "position " << ack.position << " acknowledged twice: to " << acked[ack.position].id
          << " and to " << ack.id;
      acked.emplace(ack.position, std::move(ack));
    }
    acked_total += run.acks.size();

    // As the kill left it: a torn tail at most, which is a warning, never an error.
    VerifyReport crashed = expect_no_damage(dir.path(), "before recovery");
    for (const auto& warning : crashed.warnings) {
      if (warning.what.find("torn tail") != std::string::npos) ++torn_tails;
    }

    // The store as a reader sees it after recovery.
    StoreOptions options;
    options.segment_bytes = 64 * 1024;
    auto opened = EventStore::open(dir.path(), options, clock);
    ASSERT_TRUE(opened.ok()) << opened.error().to_string();
    EventStore& store = **opened;
    std::vector<RecordedEvent> all;
    for (;;) {
      auto page = store.read_all(all.size(), 10000);
      ASSERT_TRUE(page.ok()) << page.error().to_string();
      if (page->empty()) break;
      for (auto& event : *page) all.push_back(std::move(event));
    }
    ASSERT_EQ(all.size(), store.next_position());
    std::unordered_set<std::string> ids;
    std::map<std::string, std::uint64_t> next_version;
    for (std::size_t i = 0; i < all.size(); ++i) {
      const RecordedEvent& event = all[i];
      ASSERT_EQ(event.position, i) << "$all has a gap or is out of order";
      ASSERT_TRUE(ids.insert(event.id.to_string()).second)
          << "event " << event.id.to_string() << " is in $all twice (again at " << i << ")";
      ASSERT_EQ(event.version, next_version[event.stream]++)
          << "stream " << event.stream << " skips or repeats a version at position " << i;
    }
    for (const auto& [position, ack] : acked) {
      ASSERT_LT(position, all.size()) << "acknowledged event " << ack.id << " (" << ack.stream
                                      << "@" << ack.version << ") is lost";
      const RecordedEvent& event = all[position];
      ASSERT_EQ(event.id.to_string(), ack.id) << "at position " << position;
      ASSERT_EQ(event.stream, ack.stream) << "at position " << position;
      ASSERT_EQ(event.version, ack.version) << "at position " << position;
    }
    for (const auto& [stream, count] : next_version) {
      auto read = store.read_stream(stream, 0, count + 1);
      ASSERT_TRUE(read.ok()) << read.error().to_string();
      ASSERT_EQ(read->size(), count) << stream;
      for (std::uint64_t v = 0; v < count; ++v) ASSERT_EQ((*read)[v].version, v) << stream;
    }
    ASSERT_TRUE(store.close().ok());
    opened->reset();

    VerifyReport recovered = expect_no_damage(dir.path(), "after recovery");
    ASSERT_EQ(recovered.events, all.size());
    events_in_log = all.size();
    segments = recovered.segments;
  }
  // The rounds must have exercised something: many acknowledged appends across the kills.
  EXPECT_GT(acked_total, static_cast<std::uint64_t>(kRounds));
  std::printf(
      "%d kills: %llu events acknowledged, %llu more written but not acknowledged, %llu torn "
      "tails cut, %llu segments\n",
      kRounds, static_cast<unsigned long long>(acked_total),
      static_cast<unsigned long long>(events_in_log - acked_total),
      static_cast<unsigned long long>(torn_tails), static_cast<unsigned long long>(segments));
}

}  // namespace
}  // namespace keel::eventlog

// A child process whose output is read line by line as it comes (or appended to a file): for
// whole-process tests, benchmarks and `keel demo`, which start Keel's own programs and etcd and
// watch what they print. The child is SIGKILLed if the thread that started it dies (the parent
// crashed, or was killed by a signal), so no orphan outlives a test or a benchmark.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::testing {

class Subprocess {
 public:
  // Called on the reader thread for each line of the child's stdout and stderr (merged),
  // without the newline; a last line without one is passed on at end of output.
  using LineHandler = std::function<void(std::string_view line)>;

  // Starts argv[0] (looked up in PATH when it has no '/'), stdin from /dev/null, stdout and
  // stderr to `on_line` (or nowhere when it is empty).
  static Result<std::unique_ptr<Subprocess>> spawn(std::vector<std::string> argv,
                                                   LineHandler on_line);
  // The same, with stdout and stderr appended to `output_file`.
  static Result<std::unique_ptr<Subprocess>> spawn_to_file(std::vector<std::string> argv,
                                                           const std::string& output_file);
  // SIGKILLs a child still running, reaps it and joins the reader.
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int signal_number) const;
  // Waits up to `timeout` (real time) for the child to end. Its exit code, or 128 + the signal
  // that ended it, shell-style; nullopt if it is still running.
  std::optional<int> wait(Duration timeout);

 private:
  Subprocess() = default;
  static Result<std::unique_ptr<Subprocess>> start(std::vector<std::string> argv, int output_fd);
  bool reap(bool block);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::thread reader_;
};

// For the helpers that start servers (etcd, PostgreSQL) for tests and benchmarks:
// a TCP port on 127.0.0.1 the kernel just reported free (bound and released at once) …
Result<int> free_loopback_port();
// … and the last `bytes` of a file (a child's log), for error messages.
std::string file_tail(const std::string& path, std::size_t bytes);

// A server started as a child process coming up: polls `ready` every 20 ms until it says yes,
// the process exits, or `timeout` passes. The one start-and-poll loop of the fixtures.
enum class Readiness { kReady, kExited, kTimedOut };
Readiness wait_until_ready(Subprocess& process, Duration timeout,
                           const std::function<bool()>& ready);

}  // namespace keel::testing

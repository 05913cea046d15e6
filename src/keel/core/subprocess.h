// A child process whose output is read line by line as it comes: for whole-process tests,
// benchmarks and `keel demo`, which start Keel's own programs and watch what they print.
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

namespace keel {

class Subprocess {
 public:
  // Called on the reader thread for each line of the child's stdout and stderr (merged),
  // without the newline; a last line without one is passed on at end of output.
  using LineHandler = std::function<void(std::string_view line)>;

  // Starts argv[0] (looked up in PATH when it has no '/'), stdin from /dev/null.
  static Result<std::unique_ptr<Subprocess>> spawn(std::vector<std::string> argv,
                                                   LineHandler on_line);
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
  bool reap(bool block);

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
  std::thread reader_;
};

}  // namespace keel

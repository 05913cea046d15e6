#include "keel/core/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

extern char** environ;

namespace keel {

Result<std::unique_ptr<Subprocess>> Subprocess::spawn(std::vector<std::string> argv,
                                                      LineHandler on_line) {
  if (argv.empty()) return Error(errc::invalid_argument, "Subprocess::spawn: no program given");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return Error(errc::io_error, std::string("pipe2: ") + std::strerror(errno));
  }
  std::vector<char*> args;
  for (auto& arg : argv) args.push_back(arg.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  // The child starts with no signals blocked, whatever the parent's threads block.
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  auto process = std::unique_ptr<Subprocess>(new Subprocess());
  int spawned =
      ::posix_spawnp(&process->pid_, args[0], &actions, &attributes, args.data(), environ);
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (spawned != 0) {
    ::close(fds[0]);
    process->pid_ = -1;
    return Error(errc::io_error, "cannot start '" + argv[0] + "': " + std::strerror(spawned));
  }
  process->reader_ = std::thread([fd = fds[0], on_line = std::move(on_line)] {
    std::string pending;
    char buffer[4096];
    for (;;) {
      ssize_t n = ::read(fd, buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buffer, static_cast<std::size_t>(n));
      std::size_t start = 0;
      for (std::size_t end; (end = pending.find('\n', start)) != std::string::npos;
           start = end + 1) {
        if (on_line) on_line(std::string_view(pending).substr(start, end - start));
      }
      pending.erase(0, start);
    }
    if (!pending.empty() && on_line) on_line(pending);
    ::close(fd);
  });
  return process;
}

bool Subprocess::reap(bool block) {
  if (exit_code_) return true;
  int status = 0;
  pid_t done = 0;
  do {
    done = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (done < 0 && errno == EINTR);
  if (done == 0) return false;
  if (done < 0) {
    exit_code_ = -1;  // not ours to reap any more
  } else if (WIFEXITED(status)) {
    exit_code_ = WEXITSTATUS(status);
  } else {
    exit_code_ = 128 + WTERMSIG(status);
  }
  return true;
}

bool Subprocess::running() { return pid_ > 0 && !reap(false); }

void Subprocess::signal(int signal_number) const {
  if (pid_ > 0 && !exit_code_) ::kill(pid_, signal_number);
}

std::optional<int> Subprocess::wait(Duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!reap(false)) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(2ms);
  }
  return exit_code_;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !reap(false)) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
  // Grandchildren holding the pipe open would keep the reader waiting; Keel's programs have none.
  if (reader_.joinable()) reader_.join();
}

}  // namespace keel

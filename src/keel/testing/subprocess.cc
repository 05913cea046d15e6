#include "keel/testing/subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

extern char** environ;

namespace keel::testing {
namespace {

// argv[0] as a path: itself when it has a '/', else the first executable match in $PATH.
Result<std::string> find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
    return Error(errc::io_error, "cannot start '" + name + "': " + std::strerror(errno));
  }
  const char* path = std::getenv("PATH");
  std::string directories = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= directories.size()) {
    std::size_t end = directories.find(':', start);
    if (end == std::string::npos) end = directories.size();
    std::string directory = directories.substr(start, end - start);
    std::string candidate = (directory.empty() ? "." : directory) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  return Error(errc::io_error, "cannot start '" + name + "': not found in PATH");
}

}  // namespace

Result<std::unique_ptr<Subprocess>> Subprocess::start(std::vector<std::string> argv,
                                                      int output_fd) {
  if (argv.empty()) return Error(errc::invalid_argument, "Subprocess: no program given");
  auto program = find_program(argv[0]);
  if (!program) return program.error();
  std::vector<char*> args;
  for (auto& arg : argv) args.push_back(arg.data());
  args.push_back(nullptr);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0)
    return Error(errc::io_error, std::string("open /dev/null: ") + std::strerror(errno));
  const pid_t parent = ::getpid();
  auto process = std::unique_ptr<Subprocess>(new Subprocess());
  process->pid_ = ::fork();
  if (process->pid_ == 0) {
    // The child: only async-signal-safe calls until exec.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);  // the parent died before prctl
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // whatever the parent's thread blocked
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(output_fd, STDOUT_FILENO);
    ::dup2(output_fd, STDERR_FILENO);
    ::execve(program->c_str(), args.data(), environ);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(null_fd);
  if (process->pid_ < 0) {
    process->pid_ = -1;
    return Error(errc::io_error,
                 "cannot start '" + argv[0] + "': fork: " + std::strerror(fork_errno));
  }
  return process;
}

Result<std::unique_ptr<Subprocess>> Subprocess::spawn(std::vector<std::string> argv,
                                                      LineHandler on_line) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    return Error(errc::io_error, std::string("pipe2: ") + std::strerror(errno));
  }
  auto process = start(std::move(argv), fds[1]);
  ::close(fds[1]);
  if (!process) {
    ::close(fds[0]);
    return process.error();
  }
  (*process)->reader_ = std::thread([fd = fds[0], on_line = std::move(on_line)] {
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

Result<std::unique_ptr<Subprocess>> Subprocess::spawn_to_file(std::vector<std::string> argv,
                                                              const std::string& output_file) {
  const int fd = ::open(output_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return Error(errc::io_error, "cannot open " + output_file + ": " + std::strerror(errno));
  }
  auto process = start(std::move(argv), fd);
  ::close(fd);
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
  if (reader_.joinable()) reader_.join();
}

Result<int> free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error(errc::io_error, std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return Error(errc::io_error, std::string("bind: ") + std::strerror(errno));
  }
  ::close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

std::string file_tail(const std::string& path, std::size_t bytes) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string all = text.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

Readiness wait_until_ready(Subprocess& process, Duration timeout,
                           const std::function<bool()>& ready) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process.running()) return Readiness::kExited;
    if (ready()) return Readiness::kReady;
    std::this_thread::sleep_for(20ms);
  }
  return Readiness::kTimedOut;
}

}  // namespace keel::testing

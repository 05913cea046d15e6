// An open-loop HTTP/1.1 load generator: requests are due at a fixed rate whatever the server
// does, and each latency is measured from when its request was due, not from when a connection
// was free to send it (so a stall shows up in the latency instead of slowing the load: no
// coordinated omission, as in wrk2, which Debian does not package). Keep-alive connections,
// one request in flight on each; requests due while every connection is busy queue up.
//
//   build/bench/fixed_rate_load --port PORT [--path /] [--rate 10000] [--connections 64]
//                               [--seconds 10] [--warmup 2]
//
// Prints a summary and, as its last line, one JSON object: rate_per_s, achieved_per_s, p50_ms,
// p99_ms, p999_ms, max_ms, errors, max_queue, and for the measured window `due` (requests due)
// and `ok` (of those, answered 200): the success rate a fault benchmark needs.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;
using Ns = std::chrono::nanoseconds;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "fixed_rate_load: %s\n", what.c_str());
  std::exit(1);
}

struct Connection {
  int fd = -1;
  bool busy = false;
  Clock::time_point due{};
  std::string in;
};

int connect_to(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    die("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  return fd;
}

// The size of the complete response at the start of `in`, or 0 while it is incomplete.
// Content-Length bodies only (what the benchmark upstreams send).
std::size_t response_size(const std::string& in) {
  const std::size_t head_end = in.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  std::size_t length = 0;
  for (std::size_t line = in.find("\r\n") + 2; line < head_end;) {
    const std::size_t end = in.find("\r\n", line);
    if (end - line > 15 && strncasecmp(in.data() + line, "content-length:", 15) == 0)
      length = std::strtoull(in.c_str() + line + 15, nullptr, 10);
    line = end + 2;
  }
  return in.size() >= head_end + 4 + length ? head_end + 4 + length : 0;
}

double ms(Ns d) { return static_cast<double>(d.count()) / 1e6; }

}  // namespace

int main(int argc, char** argv) {
  int port = 0, connections = 64;
  double rate = 10000, seconds = 10, warmup = 2;
  std::string path = "/";
  CLI::App app{"An open-loop HTTP/1.1 load generator (no coordinated omission)"};
  app.add_option("--port", port, "The server's port on 127.0.0.1")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("--path", path, "The request target");
  app.add_option("--rate", rate, "Requests due per second")->check(CLI::PositiveNumber);
  app.add_option("--connections", connections, "Keep-alive connections")
      ->check(CLI::Range(1, 100000));
  app.add_option("--seconds", seconds, "How long to measure")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "Seconds of load before measuring")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

  const int epoll = ::epoll_create1(EPOLL_CLOEXEC);
  const int timer = ::timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  epoll_event timer_event{EPOLLIN, {.fd = -1}};
  ::epoll_ctl(epoll, EPOLL_CTL_ADD, timer, &timer_event);
  std::vector<Connection> pool(static_cast<std::size_t>(connections));
  std::vector<int> idle;
  for (int c = 0; c < connections; ++c) {
    pool[c].fd = connect_to(port);
    epoll_event event{EPOLLIN, {.fd = c}};
    ::epoll_ctl(epoll, EPOLL_CTL_ADD, pool[c].fd, &event);
    idle.push_back(c);
  }

  const Ns interval(static_cast<std::int64_t>(1e9 / rate));
  const Clock::time_point start = Clock::now();
  const Clock::time_point measure_from = start + Ns(static_cast<std::int64_t>(warmup * 1e9));
  const Clock::time_point stop_sending =
      measure_from + Ns(static_cast<std::int64_t>(seconds * 1e9));
  Clock::time_point next_due = start;
  std::deque<Clock::time_point> queue;  // due, waiting for a free connection
  std::size_t max_queue = 0;
  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(rate * seconds * 1.1) + 16);
  std::uint64_t errors = 0, outstanding = 0;
  std::uint64_t due_measured = 0, ok_measured = 0;

  auto send_on = [&](int c, Clock::time_point due) {
    Connection& conn = pool[c];
    conn.busy = true;
    conn.due = due;
    ++outstanding;
    if (::send(conn.fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      ++errors;  // loopback with one small request in flight: a short write means a dead socket
    }
  };
  auto arm = [&](Clock::time_point when) {
    itimerspec spec{};
    const auto ns = std::chrono::duration_cast<Ns>(when.time_since_epoch()).count();
    spec.it_value.tv_sec = ns / 1000000000;
    spec.it_value.tv_nsec = ns % 1000000000;
    if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
    ::timerfd_settime(timer, TFD_TIMER_ABSTIME, &spec, nullptr);
  };

  const Clock::time_point give_up = stop_sending + std::chrono::seconds(5);
  epoll_event events[256];
  char buffer[65536];
  while (true) {
    const Clock::time_point now = Clock::now();
    while (next_due <= now && next_due < stop_sending) {
      if (next_due >= measure_from) ++due_measured;
      queue.push_back(next_due);
      next_due += interval;
    }
    max_queue = std::max(max_queue, queue.size());
    while (!queue.empty() && !idle.empty()) {
      const int c = idle.back();
      idle.pop_back();
      send_on(c, queue.front());
      queue.pop_front();
    }
    if (next_due >= stop_sending && queue.empty() && outstanding == 0) break;
    if (now > give_up) break;
    if (next_due < stop_sending) arm(next_due);
    const int n = ::epoll_wait(epoll, events, 256, 100);
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd < 0) {
        std::uint64_t expirations;
        (void)::read(timer, &expirations, sizeof expirations);
        continue;
      }
      Connection& conn = pool[events[i].data.fd];
      while (true) {
        const ssize_t got = ::read(conn.fd, buffer, sizeof buffer);
        if (got > 0) {
          conn.in.append(buffer, static_cast<std::size_t>(got));
          continue;
        }
        if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
          ++errors;  // the server closed: reconnect, and count the request lost
          ::epoll_ctl(epoll, EPOLL_CTL_DEL, conn.fd, nullptr);
          ::close(conn.fd);
          conn.fd = connect_to(port);
          epoll_event event{EPOLLIN, {.fd = events[i].data.fd}};
          ::epoll_ctl(epoll, EPOLL_CTL_ADD, conn.fd, &event);
          conn.in.clear();
          if (conn.busy) --outstanding;
          conn.busy = false;
          idle.push_back(events[i].data.fd);
        }
        break;
      }
      if (!conn.busy) continue;
      if (const std::size_t size = response_size(conn.in)) {
        const Clock::time_point done = Clock::now();
        const bool ok = conn.in.compare(9, 3, "200") == 0;
        if (!ok) ++errors;
        if (ok && conn.due >= measure_from) ++ok_measured;
        if (conn.due >= measure_from) latencies.push_back(ms(done - conn.due));
        conn.in.erase(0, size);
        conn.busy = false;
        --outstanding;
        idle.push_back(events[i].data.fd);
      }
    }
  }
  std::sort(latencies.begin(), latencies.end());
  auto pct = [&](double p) {
    return latencies.empty()
               ? 0.0
               : latencies[std::min(
                     latencies.size() - 1,
                     static_cast<std::size_t>(p * static_cast<double>(latencies.size())))];
  };
  const double achieved = static_cast<double>(latencies.size()) / seconds;
  std::printf(
      "rate %.0f/s over %d connections for %.1f s (after %.1f s warm-up): %.0f/s answered, "
      "p50 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms, %llu errors, queue up to %zu\n",
      rate, connections, seconds, warmup, achieved, pct(0.5), pct(0.99), pct(0.999),
      latencies.empty() ? 0.0 : latencies.back(), static_cast<unsigned long long>(errors),
      max_queue);
  std::printf(
      "{\"rate_per_s\":%.0f,\"achieved_per_s\":%.0f,\"p50_ms\":%.4f,\"p99_ms\":%.4f,\"p999_ms\":%."
      "4f,"
      "\"max_ms\":%.4f,\"errors\":%llu,\"max_queue\":%zu,\"due\":%llu,\"ok\":%llu}\n",
      rate, achieved, pct(0.5), pct(0.99), pct(0.999), latencies.empty() ? 0.0 : latencies.back(),
      static_cast<unsigned long long>(errors), max_queue,
      static_cast<unsigned long long>(due_measured), static_cast<unsigned long long>(ok_measured));
  return 0;
}

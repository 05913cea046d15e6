// A blocking TCP connection to 127.0.0.1 with a read buffer, for the benchmarks' clients
// (node_bench's HTTP client, the Redis client of redis_client.h). Any failure ends the program
// with a message, except a close that the thread said it expects (closing_is_expected), which
// throws Closed.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace keel::bench {

// A thread that closes its own connection on purpose (a subscriber shut down from another thread
// when the run is over) sets this and catches Closed; anywhere else a closed connection ends the
// program.
struct Closed {};
inline thread_local bool closing_is_expected = false;

class Socket {
 public:
  // `who` names the program in the message a failure ends it with.
  Socket(int port, std::string who) : who_(std::move(who)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) fail(std::string("socket: ") + std::strerror(errno));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
      fail("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  void write_all(std::string_view a, std::string_view b = {}) {
    iovec parts[2] = {{const_cast<char*>(a.data()), a.size()},
                      {const_cast<char*>(b.data()), b.size()}};
    int count = b.empty() ? 1 : 2;
    iovec* next = parts;
    while (count > 0) {
      ssize_t n = ::writev(fd_, next, count);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail(std::string("write: ") + std::strerror(errno));
      auto left = static_cast<std::size_t>(n);
      while (count > 0 && left >= next->iov_len) {
        left -= next->iov_len;
        ++next;
        --count;
      }
      if (count > 0) {
        next->iov_base = static_cast<char*>(next->iov_base) + left;
        next->iov_len -= left;
      }
    }
  }
  // Reads more into the buffer; false when the peer closed.
  bool fill() {
    char chunk[65536];
    ssize_t n;
    do n = ::read(fd_, chunk, sizeof chunk);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  void must_fill() {
    if (fill()) return;
    if (closing_is_expected) throw Closed{};
    fail("connection closed by the server");
  }
  std::string read_line() {  // without its CRLF
    std::size_t end;
    while ((end = buffer_.find("\r\n", start_)) == std::string::npos) must_fill();
    std::string line = buffer_.substr(start_, end - start_);
    consume(end + 2 - start_);
    return line;
  }
  std::string read_bytes(std::size_t n) {
    while (buffer_.size() - start_ < n) must_fill();
    std::string bytes = buffer_.substr(start_, n);
    consume(n);
    return bytes;
  }
  std::size_t buffered() const { return buffer_.size() - start_; }
  const char* data() const { return buffer_.data() + start_; }
  void consume(std::size_t n) {
    start_ += n;
    if (start_ == buffer_.size()) {
      buffer_.clear();
      start_ = 0;
    } else if (start_ > (1 << 20)) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
  }
  int fd() const { return fd_; }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    std::fprintf(stderr, "%s: %s\n", who_.c_str(), what.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }

  std::string who_;
  int fd_ = -1;
  std::string buffer_;
  std::size_t start_ = 0;
};

}  // namespace keel::bench

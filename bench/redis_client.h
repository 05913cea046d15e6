// A minimal RESP client for the Redis anchors of the benchmarks (pubsub_bench, node_bench): one
// blocking connection to 127.0.0.1, commands sent as arrays of bulk strings, replies parsed into
// a tree. Enough for XADD, XREADGROUP and XACK; any failure ends the benchmark with a message.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace keel::bench {

[[noreturn]] inline void redis_fail(const std::string& what) {
  std::fprintf(stderr, "redis: %s\n", what.c_str());
  std::exit(1);
}

class Redis {
 public:
  explicit Redis(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
      redis_fail("cannot connect to 127.0.0.1:" + std::to_string(port));
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~Redis() { ::close(fd_); }

  struct Reply {
    char type = 0;
    std::string text;  // simple, error, bulk, integer as text
    std::vector<Reply> items;
    bool null = false;
  };

  // Appends one command to `out` (for pipelines sent with send_raw).
  static void encode(std::string& out, const std::vector<std::string>& args) {
    out += "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) {
      out.append("$").append(std::to_string(a.size())).append("\r\n").append(a).append("\r\n");
    }
  }
  void send_raw(std::string_view bytes) {
    for (std::size_t sent = 0; sent < bytes.size();) {
      ssize_t n = ::write(fd_, bytes.data() + sent, bytes.size() - sent);
      if (n <= 0) redis_fail("write failed");
      sent += static_cast<std::size_t>(n);
    }
  }
  void send(const std::vector<std::string>& args) {
    std::string out;
    encode(out, args);
    send_raw(out);
  }
  Reply command(const std::vector<std::string>& args) {
    send(args);
    Reply reply = read();
    if (reply.type == '-') redis_fail(args[0] + ": " + reply.text);
    return reply;
  }
  Reply read() {
    std::string line = read_line();
    Reply reply;
    reply.type = line[0];
    const std::string rest = line.substr(1);
    switch (reply.type) {
      case '+':
      case '-':
      case ':':
        reply.text = rest;
        break;
      case '$': {
        const long size = std::stol(rest);
        if (size < 0) {
          reply.null = true;
          break;
        }
        reply.text = read_bytes(static_cast<std::size_t>(size) + 2);
        reply.text.resize(static_cast<std::size_t>(size));
        break;
      }
      case '*': {
        const long count = std::stol(rest);
        if (count < 0) {
          reply.null = true;
          break;
        }
        for (long i = 0; i < count; ++i) reply.items.push_back(read());
        break;
      }
      default:
        redis_fail("unexpected reply " + line);
    }
    return reply;
  }

 private:
  bool fill() {
    char chunk[65536];
    ssize_t n = ::read(fd_, chunk, sizeof chunk);
    if (n <= 0) redis_fail("connection closed");
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  std::string read_line() {
    std::size_t end;
    while ((end = buffer_.find("\r\n", start_)) == std::string::npos) fill();
    std::string line = buffer_.substr(start_, end - start_);
    consume(end + 2 - start_);
    return line;
  }
  std::string read_bytes(std::size_t n) {
    while (buffer_.size() - start_ < n) fill();
    std::string bytes = buffer_.substr(start_, n);
    consume(n);
    return bytes;
  }
  void consume(std::size_t n) {
    start_ += n;
    if (start_ > 1 << 20) {
      buffer_.erase(0, start_);
      start_ = 0;
    }
  }
  int fd_ = -1;
  std::string buffer_;
  std::size_t start_ = 0;
};

// XREADGROUP's reply: [[stream, [[id, [field, value, …]], …]]]
template <typename F>
std::size_t for_each_entry(const Redis::Reply& reply, F&& f) {
  std::size_t n = 0;
  if (reply.null || reply.items.empty()) return 0;
  for (const auto& entry : reply.items[0].items[1].items) {
    f(entry.items[0].text, entry.items[1]);
    ++n;
  }
  return n;
}

}  // namespace keel::bench

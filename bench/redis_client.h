// A minimal RESP client for the Redis anchors of the benchmarks (pubsub_bench, node_bench): one
// blocking connection to 127.0.0.1, commands sent as arrays of bulk strings, replies parsed into
// a tree, on socket.h's connection. Enough for XADD, XREADGROUP and XACK; any failure ends the
// benchmark with a message.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "socket.h"

namespace keel::bench {

[[noreturn]] inline void redis_fail(const std::string& what) {
  std::fprintf(stderr, "redis: %s\n", what.c_str());
  std::exit(1);
}

class Redis {
 public:
  explicit Redis(int port) : socket_(port, "redis") {}

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
  void send_raw(std::string_view bytes) { socket_.write_all(bytes); }
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
  std::string read_line() { return socket_.read_line(); }
  std::string read_bytes(std::size_t n) { return socket_.read_bytes(n); }

  Socket socket_;
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

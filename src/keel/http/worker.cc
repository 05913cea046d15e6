#include "keel/http/worker.h"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cstring>
#include <future>

#include "keel/http/address.h"

namespace keel::http {

net::mutable_buffer Buffer::space(std::size_t want) {
  if (capacity_ - end_ < want && begin_ > 0) {
    std::memmove(bytes_.get(), bytes_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  if (capacity_ - end_ < want) {
    const std::size_t grown = std::max({capacity_ * 2, end_ + want, std::size_t{4096}});
    auto bigger = std::make_unique_for_overwrite<char[]>(grown);
    if (end_ > 0) std::memcpy(bigger.get(), bytes_.get(), end_);
    bytes_ = std::move(bigger);
    capacity_ = grown;
  }
  return net::buffer(bytes_.get() + end_, std::min(capacity_ - end_, std::max(want, kChunk)));
}

namespace {

// Closes every connection of the worker whose deadline has passed, every kSweep, until the
// worker's io_context stops (deadlines go on mattering while a server drains).
Task<void> sweep_loop(Worker& worker) {
  net::steady_timer timer(worker.io);
  for (;;) {
    timer.expires_after(kSweep);
    error_code ec;
    co_await timer.async_wait(net::redirect_error(use_task, ec));
    const TimePoint now = worker.clock->now();
    for (Conn* conn : worker.conns) {
      if (conn->deadline > now) continue;
      conn->timed_out = true;
      conn->expires_never();
      conn->socket.close(ec);
    }
  }
}

}  // namespace

void Worker::start(std::function<void()> before_run) {
  net::co_spawn(io, sweep_loop(*this), net::detached);
  thread = std::thread([this, before_run = std::move(before_run)] {
    if (before_run) before_run();
    io.run();
  });
}

void Worker::close_acceptors() {
  net::post(io, [this] {
    for (auto& acceptor : acceptors) acceptor.close();
  });
}

void Worker::close_idle() {
  net::post(io, [this] {
    for (Conn* conn : conns) {
      error_code ignored;
      if (conn->client && conn->idle) conn->socket.close(ignored);
    }
  });
}

std::optional<std::uint64_t> Worker::sessions() {
  auto open = std::make_shared<std::promise<std::uint64_t>>();
  auto answer = open->get_future();
  net::post(io, [this, open] { open->set_value(open_sessions); });
  if (answer.wait_for(1s) != std::future_status::ready) return std::nullopt;
  return answer.get();
}

void Worker::stop() {
  work.reset();
  io.stop();
  if (thread.joinable()) thread.join();
}

Conn::Conn(Worker& w, Socket s, bool is_client)
    : worker(w), socket(std::move(s)), client(is_client), slot(w.conns.size()) {
  w.conns.push_back(this);
  error_code ignored;
  socket.non_blocking(true, ignored);
}

Conn::~Conn() {
  worker.conns[slot] = worker.conns.back();
  worker.conns[slot]->slot = slot;
  worker.conns.pop_back();
}

Task<error_code> send_all(Conn& conn, net::const_buffer first, net::const_buffer second) {
  std::array<net::const_buffer, 2> buffers{first, second};
  error_code ec;
  if (!send_now(conn, buffers, ec) && !ec) {
    co_await net::async_write(conn.socket, buffers, net::redirect_error(use_task, ec));
    ec = conn.failure(ec);
  }
  co_return ec;
}

Task<error_code> read_some(Conn& conn, std::size_t want) {
  error_code ec;
  const std::size_t n =
      co_await conn.socket.async_read_some(conn.in.space(want), net::redirect_error(use_task, ec));
  if (ec) co_return conn.failure(ec);
  conn.in.commit(n);
  co_return ec;
}

Task<HeadRead> read_request_head(Conn& conn, const ServerLimits& limits, h1::Head& head,
                                 h1::ParseResult& error) {
  error_code ec;
  // Idle: wait for the first byte of the next request.
  if (conn.in.size() == 0) {
    conn.expires_after(limits.idle_timeout);
    conn.idle = true;
    ec = co_await read_some(conn);
    conn.idle = false;
    if (ec) co_return HeadRead::kClosed;
  }
  // Slowloris: the whole header within header_timeout.
  conn.expires_after(limits.header_timeout);
  h1::ParseResult parsed;
  // Parsed when the first bytes come (garbage is refused at once), then again only once the
  // end of the head may be there: a header sent a byte at a time is not parsed anew for every
  // byte.
  std::size_t searched = 0;
  for (;;) {
    const std::string_view bytes = conn.in.view();
    if (searched == 0 ||
        bytes.find("\r\n\r\n", searched > 3 ? searched - 3 : 0) != std::string_view::npos) {
      parsed = h1::parse_request(bytes, head);
      if (parsed.state != h1::Parsed::kNeedMore) break;
    }
    searched = bytes.size();
    if (conn.in.size() >= limits.max_header_bytes) {
      parsed = {h1::Parsed::kError, 431, "the request header is larger than max_header_bytes"};
      break;
    }
    ec = co_await read_some(conn, std::min<std::size_t>(kChunk, limits.max_header_bytes));
    if (ec) co_return HeadRead::kClosed;  // closed or silent before its header was whole
  }
  if (parsed.state == h1::Parsed::kDone && head.size > limits.max_header_bytes) {
    parsed = {h1::Parsed::kError, 431, "the request header is larger than max_header_bytes"};
  }
  if (parsed.state == h1::Parsed::kDone && head.framing == h1::Framing::kLength &&
      head.content_length > limits.max_body_bytes) {
    parsed = {h1::Parsed::kError, 413, "the request body is larger than max_body_bytes"};
  }
  if (parsed.state == h1::Parsed::kError) {
    error = parsed;
    co_return HeadRead::kError;
  }
  co_return HeadRead::kDone;
}

Task<void> linger_close(Conn& conn) {
  error_code ec;
  conn.socket.shutdown(tcp::socket::shutdown_send, ec);
  if (!conn.socket.is_open()) co_return;
  conn.expires_after(1s);
  for (std::size_t total = 0; total < 256 * 1024 && !ec;) {
    conn.in.consume(conn.in.size());
    const std::size_t n = co_await conn.socket.async_read_some(conn.in.space(kChunk),
                                                               net::redirect_error(use_task, ec));
    total += n;
  }
}

Result<tcp::endpoint> resolve(const std::string& host_port) {
  auto parsed = parse_host_port(host_port, true);
  if (!parsed) return parsed.error();
  error_code ec;
  auto ip = net::ip::make_address(parsed->host, ec);
  if (!ec) return tcp::endpoint(ip, parsed->port);
  net::io_context io;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(parsed->host, std::to_string(parsed->port), ec);
  if (ec || results.empty()) {
    return Error(errc::config_invalid,
                 "cannot resolve " + host_port + ": " + (ec ? ec.message() : "no address"));
  }
  return results.begin()->endpoint();
}

Result<tcp::acceptor> listen_on(net::io_context& io, const tcp::endpoint& at) {
  tcp::acceptor acceptor(io);
  error_code ec;
  acceptor.open(at.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) {
    acceptor.set_option(net::detail::socket_option::boolean<SOL_SOCKET, SO_REUSEPORT>(true), ec);
  }
  if (!ec) acceptor.bind(at, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error(errc::io_error, "cannot listen on " + at.address().to_string() + ":" +
                                     std::to_string(at.port()) + ": " + ec.message());
  }
  return acceptor;
}

std::string_view reason_phrase(unsigned status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 203:
      return "Non-Authoritative Information";
    case 204:
      return "No Content";
    case 205:
      return "Reset Content";
    case 206:
      return "Partial Content";
    case 300:
      return "Multiple Choices";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 411:
      return "Length Required";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Payload Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 416:
      return "Range Not Satisfiable";
    case 417:
      return "Expectation Failed";
    case 421:
      return "Misdirected Request";
    case 422:
      return "Unprocessable Entity";
    case 425:
      return "Too Early";
    case 426:
      return "Upgrade Required";
    case 428:
      return "Precondition Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

bool known_method(std::string_view method) {
  static constexpr std::string_view kMethods[] = {
      "GET",        "HEAD",       "POST",  "PUT",      "DELETE", "OPTIONS",   "TRACE",
      "PATCH",      "COPY",       "LOCK",  "MKCOL",    "MOVE",   "PROPFIND",  "PROPPATCH",
      "SEARCH",     "UNLOCK",     "BIND",  "REBIND",   "UNBIND", "ACL",       "REPORT",
      "MKACTIVITY", "CHECKOUT",   "MERGE", "M-SEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE",
      "PURGE",      "MKCALENDAR", "LINK",  "UNLINK"};
  return std::find(std::begin(kMethods), std::end(kMethods), method) != std::end(kMethods);
}

}  // namespace keel::http

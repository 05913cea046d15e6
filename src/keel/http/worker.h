// The lean HTTP/1.1 I/O core that the proxy's data path proved, for servers and clients built on
// it (the proxy, http::Server, the node): one io_context per worker thread, connections with a
// contiguous read buffer (heads are parsed in place, h1.h), writes that go straight to the
// socket when it takes them, and one deadline sweep per worker instead of a timer per read.
//
// This header includes Asio: include it from .cc files only. Users that want a server without
// Asio take http::Server (server.h).
//
// Thread-safety: a Worker, its connections and everything they hold belong to the worker's
// thread; other threads reach them only through net::post(worker.io, ...).
#pragma once

// Asio's awaitable.hpp uses std::exchange without including <utility> (Boost 1.74).
#include <utility>
//
#include <array>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/http/h1.h"
#include "keel/http/limits.h"

namespace keel::http {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;
// Coroutines and sockets bound to the worker's io_context by type: no polymorphic executor on
// the data path.
using Executor = net::io_context::executor_type;
template <typename T>
using Task = net::awaitable<T, Executor>;
inline constexpr net::use_awaitable_t<Executor> use_task;
using Socket = net::basic_stream_socket<tcp, Executor>;

inline constexpr std::size_t kChunk = 16 * 1024;  // body bytes moved per read/write
inline constexpr Duration kSweep = 10ms;          // how often deadlines are checked

// Bytes read from a socket and not used yet, in one block that grows when it must: a message
// head is parsed in place, so it has to be contiguous.
class Buffer {
 public:
  std::string_view view() const { return {bytes_.get() + begin_, end_ - begin_}; }
  std::size_t size() const { return end_ - begin_; }
  void consume(std::size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Free room for at least `want` more bytes: what is held moves to the front, and the block
  // grows when that is not enough.
  net::mutable_buffer space(std::size_t want);
  void commit(std::size_t n) { end_ += n; }

 private:
  std::unique_ptr<char[]> bytes_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

struct Conn;

// One thread running one io_context, and every connection open on it. Servers and clients
// derive from it to keep their own per-worker state beside.
struct Worker {
  explicit Worker(Clock& c, std::size_t i = 0) : clock(&c), index(i) {}
  virtual ~Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Every open connection, clients' and upstreams': the sweeper's list, and stop()'s. First,
  // so that it outlives the io_context, whose destructor ends the coroutines that hold
  // connections.
  std::vector<Conn*> conns;
  Clock* clock;
  std::size_t index = 0;
  net::io_context io{1};
  // Keeps run() going while no socket is open, until stop().
  net::executor_work_guard<net::io_context::executor_type> work = net::make_work_guard(io);
  std::thread thread;
  std::vector<tcp::acceptor> acceptors;
  std::uint64_t open_sessions = 0;  // servers count theirs here, for draining

  // Starts the deadline sweep and the thread (which runs `before_run` first, when given).
  void start(std::function<void()> before_run = {});
  // Closes the acceptors (from any thread): no new connections.
  void close_acceptors();
  // Closes the idle client connections (between requests) at once.
  void close_idle();
  // How many sessions are open, asked on the worker's thread; nullopt when it did not answer
  // within a second.
  std::optional<std::uint64_t> sessions();
  // Stops the io_context and joins the thread. What is still open is cut.
  void stop();
};

// A socket, its read buffer and its deadline. Deadlines are not timers: the worker's sweeper
// closes every socket whose deadline has passed (every kSweep), and the operation waiting on it
// ends with `timed_out` set. One timer per worker instead of one per read and write.
struct Conn {
  Conn(Worker& w, Socket s, bool is_client);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  void expires_after(Duration d) { deadline = worker.clock->now() + d; }
  void expires_never() { deadline = TimePoint::max(); }
  // What a failed operation's error means: a timeout when the sweeper closed the socket.
  error_code failure(error_code ec) const { return timed_out ? net::error::timed_out : ec; }

  Worker& worker;
  Socket socket;
  Buffer in;
  TimePoint deadline = TimePoint::max();
  bool timed_out = false;
  bool client = false;   // a server's peer (not an upstream)
  bool idle = false;     // a client between requests: stop() closes it at once
  std::size_t slot = 0;  // its index in the worker's `conns`
};

// Sends what the socket takes at once (usually everything: no wait, no handler) and drops it
// from `buffers`. False when some is left for an asynchronous write, or with `ec` set.
template <std::size_t N>
bool send_now(Conn& conn, std::array<net::const_buffer, N>& buffers, error_code& ec) {
  std::size_t sent = conn.socket.send(buffers, 0, ec);
  if (ec == net::error::would_block || ec == net::error::try_again) {
    ec = {};
    sent = 0;
  }
  if (ec) {
    ec = conn.failure(ec);
    return false;
  }
  bool all = true;
  for (auto& buffer : buffers) {
    const std::size_t n = std::min(sent, buffer.size());
    buffer += n;
    sent -= n;
    all = all && buffer.size() == 0;
  }
  return all;
}

// Sends `first` then `second`: at once when the socket takes them, else asynchronously
// (within the connection's deadline). The error, a timeout when the sweeper closed the socket.
Task<error_code> send_all(Conn& conn, net::const_buffer first, net::const_buffer second = {});

// Reads more into the connection's buffer; the error (a timeout when swept) or none.
Task<error_code> read_some(Conn& conn, std::size_t want = kChunk);

// The outcome of waiting for a request head on a server connection.
enum class HeadRead {
  kDone,    // `head` holds the request, parsed in place in conn.in
  kClosed,  // the client closed or went quiet: nothing to answer
  kError,   // malformed or over a limit: answer `error.status` and close
};

// Waits (up to the idle timeout) for the next request on `conn` and reads its head (within
// the header timeout), refusing garbage as soon as it arrives, heads over max_header_bytes
// (431) and Content-Length bodies over max_body_bytes (413).
Task<HeadRead> read_request_head(Conn& conn, const ServerLimits& limits, h1::Head& head,
                                 h1::ParseResult& error);

// Reads the client's remaining bytes for up to a second (at most 256 KiB) after the last
// response was sent and shut down, so that closing does not reset the connection before the
// client has read that response (RFC 9112 9.6).
Task<void> linger_close(Conn& conn);

// "host:port" (a name is resolved once) into an endpoint.
Result<tcp::endpoint> resolve(const std::string& host_port);

// A listening socket with SO_REUSEADDR and SO_REUSEPORT: several workers bind the same port
// and the kernel spreads connections over them.
Result<tcp::acceptor> listen_on(net::io_context& io, const tcp::endpoint& at);

// The reason phrase of a status code ("Not Found"), or "Unknown".
std::string_view reason_phrase(unsigned status);

// Whether `method` is one of the registered methods this code forwards or serves (RFC 9110 9
// and the WebDAV/PATCH ones); CONNECT is not (no tunnels).
bool known_method(std::string_view method);

}  // namespace keel::http

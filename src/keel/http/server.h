// An HTTP/1.1 server on the lean core (worker.h): every admin listener's, and the node's API.
// Requests are read whole (the head in place, the body up to max_body_bytes, Content-Length or
// chunked, `Expect: 100-continue` answered) and handed to a Handler on the connection's worker
// thread. The handler answers through a Responder, at once or later from any thread, with one
// response or with a body sent over time (Server-Sent Events, long polls).
//
// Bad requests get their status (400, 413, 431, 501, ...) and the connection closes; a slow
// client is cut at the header timeout, an idle one at the idle timeout. Keep-alive and
// HTTP/1.0 as RFC 9112 says.
//
// Thread-safety: start() and stop() from one thread; a Responder from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/http/address.h"
#include "keel/http/limits.h"

namespace keel::http {

using Fields = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;
  std::string target;  // as sent: path and query
  std::string path;    // the target up to '?'
  std::string query;   // after '?', still percent-encoded
  Fields headers;      // names in lower case, in the order they came
  std::string body;
  std::string peer;  // the client's IP address
  unsigned version = 11;

  // The first field with that name (any case); empty when none.
  std::string_view header(std::string_view name) const;
  // A query parameter, percent-decoded ('+' is a space); nullopt when absent or when its
  // escapes are malformed.
  std::optional<std::string> param(std::string_view name) const;
};

struct Response {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  Fields headers;  // besides content-type, content-length and connection
  std::string body;

  static Response text(unsigned status, std::string body);
  static Response json(unsigned status, std::string body);
};

// How a handler answers. Move-only; every method may be called from any thread. A Responder
// dropped without an answer sends 500.
class Responder {
 public:
  struct State;
  explicit Responder(std::shared_ptr<State> state);
  Responder(Responder&&) noexcept;
  Responder& operator=(Responder&&) noexcept;
  ~Responder();

  // The whole response.
  void respond(Response response);
  // Starts a body sent over time: the head now (chunked for HTTP/1.1; for HTTP/1.0 the body
  // ends when the connection closes), then write() and end().
  void start_stream(unsigned status, std::string content_type, Fields headers = {});
  // Queues bytes of a streamed body. False when the client has gone, or when more than
  // `max_queued` bytes would be waiting for it (a slow client): the caller stops writing and
  // calls end() or drops the Responder.
  bool write(std::string_view bytes, std::size_t max_queued);
  // Ends a streamed body.
  void end();
  // True once the client has gone (or the server stopped): nothing more reaches it.
  bool closed() const;
  // Bytes written and not yet taken by the connection (what counts against max_queued).
  std::size_t queued() const;
  // Runs `callback` (once, on the worker's thread) when the client goes away or the server
  // stops while the response is still open.
  void on_close(std::function<void()> callback);

 private:
  std::shared_ptr<State> state_;
};

using Handler = std::function<void(Request& request, Responder responder)>;

// A handler that answers at once.
Handler respond_with(std::function<Response(const Request&)> handler);

struct ServerOptions {
  HostPort address{"127.0.0.1", 0};  // port 0: any free port (see bound())
  std::uint32_t workers = 1;         // threads, each with its own SO_REUSEPORT socket
  ServerLimits limits;
  std::string name = "keel";  // the log's name for it
  // Hand every method to the handler (which answers 405 or 501 itself); else methods outside
  // the registered ones get 501 here.
  bool any_method = false;
  // The answer to a request the server refuses itself (400 malformed, 413 too large, 431, 501,
  // 503 while stopping), from its status and what is wrong. Default: text/plain.
  std::function<Response(unsigned status, std::string_view message)> error_response;
};

class Server {
 public:
  // Binds the listening sockets (so the port is known and errors come now) without serving.
  static Result<std::unique_ptr<Server>> bind(ServerOptions options, Handler handler, Clock& clock);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  void start();
  // Stops accepting and closes idle connections; requests in flight get up to `drain` to
  // finish, open streams are closed (their on_close runs), then everything still open is cut.
  // Waits for the worker threads. Idempotent.
  void stop(Duration drain = 5s);

  HostPort bound() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Percent-decodes `text` ('+' as a space when `plus_is_space`); nullopt on a malformed escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space = false);

}  // namespace keel::http

// A blocking HTTP/1.1 client connection for control-plane traffic (talking to etcd's JSON
// gateway, admin APIs): one keep-alive TCP connection, a deadline on every call, and response
// bodies either read whole (bounded) or streamed piece by piece. Boost.Beast stays inside
// client.cc so that including this header costs nothing.
//
// Thread-safety: one thread uses a Connection at a time; cancel() may be called from any other
// thread and makes the blocking call in progress return errc::cancelled.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::http {

enum class errc {
  invalid_url = 1,
  connect_failed,  // nothing accepted the connection (refused, unreachable, name not found)
  timeout,
  cancelled,
  closed,        // the peer closed the connection
  bad_response,  // not HTTP, or over a size limit
};
const std::error_category& http_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), http_category()}; }

struct Url {
  std::string host;
  std::string port;
  // "http://host:port", as given (for messages).
  std::string text;
};
// "http://host:port" or "host:port". Only plain http.
Result<Url> parse_url(std::string_view text);

// What a server answered. (Not http::Response, which is what a Server sends.)
struct Reply {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

class Connection {
 public:
  static constexpr std::size_t kMaxBody = 64 << 20;

  // Connects within `timeout`.
  static Result<std::unique_ptr<Connection>> open(const Url& url, Duration timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  const Url& url() const;
  // An Authorization field value (such as "Bearer TOKEN") sent with every request from now on.
  void set_authorization(std::string value);

  // Sends a POST with a JSON body and reads the whole response (at most kMaxBody bytes), all
  // within `timeout`. After any error the connection is unusable.
  Result<Reply> post(std::string_view target, std::string_view body, Duration timeout);
  // The same for a GET without a body.
  Result<Reply> get(std::string_view target, Duration timeout);
  // Any method ("PUT", "DELETE", ...), with a JSON body when `body` is not empty.
  Result<Reply> request(std::string_view method, std::string_view target, std::string_view body,
                        Duration timeout);

  // Sends a POST and reads the response's status line and headers within `timeout`; the body
  // is then read with read_some().
  Result<unsigned> start_stream(std::string_view target, std::string_view body, Duration timeout);
  // The same with another method, and extra header fields ("Last-Event-ID: 7") — a GET for
  // Server-Sent Events.
  Result<unsigned> start_stream(std::string_view method, std::string_view target,
                                std::string_view body,
                                const std::vector<std::pair<std::string, std::string>>& fields,
                                Duration timeout);
  // Appends the next piece of the streamed body to `out`, waiting as long as it takes (until
  // cancel()), or fails with errc::timeout when `idle` (if not zero) passes without a byte: a
  // stream whose server sends heartbeats is dead when even those stop (a half-open
  // connection). Returns false once the body has ended.
  Result<bool> read_some(std::string& out, Duration idle = Duration::zero());

  // Makes the blocking call in progress (or the next one) fail with errc::cancelled.
  void cancel();
  // False after an error, a cancel, or a response that closed the connection.
  bool usable() const;

 private:
  Result<Reply> exchange(std::string_view method, std::string_view target, std::string_view body,
                         Duration timeout);
  struct Impl;
  explicit Connection(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::http

template <>
struct std::is_error_code_enum<keel::http::errc> : std::true_type {};

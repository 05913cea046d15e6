// The client side of the lean core (worker.h): connecting to an upstream, reading its response
// head and walking its body, on a worker's connection. The proxy's data path, its shadow copies
// and its health probes are built on these; so is anything else that talks HTTP/1.1 to a
// server from a worker. Includes Asio: for .cc files only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "keel/core/result.h"
#include "keel/http/h1.h"
#include "keel/http/worker.h"

namespace keel::http {

// Connects `conn` (a new upstream connection of its worker) to `at` within its deadline, with
// TCP_NODELAY and a non-blocking socket.
Task<error_code> connect(Conn& conn, const tcp::endpoint& at);

// Reads the response head into `head` (parsed in place in conn.in), passing over informational
// answers (100 Continue and the like). A malformed head or one over `max_head` bytes is
// `invalid_argument`; 101 (an upgrade) is `operation_not_supported`; a timeout is `timed_out`.
Task<error_code> read_response_head(Conn& conn, bool head_request, h1::Head& head,
                                    std::size_t max_head);

// Walks a response body as its bytes arrive: how many belong to it, and whether it ended.
// `on_data` gets the body's data (without chunk framing).
struct BodyWalker {
  h1::Framing framing = h1::Framing::kNone;
  std::uint64_t length = 0;  // kLength: bytes still to come
  h1::ChunkedReader chunks;

  struct Step {
    std::size_t take = 0;
    bool done = false;
    bool broken = false;  // the framing is malformed
  };
  template <typename OnData>
  Step next(std::string_view available, OnData&& on_data) {
    switch (framing) {
      case h1::Framing::kNone:
        return {0, true, false};
      case h1::Framing::kLength: {
        const auto take =
            static_cast<std::size_t>(std::min<std::uint64_t>(length, available.size()));
        length -= take;
        on_data(available.substr(0, take));
        return {take, length == 0, false};
      }
      case h1::Framing::kUntilClose:
        on_data(available);
        return {available.size(), false, false};
      case h1::Framing::kChunked: {
        const auto step = chunks.feed(available, on_data);
        return {step.used, step.done, step.error != nullptr};
      }
    }
    return {0, true, false};
  }
};

// Reads more of a response body into the connection's buffer: kMore, kClosed (the close that
// ends a body framed by it), or kFailed.
enum class More { kMore, kClosed, kFailed };
Task<More> read_more(Conn& conn, h1::Framing framing);

// Reads a response body to its end (within the connection's deadline), keeping its first
// `limit` data bytes in `body`. False when the connection failed or the framing was broken.
Task<bool> read_to_end(Conn& conn, h1::Framing framing, std::uint64_t length, std::string& body,
                       std::size_t limit);

// One request on a new connection of `worker`, all within `timeout`: sends `method target`
// with Host and `Connection: close`, reads the status and the body (up to 64 KiB, so the
// server is not cut off mid-write). The status, or why there is none.
Task<Result<unsigned>> fetch_status(Worker& worker, const tcp::endpoint& at,
                                    std::string_view method, std::string_view target,
                                    std::string_view host, std::string_view user_agent,
                                    Duration timeout);

}  // namespace keel::http

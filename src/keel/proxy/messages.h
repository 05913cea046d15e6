// Messages the proxy writes, as pure functions of what it read: the request head as it goes
// upstream, the response head as the client gets it, and the local reply for a request that
// got no answer. No I/O: the workers call them, and the tests call them directly.
#pragma once

#include <string>
#include <string_view>

#include "keel/http/h1.h"
#include "keel/proxy/config.h"

namespace keel::proxy {

// Why a request ended without a response from upstream (or with one): the access log's flag
// and the local reply's x-keel-reason.
enum class Flag {
  kNone,
  kNoRoute,          // NR  404
  kOverflow,         // UO  503 a cluster limit (Envoy's circuit-breaker thresholds)
  kBreakerOpen,      // BO  503
  kNoHealthy,        // UH  503
  kConnectFailure,   // UF  502
  kReset,            // UR  502 the upstream closed or reset before answering
  kTimeout,          // UT  504
  kDownstreamReset,  // DC  the client went away
  kBadRequest,       // BR  4xx: malformed, oversized
};

// The access log's two-letter code (Envoy's response flags): "UF", "UT", ... and "-".
const char* flag_code(Flag flag);

// The status and x-keel-reason of the local reply for a request that ended with `flag` and
// no answer from upstream: 502 for connect failures and resets, 504 for timeouts, 503 for
// limits, the breaker and no healthy endpoint, 400 for a malformed body.
struct LocalReply {
  unsigned status = 503;
  std::string_view reason;
};
LocalReply local_reply_for(Flag flag);

// What the proxy adds to a forwarded request.
struct Forwarding {
  const ForwardedHeaders* headers = nullptr;
  std::string_view peer;        // the client's address, for X-Forwarded-For
  std::string_view request_id;  // X-Request-Id, when there is one
};

// The request head as it goes upstream, into `out` (`forwarded_for` is scratch space): hop-by-
// hop fields, Expect (answered by the proxy) and Content-Length gone; an absolute-form
// target's authority as Host (RFC 9112 3.2.2); X-Forwarded-For lines joined with the client's
// address appended, X-Forwarded-Proto and X-Request-Id set as configured; the body's framing
// restated. Always HTTP/1.1 upstream.
void upstream_request_head(const http::h1::Head& request, const Forwarding& forwarding,
                           std::string& out, std::string& forwarded_for);

// The response head as the client gets it, into `out`: the client's HTTP version, hop-by-hop
// fields gone, the framing restated (`dechunk`: an HTTP/1.0 client gets a chunked body's data,
// ended by the close), Connection as `keep_alive` says, X-Request-Id set.
void client_response_head(const http::h1::Head& response, unsigned version, bool keep_alive,
                          bool dechunk, std::string_view request_id, std::string& out);

}  // namespace keel::proxy

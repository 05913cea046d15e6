// Hard limits on what a client of an HTTP server may send and how long it may take.
#pragma once

#include <cstdint>

#include "keel/core/clock.h"

namespace keel::http {

struct ServerLimits {
  std::uint32_t max_connections = 10000;            // per listener, across workers
  std::uint32_t max_header_bytes = 16 * 1024;       // request line + headers
  std::uint64_t max_body_bytes = 10 * 1024 * 1024;  // request body
  Duration header_timeout = 10s;  // from the request's first byte: the whole header
  Duration idle_timeout = 60s;    // a keep-alive connection with no request; a stalled write
};

}  // namespace keel::http

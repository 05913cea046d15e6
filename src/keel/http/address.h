// Where a listener listens or an upstream is: "host:port", as configs write it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "keel/core/result.h"

namespace keel::http {

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  std::string to_string() const { return host + ":" + std::to_string(port); }
};

// "127.0.0.1:8080", "localhost:80", "[::1]:443". `any_port`: port 0 (any free port, for a
// listener) is allowed. Fails with errc::config_invalid saying what is wrong.
Result<HostPort> parse_host_port(std::string_view text, bool any_port = false);

}  // namespace keel::http

#include "keel/http/address.h"

#include <charconv>

namespace keel::http {

Result<HostPort> parse_host_port(std::string_view text, bool any_port) {
  auto bad = [&](const std::string& why) {
    return Error(errc::config_invalid, "expected host:port such as 127.0.0.1:8080, got \"" +
                                           std::string(text) + "\" (" + why + ")");
  };
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return bad("no port");
  std::string_view host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.back() != ']') return bad("unclosed '['");
    host = host.substr(1, host.size() - 2);
  }
  unsigned port = 0;
  std::string_view digits = text.substr(colon + 1);
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc() || ptr != digits.data() + digits.size() || port > 65535 ||
      (port == 0 && !any_port)) {
    return bad(any_port ? "the port must be a number from 0 (any free port) to 65535"
                        : "the port must be a number from 1 to 65535");
  }
  return HostPort{std::string(host), static_cast<std::uint16_t>(port)};
}

}  // namespace keel::http

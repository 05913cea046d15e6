// Arbitrary bytes sent to a running `keel proxy` as one client connection: whatever they are
// (malformed request lines, bad chunking, conflicting lengths, pipelined requests), the proxy
// answers or closes, and keeps serving: after every input, a well-formed request must still get
// its 200. The upstream is the proxy's own admin listener (/healthz answers 200).
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "keel/proxy/server.h"
#include "keel/testing/scripted_server.h"

namespace {

keel::SteadyClock clock_;

std::string config_text(int upstream_port) {
  return "admin: {address: 127.0.0.1:0}\n"
         "access_log: false\n"
         "listeners:\n"
         "  - address: 127.0.0.1:0\n"
         "    limits: {max_header_bytes: 4096, max_body_bytes: 65536, header_timeout_ms: 200,\n"
         "             idle_timeout_ms: 200}\n"
         "    routes:\n"
         "      - {match: {prefix: /}, cluster: admin, timeout_ms: 1000}\n"
         "clusters:\n"
         "  - name: admin\n"
         "    endpoints: [{address: 127.0.0.1:" +
         std::to_string(upstream_port) + "}]\n";
}

keel::proxy::Server& server() {
  static std::unique_ptr<keel::proxy::Server> instance = [] {
    auto first = keel::proxy::parse_config(config_text(1), "fuzz.yaml");
    auto started = keel::proxy::Server::start(std::move(*first), clock_);
    if (!started) std::abort();
    // Point the cluster at the admin listener, now that its port is known.
    auto second = keel::proxy::parse_config(config_text((*started)->admin()->port), "fuzz.yaml");
    if (!second || !(*started)->reload(std::move(*second))) std::abort();
    return std::move(*started);
  }();
  return *instance;
}

// Sends `bytes`, half-closes, and reads until the proxy closes. The whole answer.
std::string exchange(std::uint16_t port, std::string_view bytes) {
  int fd = keel::testing::connect_to(port);
  if (fd < 0) std::abort();
  (void)keel::testing::send_all(fd, bytes);
  ::shutdown(fd, SHUT_WR);
  std::string answer;
  char buffer[4096];
  for (ssize_t n; (n = ::recv(fd, buffer, sizeof buffer, 0)) > 0;) {
    answer.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return answer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::uint16_t port = server().listening().front().port;
  (void)exchange(port, std::string_view(reinterpret_cast<const char*>(data), size));
  const std::string check = exchange(port, "GET /healthz HTTP/1.1\r\nHost: f\r\n\r\n");
  if (check.rfind("HTTP/1.1 200", 0) != 0) __builtin_trap();  // the proxy stopped serving
  return 0;
}

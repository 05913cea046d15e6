// `keel proxy`'s server: listeners → routes → clusters → endpoints, on the lean HTTP/1.1 core
// of http/ (worker.h: one io_context per worker thread, an SO_REUSEPORT socket per worker and
// listener, one deadline sweep per worker). Asio stays inside the .cc files; this header is
// plain.
//
// Per request, in order: route match (404 when none) → cluster limits (Envoy's thresholds,
// 503) → circuit breaker (503) → load-balancer pick among eligible endpoints (503) → an
// upstream connection from the worker's pool, or a new one (502 when it cannot be made) → the
// per-try timeout, or a hedge to another endpoint when the try is late (idempotent requests,
// first answer wins) → retries (retry_on conditions; idempotent methods unless the route allows
// more; another endpoint; with jittered backoff) → the route's overall timeout (504). A local
// reply carries `x-keel-reason` and the access log its flag.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/random.h"
#include "keel/core/result.h"
#include "keel/proxy/config.h"

namespace keel::proxy {

class Server {
 public:
  // Binds every listener (and the admin listener) and starts the workers. Port 0 binds a free
  // port; listening() tells which. Access log lines go to `access_log` when it is set and the
  // config asks for them. `seed` seeds the workers' generators (request ids, weighted cluster
  // picks, retry jitter): a test passes a fixed one.
  static Result<std::unique_ptr<Server>> start(ProxyConfig config, Clock& clock,
                                               std::ostream* access_log = nullptr,
                                               std::uint64_t seed = random_seed());
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Stops accepting, lets in-flight requests finish for up to `drain`, closes the rest, joins
  // every worker.
  void stop(Duration drain = 5s);

  // Takes a new config for every request that starts from now on; requests in flight finish
  // with the one they started with. Listeners and the admin address must stay as they are.
  // An error (the config is refused, the running one stays) says why.
  Status reload(ProxyConfig config);
  // What `POST /reload` on the admin listener runs (typically: read the file, then reload());
  // without one it answers 501.
  void on_admin_reload(std::function<Status()> reload);

  // The bound addresses, in the config's listener order.
  std::vector<HostPort> listening() const;
  std::optional<HostPort> admin() const;

  // What the admin listener serves, for tests and for the CLI.
  std::string metrics_text() const;
  std::string clusters_json() const;

 private:
  struct Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace keel::proxy

// Active health checks and outlier ejection ticks, per generation.
#include "keel/proxy/server_impl.h"

namespace keel::proxy {

void Server::Impl::start_loops(const std::shared_ptr<const Generation>& g) {
  for (std::size_t c = 0; c < g->clusters.size(); ++c) {
    for (std::size_t w = 0; w < workers.size(); ++w) {
      if (g->worker_clusters[w][c]->outlier) {
        net::co_spawn(workers[w]->io, outlier_loop(g, w, c), net::detached);
      }
    }
    if (g->worker_clusters[0][c]->health) {
      net::co_spawn(workers[0]->io, health_loop(g, c), net::detached);
    }
  }
}

Task<bool> Server::Impl::sleep_while_current(std::size_t w, const Generation* g, Duration delay) {
  net::steady_timer timer(workers[w]->io, delay);
  error_code ec;
  co_await timer.async_wait(net::redirect_error(use_task, ec));
  co_return !ec && !stopping.load() && current().get() == g;
}

Task<void> Server::Impl::outlier_loop(std::weak_ptr<const Generation> weak, std::size_t w,
                                      std::size_t c) {
  const Duration interval = weak.lock()->clusters[c]->config->outlier_detection->interval;
  const Generation* id = weak.lock().get();
  while (co_await sleep_while_current(w, id, interval)) {
    auto g = weak.lock();
    if (!g) co_return;
    WorkerCluster& cluster = *g->worker_clusters[w][c];
    for (std::size_t i : cluster.outlier->tick()) cluster.shared->endpoint_ejections[i]->inc();
    // Expired and lifted ejections too: a tick is when the detector revisits them.
    for (std::size_t i = 0; i < cluster.endpoints.size(); ++i) cluster.publish_ejection(i);
  }
}

Task<void> Server::Impl::health_loop(std::weak_ptr<const Generation> weak, std::size_t c) {
  const Generation* id = weak.lock().get();
  Duration wait = 0ms;
  while (co_await sleep_while_current(0, id, wait)) {
    auto g = weak.lock();
    if (!g) co_return;
    WorkerCluster& cluster = *g->worker_clusters[0][c];
    for (std::size_t i : cluster.health->due()) {
      net::co_spawn(workers[0]->io, probe(g, c, i), net::detached);
    }
    const TimePoint next = cluster.health->next_due();
    wait = next == TimePoint::max() ? Duration(100ms)
                                    : std::clamp<Duration>(next - clock.now(), 1ms, 60s);
  }
}

Task<void> Server::Impl::probe(std::shared_ptr<const Generation> g, std::size_t c, std::size_t i) {
  ClusterShared& shared = *g->clusters[c];
  const balance::HealthCheckConfig& check = *shared.config->health_check;
  const std::string& host = check.host.empty() ? shared.config->endpoints[i].address : check.host;
  auto status = co_await http::fetch_status(*workers[0], shared.addresses[i], check.method,
                                            check.path, host, "keel-health-check", check.timeout);
  const bool passed = status && check.passes(*status);
  if (current() != g) co_return;  // a reload came meanwhile
  auto change = g->worker_clusters[0][c]->health->record(i, passed);
  if (!change) co_return;
  shared.healthy[i] = change->healthy;
  shared.health_changes_total->inc();
  for (std::size_t w = 1; w < workers.size(); ++w) {
    net::post(workers[w]->io, [g, c, w, i, healthy = change->healthy] {
      g->worker_clusters[w][c]->endpoints.set_healthy(i, healthy);
    });
  }
}

}  // namespace keel::proxy

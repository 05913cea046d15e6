// Strangler Fig shadow copies: queued by the listener workers, sent by the mirror worker at the
// lowest priority, compared with the legacy answer.
#include "keel/proxy/server_impl.h"

namespace keel::proxy {

Task<void> Server::Impl::mirror_loop(Worker& mirrors) {
  net::steady_timer timer(mirrors.io);
  Duration interval = 1ms;
  while (!stopping.load(std::memory_order_relaxed)) {
    bool found = false;
    for (auto& lane : lanes) {
      while (auto mirror = lane->to_mirror.pop()) {
        found = true;
        net::co_spawn(mirrors.io, shadow(mirrors, *lane, **mirror), net::detached);
      }
    }
    interval = found ? Duration(1ms) : std::min<Duration>(interval * 2, 32ms);
    timer.expires_after(interval);
    error_code ec;
    co_await timer.async_wait(net::redirect_error(use_task, ec));
  }
}

Task<void> Server::Impl::shadow(Worker& worker, MirrorLane& lane, Mirror& mirror) {
  struct Done {
    MirrorLane& lane;
    Mirror& mirror;
    ~Done() {
      mirror.state->end_mirror();
      // Not kept until the worker reuses it: a reload's old generation would live on.
      mirror.state.reset();
      mirror.generation.reset();
      lane.returned.push(&mirror);
    }
  } done{lane, mirror};
  const Generation& g = *mirror.generation;
  const DiffConfig* diff = &mirror.config->diff;
  const Duration timeout = mirror.timeout;
  WorkerCluster& cluster = *g.worker_clusters[worker.index][mirror.modern_cluster];
  auto picked = cluster.balancer->pick({});
  if (!picked) {
    mirror.state->record_mirror_failure();
    co_return;
  }
  auto modern = co_await fetch(worker, cluster, *picked, mirror, diff->max_body_bytes, timeout);
  if (!modern) {
    mirror.state->record_mirror_failure();
    co_return;
  }
  auto fields = diff_answers(mirror.legacy, *modern, *diff);
  std::vector<std::string> noise;
  if (mirror.config->noise_baseline && !fields.empty()) {
    // Legacy once more: where its two answers differ is noise, not modern's fault.
    WorkerCluster& legacy = *g.worker_clusters[worker.index][mirror.legacy_cluster];
    const std::size_t first[] = {mirror.legacy_endpoint};
    if (auto again = legacy.balancer->pick({.avoid = first})) {
      auto second = co_await fetch(worker, legacy, *again, mirror, diff->max_body_bytes, timeout);
      if (second) {
        noise = diff_answers(mirror.legacy, *second, *diff);
        std::erase_if(fields, [&](const std::string& field) {
          return std::find(noise.begin(), noise.end(), field) != noise.end();
        });
      }
    }
  }
  DiffSample sample;
  if (!fields.empty()) {
    sample = {.request_line = mirror.request_line,
              .fields = fields,
              .legacy_status = mirror.legacy.status,
              .modern_status = modern->status,
              .legacy_body = mirror.legacy.body,
              .modern_body = modern->body};
  }
  mirror.state->record_diff(fields, std::move(sample), noise);
}

Task<std::optional<Answer>> Server::Impl::fetch(Worker& worker, WorkerCluster& cluster,
                                                std::size_t endpoint, const Mirror& mirror,
                                                std::size_t capture_limit, Duration timeout) {
  Flag failure = Flag::kNone;
  cluster.on_start(endpoint);
  const auto started = clock.now();
  BodyLeft held;  // the copy's body is held: nothing streams
  h1::Head response;
  auto upstream = co_await send(worker, cluster, endpoint, mirror.head, mirror.body, nullptr, held,
                                mirror.head_request, response, started + timeout, failure);
  std::optional<Answer> answer;
  if (upstream) {
    fill_answer(response, answer.emplace());
    const bool keeps = response.keep_alive;
    const h1::Framing framing = response.framing;
    upstream->conn.in.consume(response.size);
    if (co_await http::read_to_end(upstream->conn, framing, response.content_length, answer->body,
                                   capture_limit)) {
      if (keeps) park(worker, std::move(upstream));
    } else {
      answer.reset();
    }
  }
  cluster.on_complete(endpoint, answer && answer->status < 500, clock.now() - started);
  co_return answer;
}

}  // namespace keel::proxy

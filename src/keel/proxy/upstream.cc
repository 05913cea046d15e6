// Upstream connections (pooled per worker), sending a request and reading its answer, hedged races,
// the retry backoff, and what each try tells its endpoint.
#include "keel/proxy/server_impl.h"

namespace keel::proxy {

Task<std::unique_ptr<Upstream>> Server::Impl::acquire(Worker& worker, WorkerCluster& cluster,
                                                      std::size_t endpoint, TimePoint deadline,
                                                      Flag& failure, TryHandle* handle) {
  const Cluster& cluster_config = *cluster.shared->config;
  auto& idle = worker.pool(*cluster.shared, endpoint);
  auto take_idle = [&]() -> std::unique_ptr<Upstream> {
    while (!idle.empty()) {
      std::unique_ptr<Upstream> pooled = std::move(idle.back());
      idle.pop_back();
      if (pooled->conn.socket.is_open()) {
        pooled->conn.expires_never();  // the request sets its own deadlines
        return pooled;
      }
    }
    return nullptr;
  };
  if (auto pooled = take_idle()) co_return pooled;
  auto full = [&] {
    return cluster.shared->connections.load(std::memory_order_relaxed) >=
           cluster_config.limits.max_connections;
  };
  if (full()) {
    // At the connection limit: wait (up to max_pending requests, until the connect timeout or
    // the deadline) for a connection to come back to the pool or to close.
    auto waiting = try_hold(cluster.shared->pending, cluster_config.limits.max_pending);
    if (!waiting) {
      failure = Flag::kOverflow;
      co_return nullptr;
    }
    const auto give_up = std::min(deadline, worker.clock->now() + cluster_config.connect_timeout);
    net::steady_timer timer(worker.io);
    while (full() && worker.clock->now() < give_up && (handle == nullptr || !handle->cancelled)) {
      timer.expires_after(std::chrono::milliseconds(2));
      error_code ignored;
      co_await timer.async_wait(net::redirect_error(use_task, ignored));
      if (auto pooled = take_idle()) co_return pooled;
    }
    if (handle != nullptr && handle->cancelled) {
      failure = Flag::kReset;
      co_return nullptr;
    }
    if (full()) {
      failure = Flag::kOverflow;
      co_return nullptr;
    }
  }
  auto upstream = std::make_unique<Upstream>(worker, cluster.shared, endpoint);
  if (handle != nullptr) handle->conn = &upstream->conn;
  upstream->conn.deadline =
      std::min(deadline, worker.clock->now() + cluster_config.connect_timeout);
  if (co_await http::connect(upstream->conn, cluster.shared->addresses[endpoint])) {
    if (handle != nullptr) handle->conn = nullptr;  // goes with `upstream`, now
    if (handle == nullptr || !handle->cancelled) cluster.shared->connect_failures_total->inc();
    failure = Flag::kConnectFailure;
    co_return nullptr;
  }
  co_return upstream;
}

Task<std::unique_ptr<Upstream>> Server::Impl::send(Worker& worker, WorkerCluster& cluster,
                                                   std::size_t endpoint, const std::string& head,
                                                   const std::string& held_body, Conn* client,
                                                   BodyLeft& body, bool head_request,
                                                   h1::Head& response, TimePoint deadline,
                                                   Flag& failure, TryHandle* handle) {
  // Cancelled before it began (the race was decided before this coroutine first ran).
  if (handle != nullptr && handle->cancelled) {
    failure = Flag::kReset;
    co_return nullptr;
  }
  struct Forget {  // the connection is the caller's, or closed, once this returns
    TryHandle* handle;
    ~Forget() {
      if (handle != nullptr) handle->conn = nullptr;
    }
  } forget{handle};
  auto upstream = co_await acquire(worker, cluster, endpoint, deadline, failure, handle);
  if (!upstream) co_return nullptr;
  if (handle != nullptr) handle->conn = &upstream->conn;  // a pooled one, too
  Conn& conn = upstream->conn;
  conn.deadline = deadline;
  error_code ec;
  std::array<net::const_buffer, 2> buffers{net::buffer(head), net::buffer(held_body)};
  if (!send_now(conn, buffers, ec) && !ec) {
    co_await net::async_write(conn.socket, buffers, net::redirect_error(use_task, ec));
    ec = conn.failure(ec);
  }
  // A streamed body: client → upstream as it comes, its framing checked on the way.
  while (!ec && !body.done()) {
    if (client->in.size() == 0) {
      client->deadline = deadline;
      error_code read_ec;
      std::size_t n = co_await client->socket.async_read_some(
          client->in.space(kChunk), net::redirect_error(use_task, read_ec));
      if (read_ec) {
        failure = Flag::kDownstreamReset;  // the client closed or went quiet
        co_return nullptr;
      }
      client->in.commit(n);
    }
    const std::string_view available = client->in.view();
    std::size_t take = 0;
    if (body.framing == h1::Framing::kLength) {
      take = static_cast<std::size_t>(std::min<std::uint64_t>(body.remaining, available.size()));
      body.remaining -= take;
      if (body.remaining == 0) body.framing = h1::Framing::kNone;
    } else {
      auto step = body.chunks.feed(available, [](std::string_view) {});
      if (step.error != nullptr || body.chunks.data_bytes() > body.limit) {
        failure = Flag::kBadRequest;  // a malformed chunk or over max_body_bytes
        co_return nullptr;
      }
      take = step.used;
      if (step.done) body.framing = h1::Framing::kNone;
    }
    std::array<net::const_buffer, 1> chunk{net::buffer(available.data(), take)};
    if (!send_now(conn, chunk, ec) && !ec) {
      co_await net::async_write(conn.socket, chunk, net::redirect_error(use_task, ec));
      ec = conn.failure(ec);
    }
    client->in.consume(take);
    if (body.done()) client->expires_never();
  }
  // The response head; informational answers (100 Continue and the like) are passed over,
  // and an upgrade (101) is refused: no protocol upgrades through the proxy.
  if (!ec) ec = co_await http::read_response_head(conn, head_request, response, kMaxResponseHead);
  if (ec) {
    // Includes a pooled connection the upstream closed meanwhile: a reset, which
    // retry_on reset covers.
    failure = ec == net::error::timed_out ? Flag::kTimeout : Flag::kReset;
    co_return nullptr;
  }
  co_return upstream;
}

void Server::Impl::record_try(WorkerCluster& cluster, std::size_t endpoint, Flag failure,
                              unsigned status, Duration latency,
                              std::optional<resilience::BreakerPermit>& permit) {
  const bool server_error = status >= 500;
  const bool gateway_error = status == 502 || status == 503 || status == 504;
  const bool failed = failure != Flag::kNone || server_error;
  cluster.on_complete(endpoint, !failed, latency);
  cluster.shared->endpoint_latency[endpoint]->observe(
      std::chrono::duration<double>(latency).count());
  if (failed) cluster.shared->endpoint_failures[endpoint]->inc();
  if (cluster.outlier && failure != Flag::kOverflow && failure != Flag::kDownstreamReset &&
      failure != Flag::kBadRequest) {
    const auto kind = (failure != Flag::kNone || gateway_error)
                          ? balance::ResponseClass::kGatewayError
                      : server_error ? balance::ResponseClass::kServerError
                                     : balance::ResponseClass::kSuccess;
    if (cluster.outlier->record(endpoint, kind)) {
      cluster.shared->endpoint_ejections[endpoint]->inc();
      cluster.publish_ejection(endpoint);
    }
  }
  if (permit) {
    cluster.shared->breaker->record(
        std::move(*permit), failed ? resilience::Outcome::kFailure : resilience::Outcome::kSuccess,
        latency);
    permit.reset();
  }
  if (failure == Flag::kNone) cluster.latencies.add(latency);
}

Task<std::unique_ptr<Upstream>> Server::Impl::race(
    Worker& worker, WorkerCluster& cluster, const HedgePolicy& hedge, const RetryPolicy& retry,
    std::array<Try, kMaxTries>& tries, std::size_t first,
    std::optional<resilience::BreakerPermit> permit, const std::string& head,
    const std::string& held_body, bool head_request, TimePoint deadline,
    std::vector<std::size_t>& avoid, Exchange& exchange, std::uint32_t& hedges_sent,
    std::optional<Held>& retry_slot, h1::Head& response, Flag& failure, std::size_t& answered_by) {
  const Cluster& config = *cluster.shared->config;
  ClusterShared& shared = *cluster.shared;
  // Woken by every try that ends, and at the next hedge's time.
  net::steady_timer wake(worker.io);
  BodyLeft no_body;  // a hedged request's body is held: nothing streams from the client
  std::size_t started = 0;
  std::size_t running = 0;
  auto start_try = [&](std::size_t endpoint, std::optional<resilience::BreakerPermit> admitted) {
    Try& t = tries[started++];
    t.endpoint = endpoint;
    t.permit = std::move(admitted);
    t.failure = Flag::kNone;
    t.upstream.reset();
    t.handle = {};
    t.done = t.settled = false;
    t.start = clock.now();
    shared.endpoint_requests[endpoint]->inc();
    cluster.on_start(endpoint);
    ++running;
    net::co_spawn(worker.io,
                  run_try(worker, cluster, t, head, held_body, head_request,
                          std::min(deadline, t.start + config.per_try_timeout), no_body, wake),
                  net::detached);
  };
  // A hedge: to an endpoint no try of this request went to, with the retry limit's slot, a
  // retry from the budget and the breaker's permit. False when one of them is not to be had.
  auto start_hedge = [&] {
    // The limit and the budget first: a pick that is not used would still move the
    // balancer on (round robin's next turn), skewing what other requests get.
    if (!retry_slot) {
      retry_slot = try_hold(shared.retries, config.limits.max_retries);
      if (!retry_slot) return false;
    }
    if (shared.retry_budget->balance() < 1.0) return false;
    const std::size_t settled = avoid.size();
    for (std::size_t i = 0; i < started; ++i) {
      if (!tries[i].settled) avoid.push_back(tries[i].endpoint);
    }
    auto picked = cluster.balancer->pick({.hash = std::nullopt, .avoid = avoid});
    const bool elsewhere = picked && std::find(avoid.begin(), avoid.end(), *picked) == avoid.end();
    avoid.resize(settled);
    if (!elsewhere) return false;
    std::optional<resilience::BreakerPermit> admitted;
    if (shared.breaker) {
      auto admission = shared.breaker->acquire();
      if (!admission) return false;
      admitted.emplace(std::move(admission).permit());
    }
    if (!shared.retry_budget->try_withdraw()) {  // another worker took the last of it
      if (admitted) {
        shared.breaker->record(std::move(*admitted), resilience::Outcome::kIgnored, {});
      }
      return false;
    }
    ++hedges_sent;
    ++exchange.attempts;
    shared.hedges_total->inc();
    start_try(*picked, std::move(admitted));
    return true;
  };

  start_try(first, std::move(permit));
  const Duration delay =
      hedge.after ? *hedge.after
                  : hedge.delay_for(cluster.latencies.percentile(hedge.after_percentile));
  auto next_hedge = clock.now() + delay;
  std::optional<std::size_t> winner;
  std::size_t last = 0;
  while (running > 0) {
    for (std::size_t i = 0; i < started && !winner; ++i) {
      Try& t = tries[i];
      if (!t.done || t.settled) continue;
      t.settled = true;
      --running;
      const unsigned status = t.upstream ? t.response.status : 0;
      record_try(cluster, t.endpoint, t.failure, status, clock.now() - t.start, t.permit);
      avoid.push_back(t.endpoint);
      if (t.upstream && !retry.retries(TryEnd::kResponse, status)) {
        winner = i;
      } else {
        last = i;
        if (running > 0) t.upstream.reset();  // others are still out: this one is dropped
      }
    }
    if (winner || running == 0) break;
    const auto now = clock.now();
    if (now >= next_hedge) {
      const bool sent =
          hedges_sent < hedge.max_extra && started < kMaxTries && now < deadline && start_hedge();
      // Not sent: not later either (what stopped it will not have changed within a round).
      next_hedge = sent ? now + delay : TimePoint::max();
    }
    arm(wake, clock, next_hedge);
    error_code ignored;
    co_await wake.async_wait(net::redirect_error(use_task, ignored));
  }

  // The rest are cancelled, and waited for: they use this frame and the request's buffers.
  for (std::size_t i = 0; i < started; ++i) {
    Try& t = tries[i];
    if (t.settled) continue;
    t.handle.cancelled = true;
    if (t.handle.conn != nullptr) {
      error_code ignored;
      t.handle.conn->socket.close(ignored);
    }
  }
  auto all_done = [&] {
    for (std::size_t i = 0; i < started; ++i) {
      if (!tries[i].done) return false;
    }
    return true;
  };
  while (!all_done()) {
    wake.expires_at(TimePoint::max());
    error_code ignored;
    co_await wake.async_wait(net::redirect_error(use_task, ignored));
  }
  for (std::size_t i = 0; i < started; ++i) {
    Try& t = tries[i];
    if (t.settled) continue;
    t.settled = true;
    t.upstream.reset();  // closed, not pooled: its answer may be half read, or on its way
    cluster.on_cancel(t.endpoint);
    if (t.permit) {
      shared.breaker->record(std::move(*t.permit), resilience::Outcome::kIgnored, {});
      t.permit.reset();
    }
  }
  Try& chosen = tries[winner ? *winner : last];
  if (winner && *winner > 0) shared.hedge_wins_total->inc();
  answered_by = chosen.endpoint;
  failure = chosen.failure;
  std::swap(response, chosen.response);
  co_return std::move(chosen.upstream);
}

Task<void> Server::Impl::run_try(Worker& worker, WorkerCluster& cluster, Try& t,
                                 const std::string& head, const std::string& held_body,
                                 bool head_request, TimePoint deadline, BodyLeft& no_body,
                                 net::steady_timer& wake) {
  t.upstream = co_await send(worker, cluster, t.endpoint, head, held_body, nullptr, no_body,
                             head_request, t.response, deadline, t.failure, &t.handle);
  t.done = true;
  wake.cancel();
}

Task<bool> Server::Impl::relay_response(Conn& client, Upstream& upstream, const std::string& head,
                                        h1::Framing framing, std::uint64_t length, bool dechunk,
                                        std::string& decoded, const Limits& limits,
                                        TimePoint deadline, std::string* capture,
                                        std::size_t capture_limit) {
  Conn& conn = upstream.conn;
  http::BodyWalker body{.framing = framing, .length = length};
  std::string_view pending_head = head;  // goes out with the first body bytes
  auto keep = [&](std::string_view data) {
    if (capture != nullptr && capture->size() < capture_limit) {
      capture->append(data.substr(0, capture_limit - capture->size()));
    }
  };
  for (;;) {
    const std::string_view available = conn.in.view();
    decoded.clear();
    const auto step = body.next(available, [&](std::string_view data) {
      keep(data);
      if (dechunk) decoded.append(data);
    });
    if (step.broken) co_return false;  // the upstream broke its framing
    const std::size_t take = step.take;
    const bool done = step.done;
    const std::string_view out = dechunk ? std::string_view(decoded) : available.substr(0, take);
    if (!pending_head.empty() || !out.empty()) {
      std::array<net::const_buffer, 2> buffers{net::buffer(pending_head), net::buffer(out)};
      error_code ec;
      client.expires_after(limits.idle_timeout);
      if (!send_now(client, buffers, ec) && !ec) {
        co_await net::async_write(client.socket, buffers, net::redirect_error(use_task, ec));
      }
      if (ec) co_return false;
      pending_head = {};
    }
    conn.in.consume(take);
    if (done) co_return true;
    conn.deadline = std::max(deadline, clock.now() + 1ms);
    const http::More more = co_await http::read_more(conn, framing);
    if (more != http::More::kMore) co_return more == http::More::kClosed;
  }
}

void Server::Impl::park(Worker& worker, std::unique_ptr<Upstream> upstream) {
  // Bytes after the response are not an answer to anything: such a connection is not reused.
  if (upstream->conn.in.size() > 0 || !upstream->conn.socket.is_open()) return;
  auto& idle = worker.pool(*upstream->cluster, upstream->endpoint);
  // Connections the sweep closed for idling too long (or the upstream closed) make room.
  std::erase_if(idle, [](const auto& pooled) { return !pooled->conn.socket.is_open(); });
  if (idle.size() < upstream->cluster->config->max_idle_connections) {
    upstream->conn.expires_after(upstream->cluster->config->idle_timeout);
    idle.push_back(std::move(upstream));
  }
}

Task<void> Server::Impl::backoff(Worker& worker, const RetryPolicy& retry, std::uint32_t attempt,
                                 TimePoint deadline) {
  // Full jitter on base × 2^(attempt-1), capped, and never past the deadline.
  double cap = std::min<double>(static_cast<double>(retry.max_interval.count()),
                                static_cast<double>(retry.base_interval.count()) *
                                    static_cast<double>(1u << std::min(attempt - 1, 16u)));
  const auto wait = Duration(static_cast<std::int64_t>(cap * worker.random.uniform01()));
  net::steady_timer timer(worker.io);
  arm(timer, clock, std::min(deadline, clock.now() + wait));
  error_code ec;
  co_await timer.async_wait(net::redirect_error(use_task, ec));
}

}  // namespace keel::proxy

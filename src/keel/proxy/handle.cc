// One request, from its parsed head to the end of its response: routing, limits, breaker, pick,
// tries and retries, local replies, the access log line.
#include "keel/proxy/server_impl.h"

namespace keel::proxy {

Task<bool> Server::Impl::handle(Worker& worker, ListenerShared& listener,
                                const std::shared_ptr<const Generation>& generation_held,
                                Conn& client, Scratch& scratch, const std::string& peer) {
  const h1::Head& request = scratch.head;
  const Generation& generation_now = *generation_held;
  const Limits& limits = generation_now.config.listeners[listener.index].limits;
  const ForwardedHeaders& forwarded =
      generation_now.config.listeners[listener.index].forwarded_headers;
  Exchange& exchange = scratch.exchange;
  exchange.reset(clock.now());
  exchange.worker = worker.index;
  if (access_log != nullptr) {
    exchange.method = request.method;
    exchange.path = request.target;
  }
  const unsigned version = request.version;
  bool keep_alive = request.keep_alive;
  if (auto id = request.find("x-request-id"); !id.empty() && id.size() <= 200) {
    exchange.request_id = id;
  } else if (forwarded.generate_request_id) {
    Uuid::random_v4(worker.random).append_to(exchange.request_id);  // cleared by reset()
  }
  const bool has_body = request.framing != h1::Framing::kNone;
  if (request.target.size() > kMaxTarget) {
    exchange.flag = Flag::kBadRequest;
    co_await local_reply(client, exchange, version, false, 414,
                         "bad_request: request target longer than " + std::to_string(kMaxTarget));
    co_return false;
  }
  // Methods outside the registered ones are refused, and CONNECT: no tunnels.
  if (!http::known_method(request.method)) {
    exchange.flag = Flag::kBadRequest;
    co_await local_reply(client, exchange, version, false, 501,
                         "bad_request: method not supported");
    co_return false;
  }

  const Route* route = match_route(generation_now.config.listeners[listener.index], request);
  if (route == nullptr) {
    exchange.flag = Flag::kNoRoute;
    // The body (if any) is not read: close after the reply unless there is none.
    client.in.consume(request.size);
    co_await local_reply(client, exchange, version, keep_alive && !has_body, 404, "no_route");
    co_return keep_alive && !has_body;
  }
  exchange.route = &generation_now.route_metrics.find(route)->second;
  // A migrating route's stage decides between legacy and modern.
  std::shared_ptr<MigrationState> migration;
  Stage routed_at = Stage::kLegacy;
  bool to_modern = false;
  std::size_t chosen_cluster = 0;
  if (route->migration) {
    migration = generation_now.migrations.at(route);
    routed_at = migration->stage();
    switch (routed_at) {
      case Stage::kLegacy:
      case Stage::kShadow:
        to_modern = false;
        break;
      case Stage::kCanary:
        to_modern =
            canary_picks_modern(sticky_key(*route->migration, request, peer), migration->percent());
        break;
      case Stage::kModern:
      case Stage::kRetired:
        to_modern = true;
        break;
    }
    chosen_cluster = cluster_index(generation_now.config,
                                   to_modern ? route->migration->modern : route->migration->legacy);
  } else {
    chosen_cluster = pick_cluster(worker, generation_now.config, *route);
  }
  WorkerCluster& cluster = *generation_now.worker_clusters[worker.index][chosen_cluster];
  const Cluster& cluster_config = *cluster.shared->config;
  exchange.cluster = cluster_config.name;
  cluster.shared->requests_total->inc();

  std::string& out = scratch.upstream_head;
  upstream_request_head(request, {&forwarded, peer, exchange.request_id}, out,
                        scratch.forwarded_for);
  const std::string_view method = request.method;  // valid until the head is consumed
  const bool head_request = method == "HEAD";
  const bool method_idempotent = idempotent(method);
  const bool expect_continue = request.expect_continue;
  const bool may_mirror = migration && routed_at == Stage::kShadow &&
                          (method_idempotent || route->migration->mirror_non_idempotent);
  std::string& request_line = scratch.request_line;
  if (may_mirror) request_line.assign(method).append(" ").append(request.target);

  // Done with the head: from here on its bytes may be overwritten.
  BodyLeft body{.framing = request.framing,
                .remaining = request.content_length,
                .limit = limits.max_body_bytes};
  client.in.consume(request.size);
  // No deadline on the client while its request is with the upstream (the route's timeouts
  // rule then); reading its body and writing the answer set their own.
  client.expires_never();

  // Expect: 100-continue is answered here, once the request is admitted by routing (an
  // HTTP/1.0 client cannot have asked for it: RFC 9110 10.1.1).
  if (expect_continue && has_body && version == 11 && client.in.size() == 0) {
    static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
    std::array<net::const_buffer, 1> buffers{net::buffer(kContinue)};
    error_code ec;
    client.expires_after(limits.idle_timeout);
    if (!send_now(client, buffers, ec) && !ec) {
      co_await net::async_write(client.socket, buffers, net::redirect_error(use_task, ec));
    }
    if (ec) co_return false;
  }

  // A body known to be short is held, so that the request can be retried; anything else
  // streams through once.
  std::string& held_body = scratch.held_body;
  held_body.clear();
  bool replayable = true;
  if (body.framing == h1::Framing::kLength && body.remaining <= limits.retry_buffer_bytes) {
    client.expires_after(limits.idle_timeout);
    error_code ec;
    while (body.remaining > 0) {
      if (client.in.size() == 0) {
        std::size_t n = co_await client.socket.async_read_some(client.in.space(kChunk),
                                                               net::redirect_error(use_task, ec));
        if (ec) break;
        client.in.commit(n);
      }
      const std::size_t take =
          static_cast<std::size_t>(std::min<std::uint64_t>(body.remaining, client.in.size()));
      held_body.append(client.in.view().substr(0, take));
      client.in.consume(take);
      body.remaining -= take;
    }
    if (ec) {
      exchange.flag = Flag::kBadRequest;
      co_await local_reply(
          client, exchange, version, false, 400,
          "bad_request: reading the request body: " + client.failure(ec).message());
      co_return false;
    }
    body.framing = h1::Framing::kNone;
    client.expires_never();
  } else if (has_body) {
    replayable = false;
  }

  const RetryPolicy& retry = route->retry ? *route->retry : cluster_config.retry;
  const bool may_retry = replayable && (method_idempotent || retry.allow_non_idempotent);
  // Hedged only when idempotent, even where the route lets other methods be retried: a hedge
  // goes out while the first try may still be under way, so both could take effect.
  const HedgePolicy* hedge = route->hedge           ? &*route->hedge
                             : cluster_config.hedge ? &*cluster_config.hedge
                                                    : nullptr;
  if (!replayable || !method_idempotent) hedge = nullptr;

  // Shadow: a copy of the request goes to modern once legacy has answered, and the two
  // answers are compared. The copy is kept now, before the request goes upstream.
  MirrorLane& lane = *lanes[worker.index];
  Mirror* mirror = nullptr;
  if (may_mirror && replayable && held_body.size() <= route->migration->diff.max_body_bytes) {
    mirror = lane.take();
    if (mirror == nullptr) {
      migration->count_mirror_dropped();  // this worker's lane is full
    } else if (!migration->begin_mirror()) {
      lane.free.push_back(std::exchange(mirror, nullptr));
    } else {
      mirror->state = migration;
      mirror->head.assign(out, 0, out.size() - 2).append("x-keel-shadow: 1\r\n\r\n");
      mirror->body.assign(held_body);
      mirror->request_line.assign(request_line);
      mirror->head_request = head_request;
    }
  }
  // Gives the copy back unsent (legacy did not answer, or the client went away).
  auto drop_mirror = [&] {
    if (mirror == nullptr) return;
    mirror->state->end_mirror();
    mirror->state.reset();
    lane.free.push_back(std::exchange(mirror, nullptr));
  };
  const auto deadline = clock.now() + route->timeout;
  std::vector<std::size_t> avoid;
  std::size_t answered_by = 0;  // the endpoint of the last attempt
  std::unique_ptr<Upstream> upstream;
  h1::Head& response = scratch.response;

  auto request_slot = try_hold(cluster.shared->requests, cluster_config.limits.max_requests);
  if (!request_slot) {
    cluster.shared->overflow_total->inc();
    exchange.flag = Flag::kOverflow;
  }
  // Adaptive concurrency: one sample per request, its latency to the final answer's head.
  std::optional<resilience::LimiterPermit> concurrency_permit;
  if (request_slot && cluster.shared->concurrency) {
    auto admission = cluster.shared->concurrency->acquire();
    if (admission) {
      concurrency_permit.emplace(std::move(admission).permit());
    } else {
      request_slot.reset();
      cluster.shared->overflow_total->inc();
      exchange.flag = Flag::kOverflow;
    }
  }
  std::optional<Held> retry_slot;
  if (request_slot) cluster.shared->retry_budget->deposit();
  std::uint32_t rounds = 0;       // the first try and each retry: what num_retries counts
  std::uint32_t hedges_sent = 0;  // over the whole request, up to the policy's max_extra
  while (request_slot) {
    ++rounds;
    ++exchange.attempts;
    std::optional<resilience::BreakerPermit> permit;
    if (cluster.shared->breaker) {
      auto admission = cluster.shared->breaker->acquire();
      if (!admission) {
        cluster.shared->breaker_rejections_total->inc();
        exchange.flag = Flag::kBreakerOpen;
        break;
      }
      permit.emplace(std::move(admission).permit());
    }
    auto picked = cluster.balancer->pick({.hash = std::nullopt, .avoid = avoid});
    if (!picked) {
      if (permit)
        cluster.shared->breaker->record(std::move(*permit), resilience::Outcome::kIgnored, {});
      exchange.flag = Flag::kNoHealthy;
      break;
    }
    const std::size_t endpoint = *picked;
    Flag failure = Flag::kNone;
    if (hedge != nullptr && hedges_sent < hedge->max_extra) {
      upstream = co_await race(worker, cluster, *hedge, retry, scratch.tries, endpoint,
                               std::move(permit), out, held_body, head_request, deadline, avoid,
                               exchange, hedges_sent, retry_slot, response, failure, answered_by);
    } else {
      cluster.shared->endpoint_requests[endpoint]->inc();
      cluster.on_start(endpoint);
      const auto try_start = clock.now();
      const auto try_deadline = std::min(deadline, try_start + cluster_config.per_try_timeout);
      upstream = co_await send(worker, cluster, endpoint, out, held_body, &client, body,
                               head_request, response, try_deadline, failure);
      answered_by = endpoint;
      record_try(cluster, endpoint, failure, upstream ? response.status : 0,
                 clock.now() - try_start, permit);
    }
    exchange.upstream = cluster_config.endpoints[answered_by].address;
    const unsigned status = upstream ? response.status : 0;
    const TryEnd end = failure == Flag::kConnectFailure ? TryEnd::kConnectFailure
                       : failure == Flag::kReset        ? TryEnd::kReset
                       : failure == Flag::kTimeout      ? TryEnd::kTimeout
                                                        : TryEnd::kResponse;
    const bool retriable =
        (failure == Flag::kNone || end != TryEnd::kResponse) && retry.retries(end, status);
    const bool time_left = clock.now() < deadline;
    if (!retriable || !may_retry || rounds > retry.num_retries || !time_left) {
      exchange.flag = failure;
      break;
    }
    if (!retry_slot) {
      retry_slot = try_hold(cluster.shared->retries, cluster_config.limits.max_retries);
      if (!retry_slot) {  // the retry limit is full: give this answer
        exchange.flag = failure;
        cluster.shared->overflow_total->inc();
        break;
      }
    }
    if (!cluster.shared->retry_budget->try_withdraw()) {  // counted by the budget's metrics
      exchange.flag = failure;
      break;
    }
    cluster.shared->retries_total->inc();
    upstream.reset();  // its response (if any) is dropped with the connection
    avoid.push_back(answered_by);
    co_await backoff(worker, retry, rounds, deadline);
  }

  if (concurrency_permit) {
    const auto outcome = exchange.flag == Flag::kDownstreamReset ? resilience::Outcome::kIgnored
                         : upstream && response.status < 500     ? resilience::Outcome::kSuccess
                                                                 : resilience::Outcome::kFailure;
    cluster.shared->concurrency->record(std::move(*concurrency_permit), outcome,
                                        clock.now() - exchange.start);
  }

  // A route at modern with fallback_to_legacy: when modern failed, legacy answers instead.
  WorkerCluster* answering = &cluster;
  if (route->migration && route->migration->fallback_to_legacy && routed_at == Stage::kModern &&
      may_retry && exchange.flag != Flag::kDownstreamReset && exchange.flag != Flag::kBadRequest &&
      (!upstream || response.status >= 500) && clock.now() < deadline) {
    WorkerCluster& legacy = *generation_now.worker_clusters[worker.index][cluster_index(
        generation_now.config, route->migration->legacy)];
    if (auto picked = legacy.balancer->pick({})) {
      // Modern's failure still counts for its guard rails.
      migration->count_answer(true, upstream ? response.status : 502, clock.now() - exchange.start,
                              routed_at);
      upstream.reset();  // modern's answer, if any, goes with its connection
      ++exchange.attempts;
      Flag failure = Flag::kNone;
      const auto try_start = clock.now();
      legacy.shared->requests_total->inc();
      legacy.on_start(*picked);
      upstream = co_await send(worker, legacy, *picked, out, held_body, &client, body, head_request,
                               response, deadline, failure);
      const unsigned status = upstream ? response.status : 0;
      legacy.on_complete(*picked, failure == Flag::kNone && status < 500, clock.now() - try_start);
      answering = &legacy;
      answered_by = *picked;
      to_modern = false;  // legacy traffic at modern: it keeps the route from being retired
      exchange.cluster = legacy.shared->config->name;
      exchange.upstream = legacy.shared->config->endpoints[*picked].address;
      exchange.flag = failure;
    }
  }

  if (!upstream) {
    if (exchange.flag == Flag::kDownstreamReset) {
      finish(exchange, *answering, 0);
      drop_mirror();
      co_return false;
    }
    const LocalReply reply = local_reply_for(exchange.flag);
    const unsigned status = reply.status;
    // The request's body may be half read: only a fully read request keeps the connection.
    const bool reusable = keep_alive && body.done();
    co_await local_reply(client, exchange, version, reusable, status, std::string(reply.reason),
                         answering);
    drop_mirror();  // no answer from legacy to compare with
    if (migration) {
      migration->count_answer(to_modern, status, clock.now() - exchange.start, routed_at);
    }
    co_return reusable;
  }

  // A chunked body goes to an HTTP/1.1 client as it is; an HTTP/1.0 client gets its data,
  // ended by closing.
  keep_alive = keep_alive && body.done() && !stopping.load(std::memory_order_relaxed);
  const bool dechunk = response.framing == h1::Framing::kChunked && version == 10;
  if (response.framing == h1::Framing::kUntilClose || dechunk) keep_alive = false;
  std::string& head_out = scratch.client_head;
  client_response_head(response, version, keep_alive, dechunk, exchange.request_id, head_out);
  exchange.status = response.status;
  if (mirror) {
    mirror->legacy_endpoint = answered_by;
    fill_answer(response, mirror->legacy);
    mirror->legacy.body.clear();
  }
  const bool upstream_keeps = response.keep_alive;
  const h1::Framing framing = response.framing;
  const std::uint64_t length = response.content_length;
  upstream->conn.in.consume(response.size);  // the response head's views end here
  const bool relayed = co_await relay_response(
      client, *upstream, head_out, framing, length, dechunk, scratch.decoded, limits, deadline,
      mirror ? &mirror->legacy.body : nullptr,
      route->migration ? route->migration->diff.max_body_bytes : 0);
  finish(exchange, *answering, exchange.status);
  if (migration) {
    migration->count_answer(to_modern, exchange.status, clock.now() - exchange.start, routed_at);
  }
  if (mirror != nullptr && relayed) {
    mirror->generation = generation_held;
    mirror->modern_cluster = cluster_index(generation_now.config, route->migration->modern);
    mirror->legacy_cluster = cluster_index(generation_now.config, route->migration->legacy);
    mirror->config = &*route->migration;
    mirror->timeout = route->timeout;
    lane.to_mirror.push(mirror);  // never full: a lane has as many slots as Mirrors
  } else {
    drop_mirror();
  }
  if (relayed && upstream_keeps) park(worker, std::move(upstream));
  co_return relayed&& keep_alive;
}

std::size_t Server::Impl::pick_cluster(Worker& worker, const ProxyConfig& config,
                                       const Route& route) {
  if (route.clusters.size() == 1) return cluster_index(config, route.clusters.front().cluster);
  return pick_weighted_cluster(config, route, worker.random.uniform(total_weight(route)));
}

Task<void> Server::Impl::local_reply(Conn& client, Exchange& exchange, unsigned version,
                                     bool keep_alive, unsigned status, std::string reason,
                                     WorkerCluster* cluster) {
  const std::string body = reason + "\n";
  std::string head = version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  head.append(std::to_string(status)).append(" ");
  head.append(http::reason_phrase(status));
  head.append("\r\ncontent-type: text/plain\r\nx-keel-reason: ");
  head.append(reason.substr(0, reason.find(':')));
  if (!exchange.request_id.empty()) head.append("\r\nx-request-id: ").append(exchange.request_id);
  head.append("\r\ncontent-length: ").append(std::to_string(body.size()));
  head.append(keep_alive ? (version == 10 ? "\r\nconnection: keep-alive" : "")
                         : "\r\nconnection: close");
  head.append("\r\n\r\n").append(body);
  std::array<net::const_buffer, 1> buffers{net::buffer(head)};
  error_code ec;
  client.expires_after(5s);
  if (!send_now(client, buffers, ec) && !ec) {
    co_await net::async_write(client.socket, buffers, net::redirect_error(use_task, ec));
  }
  exchange.status = status;
  if (cluster != nullptr) {
    finish(exchange, *cluster, exchange.status);
  } else {
    log(exchange);
  }
}

void Server::Impl::finish(Exchange& exchange, WorkerCluster& cluster, unsigned status) {
  const double seconds = std::chrono::duration<double>(clock.now() - exchange.start).count();
  cluster.shared->latency->observe(seconds);
  if (status >= 100 && status < 600) cluster.shared->responses[status / 100]->inc();
  if (const RouteMetrics* route = exchange.route) {
    route->requests->inc();
    route->latency->observe(seconds);
    if (status >= 100 && status < 600) route->responses[status / 100]->inc();
  }
  log(exchange);
}

void Server::Impl::log(const Exchange& exchange) {
  if (access_log_writer == nullptr) return;
  thread_local std::string line;
  line.clear();
  auto number = [&](auto value) {
    char digits[32];
    auto [end, ec] = std::to_chars(digits, digits + sizeof digits, value);
    line.append(digits, ec == std::errc() ? end : digits);
  };
  auto text = [&](const char* key, std::string_view value) {
    line.append(",\"").append(key).append("\":\"");
    append_json_escaped(line, value);  // any bytes a client sent stay JSON
    line.push_back('"');
  };
  line.append("{\"time_ms\":");
  number(clock.unix_now_ns() / 1'000'000);
  text("request_id", exchange.request_id);
  text("method", exchange.method);
  text("path", exchange.path);
  line.append(",\"status\":");
  number(exchange.status);
  line.append(",\"duration_ms\":");
  const double milliseconds =
      std::chrono::duration<double, std::milli>(clock.now() - exchange.start).count();
  number(std::round(milliseconds * 1000) / 1000);
  text("cluster", exchange.cluster);
  text("upstream", exchange.upstream);
  line.append(",\"attempts\":");
  number(exchange.attempts);
  text("flags", flag_code(exchange.flag));
  line.push_back('}');
  access_log_writer->append(exchange.worker, line);
}

}  // namespace keel::proxy

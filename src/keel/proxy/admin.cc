// The admin listener (on http::Server): health, readiness, metrics, clusters, config, migration
// stages, reload, and the console (console.cc).
#include <nlohmann/json.hpp>

#include "keel/proxy/server_impl.h"

namespace keel::proxy {

bool Server::Impl::admin_token_matches(std::string_view authorization) const {
  const std::string& token = current()->config.admin_token;
  if (token.empty()) return true;
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() != kBearer.size() + token.size() ||
      !h1::iequals(authorization.substr(0, kBearer.size()), kBearer)) {
    return false;
  }
  unsigned char difference = 0;
  for (std::size_t i = 0; i < token.size(); ++i)
    difference |= static_cast<unsigned char>(authorization[kBearer.size() + i] ^ token[i]);
  return difference == 0;
}

http::Response Server::Impl::admin_answer(const http::Request& request) {
  using http::Response;
  const std::string& path = request.path;
  const bool changes_state = request.method != "GET" && (path == "/reload" || path == "/migration");
  if (changes_state && !admin_token_matches(request.header("authorization"))) {
    Response response =
        Response::text(401, "this admin endpoint needs Authorization: Bearer <admin.token>\n");
    response.headers.emplace_back("www-authenticate", "Bearer realm=\"keel proxy admin\"");
    return response;
  }
  if (path == "/healthz") return Response::text(200, "ok\n");
  if (path == "/ready") {
    const bool ready = !stopping.load();
    return Response::text(ready ? 200 : 503, ready ? "ready\n" : "draining\n");
  }
  if (path == "/metrics") {
    Response response = Response::text(200, registry.render_prometheus());
    response.content_type = "text/plain; version=0.0.4";
    return response;
  }
  if (path == "/clusters") return Response::json(200, clusters_json() + "\n");
  if (path == "/config") return Response::json(200, config_json() + "\n");
  if (path == "/migration" && request.method == "GET") {
    return Response::json(200, migration_store->report_json() + "\n");
  }
  if (path == "/migration") {
    // POST /migration?route=NAME&stage=canary&percent=20
    const std::string route_name = request.param("route").value_or("");
    const std::string stage_text = request.param("stage").value_or("");
    const std::string percent_text = request.param("percent").value_or("");
    const auto stage = parse_stage(stage_text);
    const double percent = std::atof(percent_text.c_str());
    Status changed;
    if (request.method != "POST") {
      changed = Error(errc::invalid_argument, "use POST to change a stage");
    } else if (!stage) {
      changed =
          Error(errc::invalid_argument, "stage= must be legacy, shadow, canary, modern or retired");
    } else {
      changed = migration_store->set_stage(route_name, *stage, percent);
    }
    if (!changed) return Response::text(400, changed.error().message() + "\n");
    const std::string change = route_name + " -> " + to_string(*stage) +
                               (*stage == Stage::kCanary ? " " + percent_text + "%" : "");
    log_event("migration", change);
    console_event({.what = "migration", .text = change + " (operator)"});
    return Response::json(200, migration_store->find(route_name)->report_json() + "\n");
  }
  if (path == "/reload") {
    // POST only: a reload changes what the proxy does.
    std::function<Status()> reloader;
    {
      std::lock_guard lock(reload_mutex);
      reloader = reload_hook;
    }
    if (request.method != "POST") {
      Response response = Response::text(405, "POST /reload re-reads the config file\n");
      response.headers.emplace_back("allow", "POST");
      return response;
    }
    if (!reloader) return Response::text(501, "this proxy was not started from a config file\n");
    if (auto status = reloader(); !status) {
      return Response::text(400, "reload refused, still serving the previous config:\n" +
                                     status.error().message() + "\n");
    }
    return Response::text(200, "reloaded\n");
  }
  if (path == "/" || path == "/console") {
    Response response = Response::text(200, console::page("keel proxy", "proxy", console_body()));
    response.content_type = "text/html; charset=utf-8";
    return response;
  }
  if (auto asset = console::asset(path)) return std::move(*asset);
  return Response::text(404,
                        "not found; try / (the console), /healthz, /ready, /metrics, /clusters, "
                        "/config, /migration, POST /reload\n");
}

void Server::Impl::log_event(const char* what, const std::string& text) {
  log::get("proxy")->info("{}: {}", what, text);
}

std::string Server::Impl::clusters_json() const {
  auto now = current();
  nlohmann::json out = nlohmann::json::array();
  for (const auto& cluster : now->clusters) {
    nlohmann::json endpoints = nlohmann::json::array();
    for (std::size_t i = 0; i < cluster->config->endpoints.size(); ++i) {
      endpoints.push_back({{"address", cluster->config->endpoints[i].address},
                           {"weight", cluster->config->endpoints[i].weight},
                           {"healthy", cluster->healthy[i].load()},
                           {"ejections", cluster->endpoint_ejections[i]->value()},
                           {"requests", cluster->endpoint_requests[i]->value()},
                           {"failures", cluster->endpoint_failures[i]->value()},
                           {"in_flight", cluster->in_flight(i)},
                           {"latency_cost_ms", cluster->latency_cost_ms(i)}});
    }
    out.push_back(
        {{"name", cluster->config->name},
         {"policy", cluster->config->load_balancer.policy},
         {"breaker", cluster->breaker ? to_string(cluster->breaker->state()) : "none"},
         {"active_requests", cluster->requests.load()},
         {"concurrency_limit", cluster->concurrency ? nlohmann::json(cluster->concurrency->limit())
                                                    : nlohmann::json(nullptr)},
         {"connections", cluster->connections.load()},
         {"requests", cluster->requests_total->value()},
         {"retries", cluster->retries_total->value()},
         {"hedges", cluster->hedges_total->value()},
         {"hedge_wins", cluster->hedge_wins_total->value()},
         {"overflow", cluster->overflow_total->value()},
         {"endpoints", endpoints}});
  }
  return out.dump(2);
}

std::string Server::Impl::config_json() const {
  auto now = current();
  nlohmann::json listeners_json = nlohmann::json::array();
  for (const auto& listener : listeners) {
    const Listener& listener_config = now->config.listeners[listener->index];
    nlohmann::json routes = nlohmann::json::array();
    for (const auto& route : listener_config.routes) {
      nlohmann::json targets = nlohmann::json::array();
      for (const auto& c : route.clusters)
        targets.push_back({{"cluster", c.cluster}, {"weight", c.weight}});
      routes.push_back({{"name", route.name},
                        {"method", route.method},
                        {"clusters", targets},
                        {"timeout_ms", route.timeout / 1ms}});
    }
    listeners_json.push_back({{"name", listener_config.name},
                              {"address", listener->bound.address().to_string() + ":" +
                                              std::to_string(listener->bound.port())},
                              {"workers", listener_config.workers},
                              {"routes", routes}});
  }
  return nlohmann::json{{"source", now->config.source}, {"listeners", listeners_json}}.dump(2);
}

}  // namespace keel::proxy

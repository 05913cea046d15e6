// The proxy's console: the first paint (tables of the current numbers) and the samples the
// console's Feed sends every second (rates and p99s over the last second, breaker states and
// transitions, endpoint health and ejections, routes, migrations, a log of what changed).
#include "keel/console/console.h"

#include <nlohmann/json.hpp>

#include "keel/proxy/server_impl.h"

namespace keel::proxy {

using nlohmann::json;

void ConsoleEvents::push(Event event) {
  std::lock_guard lock(mutex);
  events.push_back(std::move(event));
  while (events.size() > kKept) events.pop_front();
}

std::vector<ConsoleEvents::Event> ConsoleEvents::recent() const {
  std::lock_guard lock(mutex);
  return {events.begin(), events.end()};
}

void Server::Impl::console_event(ConsoleEvents::Event event) {
  event.unix_ms = clock.unix_now_ns() / 1'000'000;
  console_events.push(std::move(event));
}

// Per-second rates and interval quantiles need the previous sample's counters; only the Feed's
// tick (one at a time) calls this.
std::string Server::Impl::console_sample() {
  const TimePoint now = clock.now();
  const double elapsed = console_previous_at == TimePoint{}
                             ? 0
                             : std::chrono::duration<double>(now - console_previous_at).count();
  console_previous_at = now;
  auto rate = [&](const metrics::Counter* counter) -> json {
    const double value = static_cast<double>(counter->value());
    auto [it, first] = console_counters.try_emplace(counter, value);
    const double before = it->second;
    it->second = value;
    if (first || elapsed <= 0) return nullptr;
    return std::max(0.0, value - before) / elapsed;
  };
  auto p99_ms = [&](const metrics::Histogram* histogram) -> json {
    auto snapshot = histogram->snapshot();
    auto [it, first] = console_histograms.try_emplace(histogram, snapshot);
    std::optional<double> p99;
    if (!first) p99 = console::interval_quantile(it->second, snapshot, 0.99);
    it->second = std::move(snapshot);
    return p99 ? json(*p99 * 1000) : json(nullptr);
  };
  auto error_pct = [](const json& errors, const json& total) -> json {
    if (!errors.is_number() || !total.is_number() || total.get<double>() <= 0) return nullptr;
    return 100 * errors.get<double>() / total.get<double>();
  };

  auto g = current();
  // Changes since the last sample, into the log first (ejections are counted, so none is
  // missed between two samples).
  for (const auto& cluster : g->clusters) {
    const std::string& name = cluster->config->name;
    for (std::size_t i = 0; i < cluster->config->endpoints.size(); ++i) {
      const std::string& address = cluster->config->endpoints[i].address;
      const bool healthy = cluster->healthy[i].load();
      const std::uint64_t ejections = cluster->endpoint_ejections[i]->value();
      auto [seen, first] =
          console_endpoints.try_emplace(name + "/" + address, EndpointSeen{healthy, ejections});
      if (first) continue;
      if (seen->second.healthy != healthy) {
        console_event(
            {.what = "health",
             .cluster = name,
             .text = address + (healthy ? " is healthy again" : " failed its health check")});
      }
      if (ejections > seen->second.ejections) {
        const Duration ejected = cluster->ejected_for(i, now);
        console_event({.what = "ejection",
                       .cluster = name,
                       .text = address + " ejected by outlier detection" +
                               (ejected > Duration::zero()
                                    ? " for " + std::to_string((ejected + 999ms) / 1s) + " s"
                                    : "")});
      }
      seen->second = {healthy, ejections};
    }
  }
  const auto events = console_events.recent();
  json clusters = json::array();
  for (const auto& cluster : g->clusters) {
    const std::string& name = cluster->config->name;
    json endpoints = json::array();
    for (std::size_t i = 0; i < cluster->config->endpoints.size(); ++i) {
      const std::string& address = cluster->config->endpoints[i].address;
      const Duration ejected = cluster->ejected_for(i, now);
      const bool healthy = cluster->healthy[i].load();
      endpoints.push_back(
          {{"address", address},
           {"health", !healthy                     ? "unhealthy"
                      : ejected > Duration::zero() ? "ejected"
                                                   : "healthy"},
           {"ejected_ms", std::chrono::duration_cast<std::chrono::milliseconds>(ejected).count()},
           {"in_flight", cluster->in_flight(i)},
           {"latency_cost_ms", cluster->latency_cost_ms(i)},
           {"rps", rate(cluster->endpoint_requests[i])},
           {"failures_per_s", rate(cluster->endpoint_failures[i])},
           {"p99_ms", p99_ms(cluster->endpoint_latency[i])}});
    }
    json total = rate(cluster->requests_total);
    json five_xx = rate(cluster->responses[5]);
    json transitions = json::array();
    for (const auto& event : events) {
      if (event.what == "breaker" && event.cluster == name) {
        transitions.push_back(
            {{"t", event.unix_ms}, {"from", event.from}, {"to", event.to}, {"reason", event.text}});
      }
    }
    clusters.push_back(
        {{"name", name},
         {"policy", cluster->config->load_balancer.policy},
         {"breaker", cluster->breaker ? to_string(cluster->breaker->state()) : "none"},
         {"breaker_transitions", transitions},
         {"active", cluster->requests.load()},
         {"limit", cluster->concurrency ? json(cluster->concurrency->limit()) : json(nullptr)},
         {"connections", cluster->connections.load()},
         // The cluster's own limits (Envoy's circuit-breaker thresholds), beside their use.
         {"limits",
          {{"max_requests", cluster->config->limits.max_requests},
           {"max_connections", cluster->config->limits.max_connections},
           {"pending", cluster->pending.load()},
           {"max_pending", cluster->config->limits.max_pending},
           {"retries", cluster->retries.load()},
           {"max_retries", cluster->config->limits.max_retries}}},
         {"rps", total},
         {"error_pct", error_pct(five_xx, total)},
         {"p99_ms", p99_ms(cluster->latency)},
         {"retries_per_s", rate(cluster->retries_total)},
         {"retry_budget",
          cluster->retry_budget ? json(cluster->retry_budget->balance()) : json(nullptr)},
         {"hedges_per_s", rate(cluster->hedges_total)},
         {"overflow_per_s", rate(cluster->overflow_total)},
         {"rejected_per_s", rate(cluster->breaker_rejections_total)},
         {"endpoints", endpoints}});
  }
  json routes = json::array();
  for (const auto& [route, m] : g->route_metrics) {
    json total = rate(m.requests);
    routes.push_back({{"listener", m.listener},
                      {"name", m.name},
                      {"rps", total},
                      {"error_pct", error_pct(rate(m.responses[5]), total)},
                      {"p99_ms", p99_ms(m.latency)}});
  }
  json migrations = json::parse(migration_store->report_json(), nullptr, false);
  if (!migrations.is_array()) migrations = json::array();
  for (auto& report : migrations) report.erase("samples");  // fetched from /migration on demand
  json log = json::array();
  const std::size_t from = events.size() > 30 ? events.size() - 30 : 0;
  for (std::size_t i = from; i < events.size(); ++i) {
    const auto& e = events[i];
    std::string text = e.cluster.empty() ? "" : "cluster " + e.cluster + ": ";
    if (!e.from.empty()) text += e.from + " → " + e.to + ", ";
    log.push_back({{"t", e.unix_ms}, {"what", e.what}, {"text", text + e.text}});
  }
  return json{{"t", clock.unix_now_ns() / 1'000'000},
              {"kind", "proxy"},
              {"clusters", clusters},
              {"routes", routes},
              {"migrations", migrations},
              {"events", log}}
      .dump(-1, ' ', false, json::error_handler_t::replace);
}

// The first paint: what the page shows before (or without) its script.
std::string Server::Impl::console_body() const {
  using console::escape_html;
  auto g = current();
  const TimePoint now = clock.now();
  std::string html =
      "<nav class=kv><a href=/metrics>metrics</a><a href=/clusters>clusters (JSON)</a>"
      "<a href=/config>config (JSON)</a><a href=/migration>migration (JSON)</a></nav>"
      "<section id=clusters><h2>clusters</h2><table><tr><th>cluster<th>breaker<th>in flight"
      "<th>requests<th>retries<th>overflow<th>endpoints</tr>";
  for (const auto& cluster : g->clusters) {
    std::string endpoints;
    for (std::size_t i = 0; i < cluster->config->endpoints.size(); ++i) {
      const bool healthy = cluster->healthy[i].load();
      const bool ejected = cluster->ejected_for(i, now) > Duration::zero();
      endpoints += "<div data-endpoint=\"" + escape_html(cluster->config->endpoints[i].address) +
                   "\" data-health=\"" +
                   (!healthy  ? "unhealthy"
                    : ejected ? "ejected"
                              : "healthy") +
                   "\">" + escape_html(cluster->config->endpoints[i].address) + " — " +
                   (!healthy  ? "UNHEALTHY"
                    : ejected ? "EJECTED"
                              : "healthy") +
                   ", " + std::to_string(cluster->endpoint_requests[i]->value()) + " requests, " +
                   std::to_string(cluster->endpoint_failures[i]->value()) + " failed, " +
                   std::to_string(cluster->endpoint_ejections[i]->value()) + " ejections</div>";
    }
    const std::string breaker = cluster->breaker ? to_string(cluster->breaker->state()) : "none";
    html += "<tr data-cluster=\"" + escape_html(cluster->config->name) + "\" data-breaker=\"" +
            breaker + "\"><td>" + escape_html(cluster->config->name) + "<td>" + breaker + "<td>" +
            std::to_string(cluster->requests.load()) + "<td>" +
            std::to_string(cluster->requests_total->value()) + "<td>" +
            std::to_string(cluster->retries_total->value()) + "<td>" +
            std::to_string(cluster->overflow_total->value()) + "<td>" + endpoints + "</tr>";
  }
  html += "</table></section>";
  json migrations = json::parse(migration_store->report_json(), nullptr, false);
  if (migrations.is_array() && !migrations.empty()) {
    html +=
        "<section id=migrations><h2>migrations</h2><table><tr><th>route<th>stage<th>percent"
        "<th>modern share<th>legacy / modern answers<th>diff rate<th>top differing fields</tr>";
    for (const auto& route : migrations) {
      std::string fields;
      for (const auto& field : route["top_differing_fields"]) {
        fields +=
            escape_html(field["field"].get<std::string>()) + " (" + field["count"].dump() + ") ";
      }
      char numbers[160];
      std::snprintf(numbers, sizeof numbers, "<td>%.1f%%<td>%.1f%%<td>%s / %s<td>%.2f%%",
                    route["percent"].get<double>(), 100 * route["modern_share"].get<double>(),
                    route["legacy_answers"].dump().c_str(), route["modern_answers"].dump().c_str(),
                    100 * route["diff_rate"].get<double>());
      html += "<tr data-migration=\"" + escape_html(route["route"].get<std::string>()) + "\"><td>" +
              escape_html(route["route"].get<std::string>()) + "<td>" +
              route["stage"].get<std::string>() + numbers + "<td>" + fields + "</tr>";
    }
    html += "</table></section>";
  }
  return html;
}

}  // namespace keel::proxy

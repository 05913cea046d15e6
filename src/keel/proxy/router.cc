#include "keel/proxy/router.h"

#include <re2/re2.h>

#include <algorithm>

namespace keel::proxy {

bool path_matches(const Route& route, std::string_view target) {
  const std::string_view path = target.substr(0, target.find('?'));
  if (!route.prefix.empty()) return path.substr(0, route.prefix.size()) == route.prefix;
  if (!route.exact.empty()) return path == route.exact;
  return route.regex &&
         re2::RE2::FullMatch(re2::StringPiece(path.data(), path.size()), *route.regex);
}

const Route* match_route(const Listener& listener, const http::h1::Head& request) {
  for (const auto& route : listener.routes) {
    if (!route.method.empty() && request.method != route.method) continue;
    if (!path_matches(route, request.target)) continue;
    const bool headers_match =
        std::all_of(route.headers.begin(), route.headers.end(), [&](const HeaderMatch& header) {
          return request.has(header.name) &&
                 (header.present || request.find(header.name) == header.value);
        });
    if (headers_match) return &route;
  }
  return nullptr;
}

std::size_t cluster_index(const ProxyConfig& config, std::string_view name) {
  for (std::size_t i = 0; i < config.clusters.size(); ++i) {
    if (config.clusters[i].name == name) return i;
  }
  return 0;  // unreachable: the config was checked
}

std::uint64_t total_weight(const Route& route) {
  std::uint64_t total = 0;
  for (const auto& c : route.clusters) total += c.weight;
  return total;
}

std::size_t pick_weighted_cluster(const ProxyConfig& config, const Route& route,
                                  std::uint64_t ticket) {
  const WeightedCluster* chosen = &route.clusters.front();
  for (const auto& c : route.clusters) {
    if (ticket < c.weight) {
      chosen = &c;
      break;
    }
    ticket -= c.weight;
  }
  return cluster_index(config, chosen->cluster);
}

std::string_view sticky_key(const MigrationConfig& migration, const http::h1::Head& request,
                            std::string_view peer) {
  if (migration.sticky.kind == StickyKey::Kind::kHeader) {
    if (auto value = request.find(migration.sticky.name); !value.empty()) return value;
  } else if (migration.sticky.kind == StickyKey::Kind::kCookie) {
    const std::string_view cookies = request.find("cookie");
    const std::string_view wanted = migration.sticky.name;
    for (std::size_t at = 0; at < cookies.size();) {
      std::size_t end = cookies.find(';', at);
      if (end == std::string_view::npos) end = cookies.size();
      std::string_view pair = cookies.substr(at, end - at);
      pair.remove_prefix(std::min(pair.find_first_not_of(' '), pair.size()));
      if (pair.size() > wanted.size() && pair.substr(0, wanted.size()) == wanted &&
          pair[wanted.size()] == '=') {
        return pair.substr(wanted.size() + 1);
      }
      at = end + 1;
    }
  }
  return peer;
}

}  // namespace keel::proxy

// Routing decisions, as pure functions of the config and the request head: which route a
// request takes, which of a route's weighted clusters, and a canary's sticky key. No I/O, no
// state: the proxy's workers call them, and the tests call them directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "keel/http/h1.h"
#include "keel/proxy/config.h"

namespace keel::proxy {

// Whether `route`'s path match (prefix, exact or regex on the whole path) takes `target`; the
// query (from '?') is not part of the path.
bool path_matches(const Route& route, std::string_view target);

// The first of `listener`'s routes whose method, path and headers all match; null when none.
const Route* match_route(const Listener& listener, const http::h1::Head& request);

// The index in `config.clusters` of the cluster named `name` (the config was checked: it exists).
std::size_t cluster_index(const ProxyConfig& config, std::string_view name);

// One of `route`'s weighted clusters, by `ticket` uniform in [0, total weight): its index in
// `config.clusters`.
std::size_t pick_weighted_cluster(const ProxyConfig& config, const Route& route,
                                  std::uint64_t ticket);
std::uint64_t total_weight(const Route& route);

// A canary's sticky key: the configured header's or cookie's value, else the client's address.
std::string_view sticky_key(const MigrationConfig& migration, const http::h1::Head& request,
                            std::string_view peer);

}  // namespace keel::proxy

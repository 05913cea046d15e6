// Load-balancing policies, registered by name so a config can say `policy: peak_ewma`.
//
// Decide → act → record: `pick()` chooses an endpoint index among the set's eligible endpoints;
// the caller calls `endpoints.on_start(i)`, sends the request however it likes, then
// `endpoints.on_complete(i, success, latency)`. Policies keep only their own bookkeeping
// (rotation state, hash tables) and read everything else from the EndpointSet.
//
//   round_robin    smooth weighted round robin (nginx's): weights interleave, no bursts
//   random         weighted random
//   least_request  power of two choices on requests in flight, weighted by
//                  weight / (active + 1) ^ active_request_bias (Envoy's)
//   peak_ewma      power of two choices on peak EWMA latency x (active + 1) (Finagle, Linkerd);
//                  a stale estimate drifts toward the cluster's median and is probed
//   ring_hash      Ketama ring on the request's hash; optional bounded load (HAProxy's
//                  hash-balance-factor)
//   maglev         Maglev table on the request's hash; one array read per pick
//
// Thread-safety: none; one policy per EndpointSet per worker.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keel/balance/endpoint_set.h"
#include "keel/core/config.h"
#include "keel/core/random.h"
#include "keel/core/result.h"

namespace keel::balance {

struct PickContext {
  // The request's affinity key hash (ring_hash, maglev); without one those policies pick at
  // random.
  std::optional<std::uint64_t> hash;
  // Endpoints to stay away from if any other is eligible: a retry goes elsewhere.
  std::span<const std::size_t> avoid;
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  // An eligible endpoint's index, or nullopt when the set has none.
  virtual std::optional<std::size_t> pick(const PickContext& context) = 0;
  virtual const char* name() const = 0;
};

struct PolicyConfig {
  std::string policy = "round_robin";
  // least_request
  std::uint32_t choice_count = 2;
  double active_request_bias = 1.0;
  // peak_ewma: the share of picks, in percent, that go to an endpoint whose latency estimate is
  // stale (EndpointSet::Options::latency_stale_after) and has nothing in flight, so that an
  // endpoint that recovered on its own is seen to. At most one probe per endpoint per staleness
  // period; 0 turns probing off.
  double stale_probe_percent = 1.0;
  // ring_hash
  std::uint64_t minimum_ring_size = 1024;
  std::uint64_t maximum_ring_size = 8 * 1024 * 1024;
  // > 1 turns on bounded load: no endpoint takes more than factor x the mean load (in-flight
  // requests); 0 turns it off.
  double hash_balance_factor = 0;
  // maglev
  std::uint64_t maglev_table_size = 65537;

  // Reads `policy` (a registered name) and the fields above; errors go to the node's document.
  static PolicyConfig read(const config::Node& node);
};

using PolicyFactory = std::function<Result<std::unique_ptr<LoadBalancer>>(
    const PolicyConfig& config, EndpointSet& endpoints, Random& random)>;

// Registers a policy under `name` (replacing one of the same name). Built-ins are registered
// before any lookup.
void register_policy(std::string name, PolicyFactory factory);
std::vector<std::string> policy_names();

// Builds the policy `config.policy` over `endpoints`. Both `endpoints` and `random` must
// outlive it. Fails for an unknown name (listing the known ones) or an invalid setting.
Result<std::unique_ptr<LoadBalancer>> make_load_balancer(const PolicyConfig& config,
                                                         EndpointSet& endpoints, Random& random);

}  // namespace keel::balance

#include "keel/balance/load_balancer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "keel/core/hash.h"
#include "keel/shard/hash_ring.h"
#include "keel/shard/maglev.h"

namespace keel::balance {
namespace {

bool avoided(std::span<const std::size_t> avoid, std::size_t i) {
  return std::find(avoid.begin(), avoid.end(), i) != avoid.end();
}

// Smooth weighted round robin: every pick adds each endpoint's weight to its running score,
// takes the highest score and subtracts the total from it. Weights 5,1,1 give a,a,b,a,c,a,a
// rather than a,a,a,a,a,b,c. Equal weights take a plain rotation.
class RoundRobin final : public LoadBalancer {
 public:
  explicit RoundRobin(EndpointSet& endpoints) : endpoints_(endpoints) {}
  const char* name() const override { return "round_robin"; }

  std::optional<std::size_t> pick(const PickContext& context) override {
    const auto& eligible = endpoints_.eligible();
    if (eligible.empty()) return std::nullopt;
    if (endpoints_.version() != version_) {
      version_ = endpoints_.version();
      score_.assign(endpoints_.size(), 0);
    }
    bool equal = !endpoints_.slow_starting();
    for (std::size_t k = 1; equal && k < eligible.size(); ++k) {
      equal = endpoints_[eligible[k]].weight == endpoints_[eligible[0]].weight;
    }
    for (std::size_t tries = 0; tries < eligible.size(); ++tries) {
      std::size_t chosen;
      if (equal) {
        chosen = eligible[next_++ % eligible.size()];
      } else {
        double total = 0;
        std::size_t best = eligible[0];
        for (std::size_t i : eligible) {
          double weight = endpoints_.effective_weight(i);
          score_[i] += weight;
          total += weight;
          if (score_[i] > score_[best]) best = i;
        }
        score_[best] -= total;
        chosen = best;
      }
      if (!avoided(context.avoid, chosen)) return chosen;
    }
    return eligible[next_++ % eligible.size()];
  }

 private:
  EndpointSet& endpoints_;
  std::uint64_t version_ = ~0ULL;
  std::vector<double> score_;
  std::size_t next_ = 0;
};

class WeightedRandom final : public LoadBalancer {
 public:
  WeightedRandom(EndpointSet& endpoints, Random& random) : endpoints_(endpoints), random_(random) {}
  const char* name() const override { return "random"; }

  std::optional<std::size_t> pick(const PickContext& context) override {
    const auto& eligible = endpoints_.eligible();
    if (eligible.empty()) return std::nullopt;
    double total = 0;
    for (std::size_t i : eligible) {
      if (!avoided(context.avoid, i)) total += endpoints_.effective_weight(i);
    }
    if (total <= 0) return eligible[random_.uniform(eligible.size())];
    double point = random_.uniform01() * total;
    for (std::size_t i : eligible) {
      if (avoided(context.avoid, i)) continue;
      point -= endpoints_.effective_weight(i);
      if (point < 0) return i;
    }
    return eligible.back();
  }

 private:
  EndpointSet& endpoints_;
  Random& random_;
};

// Power of `choice_count` random choices; the candidate with the lowest cost wins.
class PowerOfChoices : public LoadBalancer {
 public:
  static constexpr std::uint32_t kMaxChoices = 16;

  PowerOfChoices(EndpointSet& endpoints, Random& random, std::uint32_t choices)
      : endpoints_(endpoints), random_(random), choices_(choices) {}

  std::optional<std::size_t> pick(const PickContext& context) override {
    const auto& eligible = endpoints_.eligible();
    if (eligible.empty()) return std::nullopt;
    std::optional<std::size_t> best;
    double best_cost = 0;
    std::size_t chosen[kMaxChoices];
    const std::size_t choices = std::min<std::size_t>(choices_, eligible.size());
    for (std::size_t c = 0; c < choices; ++c) {
      // Distinct candidates: with replacement, a lone bad endpoint would win every time it was
      // drawn twice (1 in n^2 picks), whatever its cost.
      std::size_t candidate;
      int draws = 0;
      do {
        candidate = eligible[random_.uniform(eligible.size())];
      } while (++draws < 16 &&
               (std::find(chosen, chosen + c, candidate) != chosen + c ||
                (avoided(context.avoid, candidate) && eligible.size() > context.avoid.size() + c)));
      chosen[c] = candidate;
      double cost = this->cost(candidate);
      if (!best || prefer(cost, best_cost)) {
        best = candidate;
        best_cost = cost;
      }
    }
    return best;
  }

 protected:
  virtual double cost(std::size_t i) = 0;
  // Whether a candidate costing `cost` beats the best so far.
  virtual bool prefer(double cost, double best_cost) { return cost < best_cost; }
  EndpointSet& endpoints_;
  Random& random_;

 private:
  std::uint32_t choices_;
};

class LeastRequest final : public PowerOfChoices {
 public:
  LeastRequest(EndpointSet& endpoints, Random& random, const PolicyConfig& config)
      : PowerOfChoices(endpoints, random, config.choice_count), bias_(config.active_request_bias) {}
  const char* name() const override { return "least_request"; }

 protected:
  double cost(std::size_t i) override {
    // Lower is better: (active + 1) ^ bias / weight. With equal weights and bias 1 this is
    // plain "fewest requests in flight".
    double active = static_cast<double>(endpoints_[i].active_requests) + 1;
    return (bias_ == 1.0 ? active : std::pow(active, bias_)) / endpoints_.effective_weight(i);
  }

 private:
  double bias_;
};

class PeakEwmaBalancer final : public PowerOfChoices {
 public:
  PeakEwmaBalancer(EndpointSet& endpoints, Random& random, const PolicyConfig& config)
      : PowerOfChoices(endpoints, random, 2),
        probe_share_(config.stale_probe_percent / 100),
        probed_at_(endpoints.size(), TimePoint::min()) {}
  const char* name() const override { return "peak_ewma"; }

  std::optional<std::size_t> pick(const PickContext& context) override {
    // An endpoint that loses every comparison gets no requests, so no sample could ever show
    // that it is fast again: a small share of picks goes to endpoints whose estimate is stale.
    if (probe_share_ > 0 && random_.bernoulli(probe_share_)) {
      if (auto probe = stale_endpoint(context)) return probe;
    }
    return PowerOfChoices::pick(context);
  }

 protected:
  double cost(std::size_t i) override {
    const EndpointState& endpoint = endpoints_[i];
    double active = static_cast<double>(endpoint.active_requests);
    // Latency x (requests in flight + 1), as Finagle and Linkerd: an endpoint that answers fast
    // still loses once requests pile up on it. With no sample anywhere yet, every endpoint
    // costs the same nominal latency and this is least_request. Equal costs are a coin toss
    // (prefer): ties break randomly.
    double latency = endpoints_.latency_estimate_ns(i);
    if (latency <= 0) latency = kNominalLatencyNs;
    return latency * (active + 1) / static_cast<double>(endpoint.weight);
  }

  // The cheaper candidate wins with probability 1 / (1 + (cost / other)^4): 94% at twice
  // cheaper, 67% at 1.2x, a certainty at a stall's 100x. With a strict comparison, three
  // endpoints whose costs differ by noise split 67/33/0 until the noise changes; this keeps
  // the share of each near a third while still steering away from a real slowdown.
  bool prefer(double cost, double best_cost) override {
    const double ratio = cost / best_cost;
    const double squared = ratio * ratio;
    return random_.uniform01() * (1 + squared * squared) < 1;
  }

 private:
  // A random eligible, not avoided endpoint with a stale estimate and no probe from here
  // within the staleness period: at most one probe per endpoint per period, however many
  // picks land here, so a still-stalled endpoint costs few slow requests. Requests in flight
  // do not hold a probe back: they may be stuck since before the endpoint recovered.
  std::optional<std::size_t> stale_endpoint(const PickContext& context) {
    const TimePoint now = endpoints_.clock().now();
    const Duration period = endpoints_.options().latency_stale_after;
    std::optional<std::size_t> chosen;
    std::uint64_t seen = 0;
    for (std::size_t i : endpoints_.eligible()) {
      if (avoided(context.avoid, i) ||
          (probed_at_[i] != TimePoint::min() && now - probed_at_[i] <= period) ||
          !endpoints_.latency_stale(i)) {
        continue;
      }
      if (random_.uniform(++seen) == 0) chosen = i;  // reservoir sampling: uniform over all
    }
    if (chosen) probed_at_[*chosen] = now;
    return chosen;
  }

  static constexpr double kNominalLatencyNs = 1e6;
  double probe_share_;
  std::vector<TimePoint> probed_at_;
};

std::vector<shard::WeightedNode> weighted_nodes(EndpointSet& endpoints) {
  std::vector<shard::WeightedNode> nodes;
  for (std::size_t i : endpoints.eligible()) {
    nodes.push_back({endpoints[i].address, static_cast<double>(endpoints[i].weight)});
  }
  return nodes;
}

class RingHashBalancer final : public LoadBalancer {
 public:
  RingHashBalancer(EndpointSet& endpoints, Random& random, const PolicyConfig& config)
      : endpoints_(endpoints), random_(random), config_(config) {}
  const char* name() const override { return "ring_hash"; }

  std::optional<std::size_t> pick(const PickContext& context) override {
    const auto& eligible = endpoints_.eligible();
    if (eligible.empty()) return std::nullopt;
    if (endpoints_.version() != version_) {
      version_ = endpoints_.version();
      ring_ = shard::HashRing::build(weighted_nodes(endpoints_), config_.minimum_ring_size,
                                     config_.maximum_ring_size);
      total_weight_ = 0;
      for (std::size_t i : eligible) total_weight_ += endpoints_[i].weight;
    }
    std::uint64_t hash = context.hash ? *context.hash : random_.next();
    std::size_t point = ring_.point_for(hash);
    if (config_.hash_balance_factor <= 1.0 && context.avoid.empty()) {
      return eligible[ring_.node_of(point)];
    }
    // Bounded load: walk the ring past endpoints that already carry more than their share.
    double total_active = 1;
    for (std::size_t i : eligible) total_active += endpoints_[i].active_requests;
    std::optional<std::size_t> fallback;
    for (std::size_t step = 0; step < ring_.point_count();
         ++step, point = ring_.next_point(point)) {
      std::size_t i = eligible[ring_.node_of(point)];
      if (avoided(context.avoid, i)) continue;
      if (!fallback) fallback = i;
      if (config_.hash_balance_factor <= 1.0) return i;
      double capacity = std::ceil(config_.hash_balance_factor * total_active *
                                  endpoints_[i].weight / total_weight_);
      if (endpoints_[i].active_requests < capacity) return i;
    }
    return fallback ? *fallback : eligible[ring_.node_of(ring_.point_for(hash))];
  }

 private:
  EndpointSet& endpoints_;
  Random& random_;
  PolicyConfig config_;
  std::uint64_t version_ = ~0ULL;
  shard::HashRing ring_;
  double total_weight_ = 0;
};

class MaglevBalancer final : public LoadBalancer {
 public:
  MaglevBalancer(EndpointSet& endpoints, Random& random, const PolicyConfig& config)
      : endpoints_(endpoints), random_(random), table_size_(config.maglev_table_size) {}
  const char* name() const override { return "maglev"; }

  std::optional<std::size_t> pick(const PickContext& context) override {
    const auto& eligible = endpoints_.eligible();
    if (eligible.empty()) return std::nullopt;
    if (endpoints_.version() != version_) {
      version_ = endpoints_.version();
      auto table = shard::MaglevTable::build(weighted_nodes(endpoints_), table_size_);
      // The size was validated when the policy was made; only the node count can fail it.
      if (!table) return eligible[random_.uniform(eligible.size())];
      table_ = std::move(*table);
    }
    std::uint64_t hash = context.hash ? *context.hash : random_.next();
    std::size_t chosen = eligible[table_->lookup(hash)];
    // A retry rehashes until it lands elsewhere.
    for (std::uint64_t salt = 1; salt <= 8 && avoided(context.avoid, chosen); ++salt) {
      chosen = eligible[table_->lookup(hash64(hash, salt))];
    }
    return chosen;
  }

 private:
  EndpointSet& endpoints_;
  Random& random_;
  std::uint64_t table_size_;
  std::uint64_t version_ = ~0ULL;
  std::optional<shard::MaglevTable> table_;
};

struct Registry {
  std::mutex mutex;
  std::map<std::string, PolicyFactory, std::less<>> factories;
};

template <typename Policy, typename... Args>
Result<std::unique_ptr<LoadBalancer>> made(Args&&... args) {
  return std::unique_ptr<LoadBalancer>(std::make_unique<Policy>(std::forward<Args>(args)...));
}

Registry& registry() {
  static Registry* instance = [] {
    auto* r = new Registry;
    r->factories["round_robin"] = [](const PolicyConfig&, EndpointSet& e, Random&) {
      return made<RoundRobin>(e);
    };
    r->factories["random"] = [](const PolicyConfig&, EndpointSet& e, Random& random) {
      return made<WeightedRandom>(e, random);
    };
    r->factories["least_request"] = [](const PolicyConfig& c, EndpointSet& e,
                                       Random& random) -> Result<std::unique_ptr<LoadBalancer>> {
      if (c.choice_count < 2) {
        return Error(keel::errc::invalid_argument, "least_request: choice_count must be >= 2");
      }
      return made<LeastRequest>(e, random, c);
    };
    r->factories["peak_ewma"] = [](const PolicyConfig& c, EndpointSet& e,
                                   Random& random) -> Result<std::unique_ptr<LoadBalancer>> {
      if (!(c.stale_probe_percent >= 0 && c.stale_probe_percent <= 50)) {
        return Error(keel::errc::invalid_argument,
                     "peak_ewma: stale_probe_percent must be between 0 and 50");
      }
      return made<PeakEwmaBalancer>(e, random, c);
    };
    r->factories["ring_hash"] = [](const PolicyConfig& c, EndpointSet& e,
                                   Random& random) -> Result<std::unique_ptr<LoadBalancer>> {
      if (c.minimum_ring_size < 1 || c.minimum_ring_size > c.maximum_ring_size) {
        return Error(keel::errc::invalid_argument,
                     "ring_hash: need 1 <= minimum_ring_size <= maximum_ring_size");
      }
      return made<RingHashBalancer>(e, random, c);
    };
    r->factories["maglev"] = [](const PolicyConfig& c, EndpointSet& e,
                                Random& random) -> Result<std::unique_ptr<LoadBalancer>> {
      if (!shard::is_prime(c.maglev_table_size)) {
        return Error(keel::errc::invalid_argument,
                     "maglev: maglev_table_size " + std::to_string(c.maglev_table_size) +
                         " is not a prime (65537 is the usual choice)");
      }
      return made<MaglevBalancer>(e, random, c);
    };
    return r;
  }();
  return *instance;
}

}  // namespace

void register_policy(std::string name, PolicyFactory factory) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.factories[std::move(name)] = std::move(factory);
}

std::vector<std::string> policy_names() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> names;
  for (const auto& [name, factory] : r.factories) names.push_back(name);
  return names;
}

Result<std::unique_ptr<LoadBalancer>> make_load_balancer(const PolicyConfig& config,
                                                         EndpointSet& endpoints, Random& random) {
  PolicyFactory factory;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.factories.find(config.policy);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory) {
    std::string known;
    for (const auto& name : policy_names()) known += (known.empty() ? "" : ", ") + name;
    return Error(keel::errc::invalid_argument,
                 "unknown load-balancing policy '" + config.policy + "' (known: " + known + ")");
  }
  return factory(config, endpoints, random);
}

PolicyConfig PolicyConfig::read(const config::Node& node) {
  PolicyConfig c;
  std::string policy = c.policy;
  node.read("policy", policy);
  auto names = policy_names();
  if (std::find(names.begin(), names.end(), policy) == names.end()) {
    std::string known;
    for (const auto& name : names) known += (known.empty() ? "" : ", ") + name;
    node.fail("policy", "expected one of " + known + ", got \"" + policy + "\"");
  } else {
    c.policy = policy;
  }
  node.read("choice_count", c.choice_count, 2, 16);
  node.read("active_request_bias", c.active_request_bias, 0.0, 10.0);
  node.read("stale_probe_percent", c.stale_probe_percent, 0.0, 50.0);
  std::int64_t minimum = static_cast<std::int64_t>(c.minimum_ring_size);
  std::int64_t maximum = static_cast<std::int64_t>(c.maximum_ring_size);
  node.read("minimum_ring_size", minimum, 1, 1 << 23);
  node.read("maximum_ring_size", maximum, 1, 1 << 23);
  if (minimum > maximum) node.fail("minimum_ring_size", "must not exceed maximum_ring_size");
  c.minimum_ring_size = static_cast<std::uint64_t>(minimum);
  c.maximum_ring_size = static_cast<std::uint64_t>(maximum);
  node.read("hash_balance_factor", c.hash_balance_factor, 0.0, 100.0);
  if (c.hash_balance_factor != 0 && c.hash_balance_factor <= 1.0) {
    node.fail("hash_balance_factor", "must be above 1 (e.g. 1.25), or 0 to turn bounded load off");
  }
  std::int64_t table = static_cast<std::int64_t>(c.maglev_table_size);
  node.read("maglev_table_size", table, 3, 1LL << 31);
  if (!shard::is_prime(static_cast<std::uint64_t>(table))) {
    node.fail("maglev_table_size", "must be a prime, such as 65537");
  } else {
    c.maglev_table_size = static_cast<std::uint64_t>(table);
  }
  node.expect_only({"policy", "choice_count", "active_request_bias", "minimum_ring_size",
                    "maximum_ring_size", "hash_balance_factor", "maglev_table_size",
                    "stale_probe_percent"});
  return c;
}

}  // namespace keel::balance

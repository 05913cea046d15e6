#include "keel/balance/simulation.h"

#include <algorithm>
#include <cmath>
#include <deque>
#include <optional>
#include <queue>

#include "keel/balance/load_balancer.h"
#include "keel/core/random.h"

namespace keel::balance {
namespace {

struct Event {
  TimePoint at;
  std::uint64_t sequence;
  bool arrival;
  std::uint64_t request;
  bool operator>(const Event& other) const {
    return at != other.at ? at > other.at : sequence > other.sequence;
  }
};

struct Request {
  TimePoint arrived;
  std::size_t endpoint = 0;
};

double percentile(std::vector<double>& sorted, double fraction) {
  if (sorted.empty()) return 0;
  auto index = static_cast<std::size_t>(std::ceil(fraction * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size() - 1, index == 0 ? 0 : index - 1)];
}

}  // namespace

const std::vector<double>& SimulationResult::histogram_bounds_ms() {
  static const std::vector<double> bounds{5, 10, 25, 50, 100, 250, 500, 1000};
  return bounds;
}

Result<SimulationResult> simulate(std::string_view policy, const SimulationConfig& config) {
  ManualClock clock;
  Random random(config.seed);
  Random service_random(config.seed ^ 0x5e41ce);

  std::vector<EndpointConfig> endpoint_configs;
  for (std::uint32_t i = 0; i < config.endpoints; ++i) {
    endpoint_configs.push_back({"10.0.0." + std::to_string(i + 1) + ":8080", 1});
  }
  EndpointSet endpoints(std::move(endpoint_configs), {}, clock);
  PolicyConfig policy_config;
  policy_config.policy = std::string(policy);
  auto balancer = make_load_balancer(policy_config, endpoints, random);
  if (!balancer) return balancer.error();

  const TimePoint start = clock.now();
  const TimePoint arrivals_end = start + config.duration;
  const TimePoint stall_from =
      start + std::chrono::duration_cast<Duration>(config.duration * config.stall_start);
  const TimePoint stall_until =
      start + std::chrono::duration_cast<Duration>(config.duration * config.stall_end);
  const double mu = std::log(static_cast<double>(config.median_service_time.count()));

  std::priority_queue<Event, std::vector<Event>, std::greater<>> events;
  std::vector<Request> requests;
  std::vector<std::uint32_t> busy(config.endpoints, 0);
  std::vector<std::deque<std::uint64_t>> queues(config.endpoints);
  std::vector<double> latencies_ms;
  std::uint64_t sequence = 0;
  std::uint64_t to_stalled = 0;
  // Picks per endpoint in each 100 ms slot of arrivals, for the share figures.
  constexpr Duration kSlot = 100ms;
  const std::size_t slots = static_cast<std::size_t>((config.duration + kSlot - 1ns) / kSlot);
  std::vector<std::vector<std::uint32_t>> picks_per_slot(
      slots, std::vector<std::uint32_t>(config.endpoints, 0));

  auto service_time = [&](std::size_t endpoint, TimePoint at) {
    // Box-Muller for a standard normal, then lognormal around the median.
    double u1 = std::max(service_random.uniform01(), 1e-12);
    double u2 = service_random.uniform01();
    double normal = std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
    double ns = std::exp(mu + config.service_time_sigma * normal);
    if (endpoint == 0 && at >= stall_from && at < stall_until) ns *= config.stall_factor;
    return Duration(static_cast<std::int64_t>(ns));
  };
  auto begin_service = [&](std::uint64_t id, TimePoint at) {
    std::size_t endpoint = requests[id].endpoint;
    ++busy[endpoint];
    events.push({at + service_time(endpoint, at), sequence++, false, id});
  };
  auto next_arrival = [&](TimePoint after) {
    double gap_s = -std::log(std::max(random.uniform01(), 1e-12)) / config.requests_per_second;
    return after + Duration(static_cast<std::int64_t>(gap_s * 1e9));
  };

  events.push({next_arrival(start), sequence++, true, 0});
  while (!events.empty()) {
    Event event = events.top();
    events.pop();
    clock.advance_to(event.at);
    if (event.arrival) {
      std::uint64_t id = requests.size();
      auto pick = (*balancer)->pick({});
      if (!pick) return Error(keel::errc::invalid_argument, "simulation: no endpoint to pick");
      requests.push_back({event.at, *pick});
      ++picks_per_slot[static_cast<std::size_t>((event.at - start) / kSlot)][*pick];
      if (*pick == 0 && event.at >= stall_from && event.at < stall_until) ++to_stalled;
      endpoints.on_start(*pick);
      if (busy[*pick] < config.endpoint_concurrency) {
        begin_service(id, event.at);
      } else {
        queues[*pick].push_back(id);
      }
      TimePoint next = next_arrival(event.at);
      if (next < arrivals_end) events.push({next, sequence++, true, 0});
    } else {
      const Request& request = requests[event.request];
      Duration latency = event.at - request.arrived;
      endpoints.on_complete(request.endpoint, true, latency);
      latencies_ms.push_back(to_ms(latency));
      std::size_t endpoint = request.endpoint;
      --busy[endpoint];
      if (!queues[endpoint].empty()) {
        std::uint64_t waiting = queues[endpoint].front();
        queues[endpoint].pop_front();
        begin_service(waiting, event.at);
      }
    }
  }

  SimulationResult result;
  result.policy = std::string(policy);
  result.requests = requests.size();
  const auto& bounds = SimulationResult::histogram_bounds_ms();
  result.histogram.assign(bounds.size() + 1, 0);
  double deadline_ms = to_ms(config.deadline);
  std::uint64_t in_time = 0;
  for (double ms : latencies_ms) {
    in_time += ms <= deadline_ms ? 1 : 0;
    auto bucket = static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), ms) -
                                           bounds.begin());
    ++result.histogram[bucket];
  }
  std::sort(latencies_ms.begin(), latencies_ms.end());
  result.p50_ms = percentile(latencies_ms, 0.50);
  result.p99_ms = percentile(latencies_ms, 0.99);
  result.p999_ms = percentile(latencies_ms, 0.999);
  result.max_ms = latencies_ms.empty() ? 0 : latencies_ms.back();
  result.success_pct = latencies_ms.empty() ? 0
                                            : 100.0 * static_cast<double>(in_time) /
                                                  static_cast<double>(latencies_ms.size());
  std::uint64_t stall_window_requests = 0;
  for (const auto& request : requests) {
    stall_window_requests += request.arrived >= stall_from && request.arrived < stall_until;
  }
  result.stalled_share_pct =
      stall_window_requests == 0
          ? 0
          : 100.0 * static_cast<double>(to_stalled) / static_cast<double>(stall_window_requests);

  // Shares over windows of whole slots: share(endpoint, first slot, slot count), in percent.
  auto share_pct = [&](std::size_t endpoint, std::size_t first, std::size_t count) {
    std::uint64_t to_endpoint = 0;
    std::uint64_t total = 0;
    for (std::size_t slot = first; slot < first + count; ++slot) {
      to_endpoint += picks_per_slot[slot][endpoint];
      for (std::uint32_t picks : picks_per_slot[slot]) total += picks;
    }
    return total == 0 ? -1.0
                      : 100.0 * static_cast<double>(to_endpoint) / static_cast<double>(total);
  };
  const double fair_pct = 100.0 / config.endpoints;
  const bool stalls = config.stall_factor != 1 && stall_until > stall_from;
  const auto slot_of = [&](TimePoint at) {
    return static_cast<std::size_t>(std::max(Duration::zero(), at - start) / kSlot);
  };
  const auto window_slots = [&](Duration window) {
    return static_cast<std::size_t>(std::max<std::int64_t>(1, window / kSlot));
  };
  if (stalls) {
    // Scan backwards: the earliest window start from which every window stays near fair.
    const std::size_t window = window_slots(config.recovery_window);
    const std::size_t first = std::min(slots, (slot_of(stall_until - 1ns) + 1));
    std::optional<std::size_t> recovered_from;
    for (std::size_t slot = slots >= window ? slots - window + 1 : 0; slot-- > first;) {
      double share = share_pct(0, slot, window);
      if (share < 0 || std::abs(share - fair_pct) > config.recovery_tolerance_points) break;
      recovered_from = slot;
    }
    if (recovered_from) {
      TimePoint recovered_at = start + kSlot * static_cast<std::int64_t>(*recovered_from + window);
      result.recovery_ms = to_ms(recovered_at - stall_until);
    }
  }
  {
    const std::size_t window = window_slots(config.balance_window);
    for (std::size_t slot = 0; slot + window <= slots; ++slot) {
      TimePoint from = start + kSlot * static_cast<std::int64_t>(slot);
      TimePoint to = from + kSlot * static_cast<std::int64_t>(window);
      if (stalls && from < stall_until && to > stall_from) continue;
      for (std::size_t endpoint = 0; endpoint < config.endpoints; ++endpoint) {
        double share = share_pct(endpoint, slot, window);
        if (share < 0) continue;
        result.max_share_deviation_points =
            std::max(result.max_share_deviation_points, std::abs(share - fair_pct));
      }
    }
  }
  return result;
}

}  // namespace keel::balance

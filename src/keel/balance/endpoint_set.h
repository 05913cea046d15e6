// The endpoints a load balancer chooses among, with everything a policy looks at: weight,
// health from active checks, outlier ejection, requests in flight, a peak-sensitive latency
// average, counters, and the protections that decide which endpoints are eligible at all —
// the panic threshold and slow start.
//
// Thread-safety: none. Like Envoy's per-worker host sets, each worker thread owns its own
// EndpointSet and policies; health and ejection verdicts are fanned out to every worker's set.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/config.h"

namespace keel::balance {

struct EndpointConfig {
  std::string address;
  std::uint32_t weight = 1;  // >= 1
};

// Peak-sensitive exponentially weighted moving average of latency (Finagle's PeakEwma, used by
// Linkerd): a sample above the average replaces it at once, unless a request sent later has
// already answered (old news); below it, the average moves toward the sample with weight
// 1 - exp(-elapsed / decay), at least 0.1. It does not decay on its own: what an estimate
// nobody has refreshed is worth depends on the other endpoints, so EndpointSet decides
// (latency_estimate_ns).
class PeakEwma {
 public:
  void observe(Duration latency, TimePoint now, Duration decay);
  // Starts over from `cost_ns` as if sampled at `now` from a request sent at `started`;
  // clear() forgets every sample.
  void reset(double cost_ns, TimePoint now, TimePoint started);
  void clear() { *this = PeakEwma(); }
  // Nanoseconds as of the last sample; 0 before the first.
  double value() const { return cost_ns_; }
  TimePoint last_sample() const { return stamp_; }
  bool has_samples() const { return stamp_ != TimePoint::min(); }

 private:
  static constexpr double kMinimumWeight = 0.1;
  double cost_ns_ = 0;
  TimePoint stamp_ = TimePoint::min();
  TimePoint newest_start_ = TimePoint::min();  // of the requests sampled so far
};

struct EndpointState {
  std::string address;
  std::uint32_t weight = 1;
  bool healthy = true;                         // the active health checker's verdict
  TimePoint ejected_until = TimePoint::min();  // outlier ejection
  TimePoint healthy_since;                     // start of the slow-start ramp
  std::uint32_t active_requests = 0;
  PeakEwma latency;
  std::uint64_t requests_total = 0;
  std::uint64_t failures_total = 0;
};

class EndpointSet {
 public:
  struct Options {
    // When fewer than this percentage of endpoints are eligible, every endpoint is (Envoy's
    // panic mode): spreading load over sick endpoints beats crushing the few healthy ones.
    double panic_threshold_percent = 50;
    // A newly healthy endpoint's weight ramps from min_weight_percent to 100% over this
    // window (Envoy's slow start); zero turns it off. Used by round_robin, random and
    // least_request.
    Duration slow_start_window = Duration::zero();
    double slow_start_min_weight_percent = 10;
    double slow_start_aggression = 1.0;  // ramp = (elapsed / window) ^ (1 / aggression)
    // Decay of the peak EWMA of latency: how fast lower samples pull a peak down, and how fast
    // an estimate with no new sample moves toward the cluster's typical one.
    Duration latency_decay = 10s;
    // An endpoint with no latency sample for this long has a stale estimate: peak_ewma probes
    // it now and then, and its next sample replaces the estimate. (Meanwhile the estimate
    // drifts toward the median of the others': not toward zero, which would flood it, nor
    // staying at its last peak, which starves it, as with no requests it gets no sample.)
    Duration latency_stale_after = 500ms;

    static Options read(const config::Node& node);
  };

  EndpointSet(std::vector<EndpointConfig> endpoints, Options options, Clock& clock);

  std::size_t size() const { return endpoints_.size(); }
  const EndpointState& operator[](std::size_t i) const { return endpoints_[i]; }
  const Options& options() const { return options_; }
  Clock& clock() const { return clock_; }

  // Verdicts from the health checker and the outlier detector.
  void set_healthy(std::size_t i, bool healthy);
  void eject(std::size_t i, TimePoint until);
  void uneject(std::size_t i);
  bool ejected(std::size_t i, TimePoint now) const { return endpoints_[i].ejected_until > now; }

  // Decide → act → record: a request sent to endpoint i, and how it ended.
  void on_start(std::size_t i);
  void on_complete(std::size_t i, bool success, Duration latency);
  // A request to endpoint i abandoned by the caller (a hedged try that lost the race): no
  // longer in flight, and no sample — its latency and outcome say nothing about the endpoint.
  void on_cancel(std::size_t i);

  // Endpoint i's latency in nanoseconds as peak_ewma sees it now: its peak EWMA, moving toward
  // the typical latency with the time since its last sample (exp(-age / decay)); the typical
  // latency when it has no sample. 0 only when no endpoint has a sample.
  double latency_estimate_ns(std::size_t i);
  // Whether endpoint i has had no latency sample for latency_stale_after (or none at all).
  bool latency_stale(std::size_t i) const;
  // The median latency estimate of the endpoints other than i that are healthy and not
  // ejected, preferring fresh ones; 0 when none has a sample.
  double typical_latency_ns(std::size_t i);

  // The endpoints a policy may pick now: healthy and not ejected, or every endpoint when that
  // leaves fewer than the panic threshold. Recomputed when a verdict changes or an ejection
  // expires; reads the clock only while an ejection or a slow start is under way.
  const std::vector<std::size_t>& eligible();
  // As of the last eligible(): whether the panic threshold applies, and a number bumped
  // whenever the eligible set changed, so policies with tables (ring, Maglev) rebuild.
  bool in_panic() const { return panic_; }
  std::uint64_t version() const { return version_; }
  // The weight to use now: after slow start, in [weight * min%, weight].
  double effective_weight(std::size_t i);
  // True while any eligible endpoint is still ramping up.
  bool slow_starting();

 private:
  void refresh(TimePoint now);
  // An endpoint back from unhealthy or ejection starts from the typical latency: its last
  // sample, often the timeout that got it ejected, says nothing about it now.
  void restart_latency(std::size_t i, TimePoint now);
  void collect_typical(TimePoint now);
  double median_without(std::size_t i) const;
  double cached_typical_ns(std::size_t i, TimePoint now);
  static constexpr Duration kTypicalRefresh = 10ms;

  std::vector<EndpointState> endpoints_;
  Options options_;
  Clock& clock_;
  std::vector<std::size_t> eligible_;
  bool panic_ = false;
  bool dirty_ = true;
  TimePoint next_expiry_ = TimePoint::max();
  TimePoint slow_start_until_ = TimePoint::min();
  std::uint64_t version_ = 0;
  // The latency estimates the typical one is the median of (sorted), and whose they are.
  std::vector<double> typical_values_;
  std::vector<bool> typical_members_;
  TimePoint typical_at_ = TimePoint::min();
  bool typical_dirty_ = true;
};

}  // namespace keel::balance

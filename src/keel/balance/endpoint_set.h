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
// Linkerd): a sample above the average replaces it at once; below it, the average moves toward
// the sample with weight exp(-elapsed / decay). Read at a later time, the average has decayed
// toward zero, so an endpoint that was slow a while ago gets another chance.
class PeakEwma {
 public:
  void observe(Duration latency, TimePoint now, Duration decay);
  // Nanoseconds, decayed to `now`; 0 before the first sample.
  double value(TimePoint now, Duration decay) const;
  bool has_samples() const { return stamp_ != TimePoint::min(); }

 private:
  double cost_ns_ = 0;
  TimePoint stamp_ = TimePoint::min();
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
    // Decay of the peak EWMA of latency.
    Duration latency_decay = 10s;

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

  std::vector<EndpointState> endpoints_;
  Options options_;
  Clock& clock_;
  std::vector<std::size_t> eligible_;
  bool panic_ = false;
  bool dirty_ = true;
  TimePoint next_expiry_ = TimePoint::max();
  TimePoint slow_start_until_ = TimePoint::min();
  std::uint64_t version_ = 0;
};

}  // namespace keel::balance

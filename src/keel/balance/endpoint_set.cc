#include "keel/balance/endpoint_set.h"

#include <algorithm>
#include <cmath>

#include "keel/core/check.h"

namespace keel::balance {

void PeakEwma::observe(Duration latency, TimePoint now, Duration decay) {
  const auto sample = static_cast<double>(latency.count());
  const TimePoint started = now - latency;
  if (!has_samples()) {
    cost_ns_ = sample;
  } else if (sample > cost_ns_) {
    // A peak counts at once, unless a request sent later has already answered faster: then
    // it is old news (say, one that was stuck in a stall that has ended since), and does not
    // count as news at all: the estimate may go stale and be probed.
    if (started < newest_start_) return;
    cost_ns_ = sample;
  } else {
    double elapsed = static_cast<double>(std::max(Duration::zero(), now - stamp_).count());
    // Each lower sample weighs at least kMinimumWeight, however soon it follows the last: a
    // noise peak is forgiven after a few dozen normal answers, not only after `decay`, so the
    // endpoint that happened to draw it is not starved for seconds (the all-healthy swing).
    double w =
        std::min(1 - kMinimumWeight, std::exp(-elapsed / static_cast<double>(decay.count())));
    cost_ns_ = cost_ns_ * w + sample * (1 - w);
  }
  newest_start_ = std::max(newest_start_, started);
  stamp_ = now;
}

void PeakEwma::reset(double cost_ns, TimePoint now, TimePoint started) {
  cost_ns_ = cost_ns;
  stamp_ = now;
  newest_start_ = started;
}

EndpointSet::Options EndpointSet::Options::read(const config::Node& node) {
  Options o;
  node.read("panic_threshold_percent", o.panic_threshold_percent, 0.0, 100.0);
  node.read_ms("slow_start_window_ms", o.slow_start_window, Duration::zero(), 1h);
  node.read("slow_start_min_weight_percent", o.slow_start_min_weight_percent, 1.0, 100.0);
  node.read("slow_start_aggression", o.slow_start_aggression, 0.01, 100.0);
  node.read_ms("latency_decay_ms", o.latency_decay, 1ms, 1h);
  node.read_ms("latency_stale_after_ms", o.latency_stale_after, 1ms, 1h);
  node.expect_only({"panic_threshold_percent", "slow_start_window_ms",
                    "slow_start_min_weight_percent", "slow_start_aggression", "latency_decay_ms",
                    "latency_stale_after_ms"});
  return o;
}

EndpointSet::EndpointSet(std::vector<EndpointConfig> endpoints, Options options, Clock& clock)
    : options_(options), clock_(clock) {
  const TimePoint now = clock_.now();
  for (auto& endpoint : endpoints) {
    KEEL_CHECK(endpoint.weight >= 1, "endpoint weight must be at least 1");
    EndpointState state;
    state.address = std::move(endpoint.address);
    state.weight = endpoint.weight;
    // Endpoints present at start take full traffic at once; slow start is for ones that
    // become healthy later.
    state.healthy_since = now - options_.slow_start_window;
    endpoints_.push_back(std::move(state));
  }
}

void EndpointSet::set_healthy(std::size_t i, bool healthy) {
  EndpointState& endpoint = endpoints_[i];
  if (endpoint.healthy == healthy) return;
  endpoint.healthy = healthy;
  typical_dirty_ = true;
  if (healthy) {
    endpoint.healthy_since = clock_.now();
    restart_latency(i, endpoint.healthy_since);
  }
  dirty_ = true;
}

void EndpointSet::eject(std::size_t i, TimePoint until) {
  typical_dirty_ = true;
  endpoints_[i].ejected_until = until;
  dirty_ = true;
}

void EndpointSet::uneject(std::size_t i) {
  if (endpoints_[i].ejected_until == TimePoint::min()) return;
  endpoints_[i].ejected_until = TimePoint::min();
  endpoints_[i].healthy_since = clock_.now();
  restart_latency(i, endpoints_[i].healthy_since);
  dirty_ = true;
}

void EndpointSet::on_start(std::size_t i) {
  ++endpoints_[i].active_requests;
  ++endpoints_[i].requests_total;
}

void EndpointSet::on_complete(std::size_t i, bool success, Duration latency) {
  EndpointState& endpoint = endpoints_[i];
  if (endpoint.active_requests > 0) --endpoint.active_requests;
  if (!success) ++endpoint.failures_total;
  const TimePoint now = clock_.now();
  if (endpoint.latency.has_samples() &&
      now - endpoint.latency.last_sample() > options_.latency_stale_after) {
    // The first news after a quiet spell replaces the stale estimate: mixed in with the weight
    // of a short gap, one fast answer would barely move a one-second peak, and the endpoint
    // would wait for the next probe to be forgiven a little more.
    endpoint.latency.reset(static_cast<double>(latency.count()), now, now - latency);
  } else {
    endpoint.latency.observe(latency, now, options_.latency_decay);
  }
}

bool EndpointSet::latency_stale(std::size_t i) const {
  const PeakEwma& latency = endpoints_[i].latency;
  return !latency.has_samples() ||
         clock_.now() - latency.last_sample() > options_.latency_stale_after;
}

double EndpointSet::latency_estimate_ns(std::size_t i) {
  const TimePoint now = clock_.now();
  const PeakEwma& latency = endpoints_[i].latency;
  const double typical = cached_typical_ns(i, now);
  if (!latency.has_samples()) return typical;
  if (typical <= 0) return latency.value();  // nothing to compare with: keep what we know
  // Without news an endpoint is assumed to become typical again: a peak fades (a slow moment
  // is forgiven), a trough too (a fast moment is not counted on forever).
  const Duration age = now - latency.last_sample();
  if (age <= Duration::zero()) return latency.value();
  const double kept = std::exp(-static_cast<double>(age.count()) /
                               static_cast<double>(options_.latency_decay.count()));
  return typical + (latency.value() - typical) * kept;
}

double EndpointSet::typical_latency_ns(std::size_t i) {
  const TimePoint now = clock_.now();
  collect_typical(now);
  return median_without(i);
}

void EndpointSet::collect_typical(TimePoint now) {
  // Fresh estimates of endpoints in service first; stale ones only when there is nothing else.
  for (bool fresh_only : {true, false}) {
    typical_values_.clear();
    typical_members_.assign(endpoints_.size(), false);
    for (std::size_t other = 0; other < endpoints_.size(); ++other) {
      const EndpointState& endpoint = endpoints_[other];
      if (!endpoint.healthy || endpoint.ejected_until > now || !endpoint.latency.has_samples()) {
        continue;
      }
      if (fresh_only && now - endpoint.latency.last_sample() > options_.latency_stale_after) {
        continue;
      }
      typical_values_.push_back(endpoint.latency.value());
      typical_members_[other] = true;
    }
    if (!typical_values_.empty()) break;
  }
  std::sort(typical_values_.begin(), typical_values_.end());
  typical_at_ = now;
}

double EndpointSet::median_without(std::size_t i) const {
  // The median of the collected values with endpoint i's own left out, if it is among them.
  std::size_t count = typical_values_.size();
  std::size_t skip = count;  // index of i's value, or none
  if (typical_members_[i]) {
    skip = static_cast<std::size_t>(std::lower_bound(typical_values_.begin(), typical_values_.end(),
                                                     endpoints_[i].latency.value()) -
                                    typical_values_.begin());
    --count;
  }
  if (count == 0) return 0;
  auto at = [&](std::size_t k) { return typical_values_[k < skip ? k : k + 1]; };
  return count % 2 == 1 ? at(count / 2) : (at(count / 2 - 1) + at(count / 2)) / 2;
}

double EndpointSet::cached_typical_ns(std::size_t i, TimePoint now) {
  // The typical latency moves slowly; collecting it on every read would make a pick O(n).
  if (typical_dirty_ || now - typical_at_ >= kTypicalRefresh || now < typical_at_) {
    collect_typical(now);
    typical_dirty_ = false;
  }
  // The cached values may predate i's latest sample; then i is not found where it was, and
  // leaving out the nearest value instead is close enough until the next refresh.
  return median_without(i);
}

void EndpointSet::restart_latency(std::size_t i, TimePoint now) {
  collect_typical(now);
  typical_dirty_ = true;  // i's own value changes below
  const double typical = median_without(i);
  if (typical > 0) {
    endpoints_[i].latency.reset(typical, now, now);
  } else {
    endpoints_[i].latency.clear();
  }
}

void EndpointSet::on_cancel(std::size_t i) {
  EndpointState& endpoint = endpoints_[i];
  if (endpoint.active_requests > 0) --endpoint.active_requests;
}

void EndpointSet::refresh(TimePoint now) {
  if (!dirty_ && now < next_expiry_) return;
  std::vector<std::size_t> fresh;
  next_expiry_ = TimePoint::max();
  for (std::size_t i = 0; i < endpoints_.size(); ++i) {
    EndpointState& endpoint = endpoints_[i];
    if (endpoint.ejected_until != TimePoint::min() && endpoint.ejected_until <= now) {
      // The ejection ran out: back in, ramping up like any endpoint that just recovered.
      endpoint.ejected_until = TimePoint::min();
      endpoint.healthy_since = now;
      restart_latency(i, now);
    }
    if (endpoint.ejected_until > now) next_expiry_ = std::min(next_expiry_, endpoint.ejected_until);
    if (endpoint.healthy && endpoint.ejected_until <= now) fresh.push_back(i);
  }
  bool panic = !endpoints_.empty() &&
               static_cast<double>(fresh.size()) * 100.0 <
                   options_.panic_threshold_percent * static_cast<double>(endpoints_.size());
  if (panic) {
    fresh.resize(endpoints_.size());
    for (std::size_t i = 0; i < endpoints_.size(); ++i) fresh[i] = i;
  }
  if (fresh != eligible_ || panic != panic_) {
    eligible_ = std::move(fresh);
    panic_ = panic;
    ++version_;
  }
  slow_start_until_ = TimePoint::min();
  if (options_.slow_start_window > Duration::zero()) {
    for (std::size_t i : eligible_) {
      TimePoint ramped = endpoints_[i].healthy_since + options_.slow_start_window;
      if (ramped > now) slow_start_until_ = std::max(slow_start_until_, ramped);
    }
  }
  dirty_ = false;
}

const std::vector<std::size_t>& EndpointSet::eligible() {
  if (dirty_ || next_expiry_ != TimePoint::max()) refresh(clock_.now());
  return eligible_;
}

bool EndpointSet::slow_starting() {
  if (slow_start_until_ == TimePoint::min()) return false;
  if (clock_.now() < slow_start_until_) return true;
  slow_start_until_ = TimePoint::min();
  return false;
}

double EndpointSet::effective_weight(std::size_t i) {
  const EndpointState& endpoint = endpoints_[i];
  const auto weight = static_cast<double>(endpoint.weight);
  if (!slow_starting()) return weight;
  Duration elapsed = clock_.now() - endpoint.healthy_since;
  if (elapsed >= options_.slow_start_window) return weight;
  double progress = std::max(0.0, static_cast<double>(elapsed.count()) /
                                      static_cast<double>(options_.slow_start_window.count()));
  double ramp = std::pow(progress, 1.0 / options_.slow_start_aggression);
  return weight * std::max(options_.slow_start_min_weight_percent / 100.0, ramp);
}

}  // namespace keel::balance

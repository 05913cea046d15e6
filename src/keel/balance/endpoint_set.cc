#include "keel/balance/endpoint_set.h"

#include <algorithm>
#include <cmath>

#include "keel/core/check.h"

namespace keel::balance {

void PeakEwma::observe(Duration latency, TimePoint now, Duration decay) {
  const auto sample = static_cast<double>(latency.count());
  if (!has_samples()) {
    cost_ns_ = sample;
  } else if (sample > cost_ns_) {
    cost_ns_ = sample;
  } else {
    double elapsed = static_cast<double>(std::max(Duration::zero(), now - stamp_).count());
    double w = std::exp(-elapsed / static_cast<double>(decay.count()));
    cost_ns_ = cost_ns_ * w + sample * (1 - w);
  }
  stamp_ = now;
}

double PeakEwma::value(TimePoint now, Duration decay) const {
  if (!has_samples()) return 0;
  double elapsed = static_cast<double>(std::max(Duration::zero(), now - stamp_).count());
  return cost_ns_ * std::exp(-elapsed / static_cast<double>(decay.count()));
}

EndpointSet::Options EndpointSet::Options::read(const config::Node& node) {
  Options o;
  node.read("panic_threshold_percent", o.panic_threshold_percent, 0.0, 100.0);
  node.read_ms("slow_start_window_ms", o.slow_start_window, Duration::zero(), 1h);
  node.read("slow_start_min_weight_percent", o.slow_start_min_weight_percent, 1.0, 100.0);
  node.read("slow_start_aggression", o.slow_start_aggression, 0.01, 100.0);
  node.read_ms("latency_decay_ms", o.latency_decay, 1ms, 1h);
  node.expect_only({"panic_threshold_percent", "slow_start_window_ms",
                    "slow_start_min_weight_percent", "slow_start_aggression", "latency_decay_ms"});
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
  if (healthy) endpoint.healthy_since = clock_.now();
  dirty_ = true;
}

void EndpointSet::eject(std::size_t i, TimePoint until) {
  endpoints_[i].ejected_until = until;
  dirty_ = true;
}

void EndpointSet::uneject(std::size_t i) {
  if (endpoints_[i].ejected_until == TimePoint::min()) return;
  endpoints_[i].ejected_until = TimePoint::min();
  endpoints_[i].healthy_since = clock_.now();
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
  endpoint.latency.observe(latency, clock_.now(), options_.latency_decay);
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

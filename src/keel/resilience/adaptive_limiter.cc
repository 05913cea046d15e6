#include "keel/resilience/adaptive_limiter.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "keel/core/check.h"

namespace keel::resilience {
namespace {

// Samples averaged plainly before the long-term latency switches to an exponential average, so
// the first few samples do not each carry a 2/(window+1) weight against an empty start.
constexpr std::uint32_t kWarmupSamples = 10;

void count(metrics::Counter* counter) {
  if (counter != nullptr) counter->inc();
}

std::uint32_t whole_calls(double limit) {
  constexpr double kMost = std::numeric_limits<std::uint32_t>::max();
  return static_cast<std::uint32_t>(std::clamp(std::floor(limit), 1.0, kMost));
}

Status invalid(std::string message) {
  return Error(keel::errc::invalid_argument, std::move(message));
}

Status validate_limits(double min_limit, double initial_limit, double max_limit) {
  if (!(min_limit >= 1 && min_limit <= initial_limit && initial_limit <= max_limit)) {
    return invalid("limits must satisfy 1 <= min_limit <= initial_limit <= max_limit, got " +
                   std::to_string(min_limit) + ", " + std::to_string(initial_limit) + ", " +
                   std::to_string(max_limit));
  }
  return ok_status();
}

void read_limits(const config::Node& node, double& initial_limit, double& min_limit,
                 double& max_limit) {
  node.read("initial_limit", initial_limit, 1.0);
  node.read("min_limit", min_limit, 1.0);
  node.read("max_limit", max_limit, 1.0);
}

// Records validate()'s complaint and falls back to the defaults, so that what read_config()
// returns can always be constructed.
template <typename Config>
Config checked(const config::Node& node, Config config) {
  if (Status status = config.validate(); !status) {
    node.fail("", status.error().message());
    return Config{};
  }
  return config;
}

}  // namespace

// ---- LimitAlgorithm ----

std::unique_ptr<LimitAlgorithm> LimitAlgorithm::make(std::string_view name) {
  if (name == "aimd") return std::make_unique<AimdLimit>();
  if (name == "gradient") return std::make_unique<GradientLimit>();
  return nullptr;
}

std::unique_ptr<LimitAlgorithm> LimitAlgorithm::make(std::string_view name,
                                                     const config::Node& node) {
  if (name == "aimd") return std::make_unique<AimdLimit>(AimdLimit::read_config(node));
  if (name == "gradient") return std::make_unique<GradientLimit>(GradientLimit::read_config(node));
  return nullptr;
}

// ---- AimdLimit ----

Status AimdLimit::Config::validate() const {
  if (Status limits = validate_limits(min_limit, initial_limit, max_limit); !limits) return limits;
  if (!(backoff_ratio > 0 && backoff_ratio < 1)) {
    return invalid("backoff_ratio must lie strictly between 0 and 1, got " +
                   std::to_string(backoff_ratio));
  }
  if (timeout <= Duration::zero()) return invalid("timeout must be positive");
  return ok_status();
}

AimdLimit::Config AimdLimit::read_config(const config::Node& node) {
  Config config;
  read_limits(node, config.initial_limit, config.min_limit, config.max_limit);
  node.read("backoff_ratio", config.backoff_ratio, 0.0, 1.0);
  node.read_ms("timeout_ms", config.timeout, 1ms);
  node.expect_only({"initial_limit", "min_limit", "max_limit", "backoff_ratio", "timeout_ms"});
  return checked(node, config);
}

AimdLimit::AimdLimit(Config config) : config_(config) {
  KEEL_CHECK(config_.validate().ok(), "invalid AimdLimit::Config (see Config::validate())");
}

double AimdLimit::update(double limit, Duration rtt, std::uint32_t inflight, bool dropped) {
  if (dropped || rtt > config_.timeout) {
    limit *= config_.backoff_ratio;
  } else if (2.0 * inflight >= limit) {
    limit += 1;
  }
  return std::clamp(limit, config_.min_limit, config_.max_limit);
}

// ---- GradientLimit ----

Status GradientLimit::Config::validate() const {
  if (Status limits = validate_limits(min_limit, initial_limit, max_limit); !limits) return limits;
  if (!(smoothing > 0 && smoothing <= 1)) {
    return invalid("smoothing must lie in (0, 1], got " + std::to_string(smoothing));
  }
  if (!(rtt_tolerance >= 1)) {
    return invalid("rtt_tolerance must be at least 1, got " + std::to_string(rtt_tolerance));
  }
  if (long_window < 1) return invalid("long_window must be at least 1");
  if (queue_size && !(*queue_size >= 0)) return invalid("queue_size must not be negative");
  return ok_status();
}

GradientLimit::Config GradientLimit::read_config(const config::Node& node) {
  Config config;
  read_limits(node, config.initial_limit, config.min_limit, config.max_limit);
  node.read("smoothing", config.smoothing, std::numeric_limits<double>::min(), 1.0);
  node.read("rtt_tolerance", config.rtt_tolerance, 1.0);
  node.read("long_window", config.long_window, 1);
  double queue_size = std::numeric_limits<double>::quiet_NaN();
  node.read("queue_size", queue_size, 0.0);
  if (!std::isnan(queue_size)) config.queue_size = queue_size;
  node.expect_only({"initial_limit", "min_limit", "max_limit", "smoothing", "rtt_tolerance",
                    "long_window", "queue_size"});
  return checked(node, config);
}

GradientLimit::GradientLimit(Config config) : config_(config) {
  KEEL_CHECK(config_.validate().ok(), "invalid GradientLimit::Config (see Config::validate())");
}

double GradientLimit::update(double limit, Duration rtt, std::uint32_t inflight, bool dropped) {
  double target = 0;
  if (dropped) {
    // A failure's latency says nothing about queueing (it may be an instant refusal), so it
    // stays out of the long-term average; no headroom, so a drop never raises the limit.
    target = limit * 0.5;
  } else {
    double short_rtt = std::max(static_cast<double>(rtt.count()), 1.0);
    if (samples_ < kWarmupSamples) {
      long_rtt_ns_ = (long_rtt_ns_ * samples_ + short_rtt) / (samples_ + 1);
      ++samples_;
    } else {
      double factor = 2.0 / (config_.long_window + 1.0);
      long_rtt_ns_ = long_rtt_ns_ * (1 - factor) + short_rtt * factor;
    }
    double long_rtt = long_rtt_ns_;
    // After a long overload the long-term latency sits far above the recovered one; pulling
    // it down faster than the window would lets the limit recover sooner.
    if (long_rtt / short_rtt > 2) long_rtt_ns_ *= 0.95;

    if (inflight < limit / 2) return std::clamp(limit, config_.min_limit, config_.max_limit);

    double gradient = std::clamp(config_.rtt_tolerance * long_rtt / short_rtt, 0.5, 1.0);
    double queue_size = config_.queue_size ? *config_.queue_size : std::sqrt(limit);
    target = limit * gradient + queue_size;
  }
  double next = limit * (1 - config_.smoothing) + target * config_.smoothing;
  return std::clamp(next, config_.min_limit, config_.max_limit);
}

Duration GradientLimit::long_rtt() const {
  return Duration(static_cast<Duration::rep>(std::llround(long_rtt_ns_)));
}

// ---- LimiterPermit ----

LimiterPermit& LimiterPermit::operator=(LimiterPermit&& other) noexcept {
  if (this != &other) {
    if (limiter_ != nullptr) limiter_->release();
    limiter_ = std::exchange(other.limiter_, nullptr);
    inflight_ = other.inflight_;
    started_at_ = other.started_at_;
  }
  return *this;
}

LimiterPermit::~LimiterPermit() {
  if (limiter_ != nullptr) limiter_->release();
}

// ---- ConcurrencyLimiter ----

ConcurrencyLimiter::ConcurrencyLimiter(std::string name, std::unique_ptr<LimitAlgorithm> algorithm,
                                       Clock& clock)
    : name_(std::move(name)), algorithm_(std::move(algorithm)), clock_(clock) {
  KEEL_CHECK(algorithm_ != nullptr, "ConcurrencyLimiter needs a LimitAlgorithm");
  estimated_limit_ = algorithm_->initial_limit();
  limit_.store(whole_calls(estimated_limit_), std::memory_order_relaxed);
}

Admission<LimiterPermit> ConcurrencyLimiter::acquire() {
  std::uint32_t inflight = inflight_.load(std::memory_order_relaxed);
  do {
    if (inflight >= limit_.load(std::memory_order_relaxed)) {
      count(rejected_);
      return Rejection{errc::limit_exceeded};
    }
  } while (!inflight_.compare_exchange_weak(inflight, inflight + 1, std::memory_order_acquire,
                                            std::memory_order_relaxed));
  count(permitted_);
  return LimiterPermit(this, inflight + 1, clock_.now());
}

void ConcurrencyLimiter::record(LimiterPermit permit, Outcome outcome, Duration latency) {
  KEEL_CHECK(permit.limiter_ == this,
             "record() needs an unrecorded permit that this limiter issued");
  permit.limiter_ = nullptr;
  if (outcome == Outcome::kSuccess || outcome == Outcome::kFailure) {
    bool dropped = outcome == Outcome::kFailure;
    if (dropped) count(dropped_);
    std::lock_guard lock(mutex_);
    estimated_limit_ = algorithm_->update(estimated_limit_, latency, permit.inflight_, dropped);
    limit_.store(whole_calls(estimated_limit_), std::memory_order_relaxed);
  }
  release();
}

void ConcurrencyLimiter::record(LimiterPermit permit, Outcome outcome) {
  Duration latency = clock_.now() - permit.started_at();
  record(std::move(permit), outcome, latency);
}

double ConcurrencyLimiter::estimated_limit() const {
  std::lock_guard lock(mutex_);
  return estimated_limit_;
}

void ConcurrencyLimiter::bind_metrics(metrics::Registry& registry) {
  const metrics::Labels labels = {{"limiter", name_}};
  auto calls = [&](const char* result) {
    return &registry.counter("keel_adaptive_limiter_calls_total",
                             "Calls through an adaptive concurrency limiter, by admission and "
                             "drops.",
                             {{"limiter", name_}, {"result", result}});
  };
  permitted_ = calls("permitted");
  rejected_ = calls("rejected");
  dropped_ = calls("dropped");
  gauges_.push_back(registry.gauge_callback("keel_adaptive_limiter_limit",
                                            "Calls an adaptive limiter admits at once right now.",
                                            labels, [this] { return limit(); }));
  gauges_.push_back(registry.gauge_callback("keel_adaptive_limiter_inflight",
                                            "Calls in flight through an adaptive limiter.", labels,
                                            [this] { return inflight(); }));
}

}  // namespace keel::resilience

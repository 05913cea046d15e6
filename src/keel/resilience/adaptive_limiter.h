// Adaptive concurrency limit: instead of a fixed bulkhead size, find the concurrency a
// dependency can take from the latency it shows, in the manner of Netflix's concurrency-limits
// library and Envoy's adaptive concurrency filter.
//
// A `ConcurrencyLimiter` admits a call while fewer than `limit()` calls are in flight. Every
// finished call is a sample (latency, calls in flight when it started, whether it was
// dropped), and a `LimitAlgorithm` turns the samples into a new limit:
//
//   AimdLimit      additive increase while the limit is being used, multiplicative decrease on
//                  a drop (a failure, or a latency above `timeout`). Simple and robust.
//   GradientLimit  Netflix's Gradient2: compares the latest latency with a long-term average and
//                  shrinks the limit as queueing pushes latency up, grows it while latency stays
//                  near the long-term level.
//
//   auto limiter = ConcurrencyLimiter("search", std::make_unique<GradientLimit>(), clock);
//   auto admission = limiter.acquire();
//   if (!admission) return admission.rejection().to_error(limiter.name(), clock.now());
//   ... make the call ...
//   limiter.record(std::move(admission).permit(), Outcome::kSuccess, latency);
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/config.h"
#include "keel/core/metrics.h"
#include "keel/core/thread_stripe.h"
#include "keel/resilience/outcome.h"

namespace keel::resilience {

// Turns samples into a limit. Implementations keep their own state (such as a long-term
// latency) and need not be thread-safe: a ConcurrencyLimiter calls them under its lock.
class LimitAlgorithm {
 public:
  virtual ~LimitAlgorithm() = default;

  // The limit before any sample.
  virtual double initial_limit() const = 0;
  // Returns the new limit given the current one and a sample: `rtt` is the call's latency,
  // `inflight` the calls in flight when it was admitted (itself included), `dropped` whether it
  // failed in a way that suggests overload.
  virtual double update(double limit, Duration rtt, std::uint32_t inflight, bool dropped) = 0;
  virtual const char* name() const = 0;

  // "aimd" or "gradient" with default settings; nullptr for any other name.
  static std::unique_ptr<LimitAlgorithm> make(std::string_view name);
  // The same, with settings read from `node` (see each algorithm's read_config()); mistakes are
  // recorded in the node's document. Returns nullptr for an unknown name without recording.
  static std::unique_ptr<LimitAlgorithm> make(std::string_view name, const config::Node& node);
};

class AimdLimit final : public LimitAlgorithm {
 public:
  struct Config {
    double initial_limit = 20;
    double min_limit = 1;
    double max_limit = 1000;
    // On a drop the limit is multiplied by this, in (0, 1).
    double backoff_ratio = 0.9;
    // A call slower than this counts as a drop.
    Duration timeout = 5s;

    // Ok, or what is out of range: needs 1 <= min_limit <= initial_limit <= max_limit,
    // 0 < backoff_ratio < 1 and a positive timeout.
    Status validate() const;
  };
  // Fields initial_limit, min_limit, max_limit, backoff_ratio and timeout_ms, over the
  // defaults. Mistakes, validate()'s included, are recorded in the node's document; an invalid
  // combination gives the defaults, so the result can always be constructed.
  static Config read_config(const config::Node& node);

  AimdLimit() : AimdLimit(Config{}) {}
  // Aborts when `config` is not valid.
  explicit AimdLimit(Config config);

  double initial_limit() const override { return config_.initial_limit; }
  // On a drop: limit * backoff_ratio. Otherwise +1, but only when at least half the limit was
  // in use, so an idle period cannot inflate the limit. Clamped to [min_limit, max_limit].
  double update(double limit, Duration rtt, std::uint32_t inflight, bool dropped) override;
  const char* name() const override { return "aimd"; }

 private:
  Config config_;
};

class GradientLimit final : public LimitAlgorithm {
 public:
  struct Config {
    double initial_limit = 20;
    double min_limit = 1;
    double max_limit = 1000;
    // Weight of each update's target in the new limit, in (0, 1].
    double smoothing = 0.2;
    // How much the latest latency may exceed the long-term one before the limit shrinks (>= 1).
    double rtt_tolerance = 1.5;
    // Samples the long-term latency averages over (exponentially).
    std::uint32_t long_window = 600;
    // Headroom added to the target so the limit keeps probing upward; unset means
    // sqrt(limit).
    std::optional<double> queue_size;

    // Ok, or what is out of range: needs 1 <= min_limit <= initial_limit <= max_limit,
    // 0 < smoothing <= 1, rtt_tolerance >= 1, long_window >= 1 and queue_size >= 0.
    Status validate() const;
  };
  // Fields initial_limit, min_limit, max_limit, smoothing, rtt_tolerance, long_window and
  // queue_size, over the defaults; mistakes are recorded as for AimdLimit::read_config().
  static Config read_config(const config::Node& node);

  GradientLimit() : GradientLimit(Config{}) {}
  // Aborts when `config` is not valid.
  explicit GradientLimit(Config config);

  double initial_limit() const override { return config_.initial_limit; }
  // Per sample: the long-term latency moves toward `rtt`, and decays faster while it exceeds
  // twice `rtt` (load has gone away). When fewer than half the limit are in flight the limit is
  // left alone: the caller is not using it, so latency says nothing about it. Otherwise
  // gradient = clamp(rtt_tolerance * long / rtt, 0.5, 1), target = limit * gradient +
  // queue_size, and the limit moves `smoothing` of the way to the target. A drop counts as
  // gradient 0.5 with no headroom, whatever the load, and does not feed the long-term latency.
  double update(double limit, Duration rtt, std::uint32_t inflight, bool dropped) override;
  const char* name() const override { return "gradient"; }

  // The long-term latency; zero before the first sample.
  Duration long_rtt() const;

 private:
  Config config_;
  // Exponential average of latencies in nanoseconds; a plain mean over the first samples.
  double long_rtt_ns_ = 0;
  std::uint32_t samples_ = 0;
};

class ConcurrencyLimiter;

// The right to make one call through a ConcurrencyLimiter. Move-only. Hand it back with
// ConcurrencyLimiter::record(); a permit destroyed unrecorded is released as cancelled (no
// sample). A permit must not outlive its limiter.
class LimiterPermit {
 public:
  LimiterPermit() = default;
  LimiterPermit(LimiterPermit&& other) noexcept
      : limiter_(std::exchange(other.limiter_, nullptr)),
        inflight_(other.inflight_),
        started_at_(other.started_at_) {}
  LimiterPermit& operator=(LimiterPermit&& other) noexcept;
  LimiterPermit(const LimiterPermit&) = delete;
  LimiterPermit& operator=(const LimiterPermit&) = delete;
  ~LimiterPermit();

  bool held() const { return limiter_ != nullptr; }
  // Calls in flight when this one was admitted, itself included.
  std::uint32_t inflight() const { return inflight_; }
  TimePoint started_at() const { return started_at_; }

 private:
  friend class ConcurrencyLimiter;
  LimiterPermit(ConcurrencyLimiter* limiter, std::uint32_t inflight, TimePoint started_at)
      : limiter_(limiter), inflight_(inflight), started_at_(started_at) {}
  ConcurrencyLimiter* limiter_ = nullptr;
  std::uint32_t inflight_ = 0;
  TimePoint started_at_;
};

// Admits calls while fewer than limit() are in flight; the limit follows the samples.
//
// Thread-safety: every method may be called from any thread, except bind_metrics() (set-up
// only). acquire() is lock-free (a compare-and-swap on the in-flight count, checked against an
// atomic limit), so with the limit unchanged no more than limit() permits are ever out.
// record() takes a lock to run the algorithm.
class ConcurrencyLimiter {
 public:
  // `clock` stamps each permit's start (for the record() that measures latency itself) and
  // must outlive the limiter. Aborts when `algorithm` is null.
  ConcurrencyLimiter(std::string name, std::unique_ptr<LimitAlgorithm> algorithm, Clock& clock);
  ConcurrencyLimiter(const ConcurrencyLimiter&) = delete;
  ConcurrencyLimiter& operator=(const ConcurrencyLimiter&) = delete;

  // A permit, or errc::limit_exceeded when limit() calls are already in flight.
  Admission<LimiterPermit> acquire();

  // Releases `permit` and, for kSuccess and kFailure, feeds the sample to the algorithm;
  // kFailure counts as a drop. kIgnored and kCancelled release without a sample. Aborts when
  // `permit` is empty or came from another limiter.
  void record(LimiterPermit permit, Outcome outcome, Duration latency);
  // The same with latency = clock.now() - permit.started_at().
  void record(LimiterPermit permit, Outcome outcome);

  // Whole calls: the algorithm's limit rounded down, at least 1.
  std::uint32_t limit() const { return limit_.load(std::memory_order_relaxed); }
  std::uint32_t inflight() const { return inflight_.load(std::memory_order_relaxed); }
  // The algorithm's limit before rounding.
  double estimated_limit() const;
  const std::string& name() const { return name_; }
  const LimitAlgorithm& algorithm() const { return *algorithm_; }

  // Registers, labelled limiter="<name>": gauges keel_adaptive_limiter_limit and
  // keel_adaptive_limiter_inflight, and the counter
  // keel_adaptive_limiter_calls_total{result="permitted|rejected|dropped"} (dropped: recorded as
  // kFailure). `registry` must outlive the limiter. Call once.
  void bind_metrics(metrics::Registry& registry);

 private:
  friend class LimiterPermit;
  void release() { inflight_.fetch_sub(1, std::memory_order_release); }

  const std::string name_;
  const std::unique_ptr<LimitAlgorithm> algorithm_;
  Clock& clock_;

  alignas(kNoFalseSharing) std::atomic<std::uint32_t> inflight_{0};
  std::atomic<std::uint32_t> limit_;

  alignas(kNoFalseSharing) mutable std::mutex mutex_;
  double estimated_limit_;

  metrics::Counter* permitted_ = nullptr;
  metrics::Counter* rejected_ = nullptr;
  metrics::Counter* dropped_ = nullptr;
  std::vector<metrics::CallbackRegistration> gauges_;
};

}  // namespace keel::resilience

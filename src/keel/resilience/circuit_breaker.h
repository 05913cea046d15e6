// Circuit Breaker: stops calling a dependency that is failing or slow, gives it time to
// recover, then lets a few probe calls through to decide whether to close again.
//
// Semantics follow resilience4j's CircuitBreaker, with the fixes its users asked for:
//
//   CLOSED ──(failure or slow-call rate ≥ threshold over ≥ minimum_calls,
//             or consecutive_failures in a row)──▶ OPEN
//   OPEN ──(open duration elapsed; a clock timer fires)──▶ HALF_OPEN
//   HALF_OPEN ──(all half_open_permitted_calls reported; rates below thresholds)──▶ CLOSED
//   HALF_OPEN ──(rates at or above a threshold, or half_open_max_wait elapsed)──▶ OPEN
//   DISABLED (always permits, records nothing), METRICS_ONLY (always permits, records, never
//   trips), FORCED_OPEN (always rejects) are entered and left only by an operator.
//
// Decide → act → record: `acquire()` returns a `BreakerPermit` or a `Rejection`; the caller makes
// the call however it likes and reports `record(std::move(permit), outcome, latency)`. A permit
// dropped without a record counts as cancelled. Each state change starts a new generation; a
// result whose permit came from an earlier generation is ignored, so calls admitted before the
// breaker opened cannot close it again or skew the next window.
//
// Thread-safety: every method may be called from any thread. In CLOSED, `acquire()` is one
// atomic load and recording a successful, fast call is a plain load and store to a counter of
// the calling thread's own: no lock, no allocation, no read-modify-write and no clock read. Each
// thread gathers such calls in a slot only it writes and adds them to the window in batches of
// up to 32, so threads do not fight over one cache line; every failure or slow call first folds
// in all pending successes from all threads, so the decision it triggers sees every call made so
// far. A run of successes can therefore reach the window (and a minimum-calls decision) up to
// one batch late. Rejections never throw and never allocate. State changes take a lock and call
// listeners after releasing it, on the thread that caused the change (a recording thread, an
// operator, or the clock's timer thread for OPEN → HALF_OPEN and the half-open time-out).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/config.h"
#include "keel/core/metrics.h"
#include "keel/core/random.h"
#include "keel/core/thread_stripe.h"
#include "keel/resilience/outcome.h"
#include "keel/resilience/sliding_window.h"

namespace keel::resilience {

enum class BreakerState : std::uint8_t {
  kClosed,
  kOpen,
  kHalfOpen,
  kDisabled,
  kForcedOpen,
  kMetricsOnly,
};
inline constexpr std::size_t kBreakerStateCount = 6;
const char* to_string(BreakerState state);

struct CircuitBreakerConfig {
  enum class WindowType { kCountBased, kTimeBased };

  WindowType window_type = WindowType::kCountBased;
  // The last `window_size` calls (count-based, at most 1,000,000) or the calls of the last
  // `window_size` seconds (time-based, at most 3600).
  std::uint32_t window_size = 100;
  // No rate is computed until the window holds this many calls (capped at window_size for
  // count-based windows).
  std::uint32_t minimum_calls = 100;
  // Percentages in (0, 100]: trip when the rate is at or above the threshold.
  double failure_rate_threshold = 50;
  double slow_call_rate_threshold = 100;
  // A call that takes longer than this is slow (whether it succeeded or failed).
  Duration slow_call_duration = 60s;
  // Trip after this many failures in a row regardless of the window; 0 turns it off.
  std::uint32_t consecutive_failures = 0;

  // How long OPEN lasts. With a multiplier above 1 it grows for each consecutive opening
  // (reset when the breaker closes) up to max_open_duration; jitter spreads it by ±fraction.
  Duration open_duration = 60s;
  double open_backoff_multiplier = 1.0;
  Duration max_open_duration = 10min;
  double open_jitter = 0.0;

  // Probe calls admitted in HALF_OPEN, at most 65535.
  std::uint32_t half_open_permitted_calls = 10;
  // A HALF_OPEN breaker whose probes have not all reported by then goes back to OPEN, so a
  // probe that never returns cannot wedge it. Zero waits forever (resilience4j's default; not
  // recommended).
  Duration half_open_max_wait = 60s;

  // Seeds the jitter of open durations.
  std::uint64_t random_seed = 0x6b65656c;

  // How record_error() counts an error: kFailure (the default when unset) or kIgnored, for
  // errors that say nothing about the dependency's health (a 404, a validation error).
  std::function<Outcome(const Error&)> classify;

  // Ok, or what is out of range.
  Status validate() const;
  // Reads the fields of `node` (names as above, durations as *_ms, window_type as
  // count_based/time_based) over the defaults; errors are recorded in the node's document,
  // including validate()'s.
  static CircuitBreakerConfig read(const config::Node& node);
};

class CircuitBreaker;

// The right to make one call. Move-only; destroying an unrecorded permit records it as
// cancelled (which, in HALF_OPEN, returns the probe slot).
class BreakerPermit {
 public:
  BreakerPermit() = default;
  BreakerPermit(BreakerPermit&& other) noexcept
      : breaker_(std::exchange(other.breaker_, nullptr)), word_(other.word_) {}
  BreakerPermit& operator=(BreakerPermit&& other) noexcept;
  ~BreakerPermit();

  // The state the call was admitted in.
  BreakerState state() const;

 private:
  friend class CircuitBreaker;
  BreakerPermit(CircuitBreaker* breaker, std::uint64_t word) : breaker_(breaker), word_(word) {}
  CircuitBreaker* breaker_ = nullptr;
  std::uint64_t word_ = 0;
};

struct BreakerTransition {
  BreakerState from;
  BreakerState to;
  const char* reason;  // static text, e.g. "failure rate reached the threshold"
};

class CircuitBreaker {
 public:
  // `clock` must outlive the breaker. The breaker schedules its OPEN → HALF_OPEN and half-open
  // time-out transitions on it.
  CircuitBreaker(std::string name, CircuitBreakerConfig config, Clock& clock);
  ~CircuitBreaker();
  CircuitBreaker(const CircuitBreaker&) = delete;
  CircuitBreaker& operator=(const CircuitBreaker&) = delete;

  Admission<BreakerPermit> acquire();
  // `latency` is the call's duration as the caller measured it.
  void record(BreakerPermit&& permit, Outcome outcome, Duration latency);
  // Records a call that failed with `error`, counted as config().classify says.
  void record_error(BreakerPermit&& permit, const Error& error, Duration latency);

  BreakerState state() const;
  const std::string& name() const { return name_; }
  const CircuitBreakerConfig& config() const { return config_; }

  // Operator transitions. Each starts a new generation.
  void transition_to_closed();
  void transition_to_open();
  void transition_to_half_open();
  void transition_to_disabled();
  void transition_to_forced_open();
  void transition_to_metrics_only();
  // Back to CLOSED with an empty window and the open backoff reset.
  void reset();

  struct Metrics {
    BreakerState state;
    // Percent, or -1 while fewer than minimum_calls are in the window.
    double failure_rate;
    double slow_call_rate;
    std::uint64_t buffered_calls;  // calls in the window
    std::uint64_t failed_calls;    // in the window
    std::uint64_t slow_calls;      // in the window
    // Since construction:
    std::uint64_t successful_calls_total;
    std::uint64_t failed_calls_total;
    std::uint64_t slow_calls_total;
    std::uint64_t ignored_calls_total;  // ignored or cancelled outcomes
    std::uint64_t not_permitted_calls_total;
    std::uint64_t stale_results_total;  // results from an earlier generation
  };
  Metrics metrics() const;

  // Listeners must be added before the breaker is shared between threads. They run outside
  // the breaker's lock and may call back into it.
  void on_state_change(std::function<void(const BreakerTransition&)> listener);
  // Called on every rejected acquire(): keep it cheap.
  void on_rejection(std::function<void(const Rejection&)> listener);

  // Exposes the breaker as keel_circuit_breaker_* series labelled breaker="<name>".
  // Call before sharing the breaker; the series disappear when it is destroyed.
  void bind_metrics(metrics::Registry& registry);

 private:
  friend class BreakerPermit;

  // state_word_ layout: generation (40 bits) | half-open permits left (16 bits) | state (8).
  static constexpr int kPermitShift = 8;
  static constexpr int kGenerationShift = 24;
  static BreakerState state_of(std::uint64_t word) {
    return static_cast<BreakerState>(word & 0xff);
  }
  static std::uint64_t generation_of(std::uint64_t word) { return word >> kGenerationShift; }
  static std::uint32_t permits_of(std::uint64_t word) {
    return static_cast<std::uint32_t>((word >> kPermitShift) & 0xffff);
  }

  Admission<BreakerPermit> reject(errc reason, TimePoint retry_at);
  void record_closed(std::uint64_t word, bool failed, bool slow);
  void record_half_open(std::uint64_t word, bool failed, bool slow);
  void return_half_open_permit(std::uint64_t word);
  // Which threshold the totals reach ("failure rate ..." / "slow-call rate ..."), or nullptr.
  const char* threshold_crossed(const WindowTotals& totals, std::uint64_t minimum_calls) const;

  // Moves to `to` if the state word still equals `expected` (any word when expected is 0).
  void transition(std::uint64_t expected, BreakerState to, const char* reason);
  // A state change made under mutex_; complete() finishes it after the lock is released:
  // cancels the timer the change made stale, then calls the listeners.
  struct Transition {
    BreakerTransition event;
    TimerId stale_timer = 0;
  };
  Transition transition_locked(BreakerState to, const char* reason);
  void on_timer(std::uint64_t expected_word, BreakerState to, const char* reason);
  void complete(const std::optional<Transition>& transition);

  const std::string name_;
  const CircuitBreakerConfig config_;
  Clock& clock_;
  const std::uint64_t minimum_calls_;

  // Read on every call, written only by transitions: nothing written per call may share its
  // cache line.
  alignas(kNoFalseSharing) std::atomic<std::uint64_t> state_word_;
  std::atomic<std::int64_t> retry_at_ns_{0};

  // Exactly one of the two, per config_.window_type.
  std::unique_ptr<CountWindow> count_window_;
  std::unique_ptr<TimeWindow> time_window_;
  alignas(kNoFalseSharing) std::atomic<std::uint32_t> consecutive_failures_{0};

  WindowTotals add_to_window(CallRecord call);
  WindowTotals add_successes_to_window(std::uint64_t count) const;
  // A successful, fast call admitted in CLOSED or METRICS_ONLY in the current generation.
  void record_fast_success(std::uint64_t word);
  void fold_pending_successes() const;
  // Drops the successes not yet in the window (the window is being emptied).
  void discard_pending_successes();

  // Successful, fast calls, per thread. The thread whose thread_slot_index() is i owns
  // owned_[i]: it alone writes `recorded` (a running total, so a plain load and store suffice),
  // and whoever adds the difference to the window advances `folded` to it with a
  // compare-and-swap, so each call reaches the window exactly once however many threads fold.
  // A thread that exits hands its index, and with it the running total, to the next thread.
  static constexpr std::size_t kOwnedSlots = 16;
  struct alignas(kNoFalseSharing) OwnedSlot {
    std::atomic<std::uint64_t> recorded{0};
    std::atomic<std::uint64_t> folded{0};
  };
  // Threads beyond the first kOwnedSlots share these, with an atomic add per call.
  static constexpr std::size_t kSharedStripes = 4;
  struct alignas(kNoFalseSharing) SharedStripe {
    std::atomic<std::uint32_t> count{0};
  };
  const std::uint32_t success_batch_;
  mutable std::array<OwnedSlot, kOwnedSlots> owned_;
  mutable std::array<SharedStripe, kSharedStripes> shared_;

  // Successes counted in owned_ are not counted here again; metrics() adds the two.
  metrics::Counter successful_;
  metrics::Counter failed_;
  metrics::Counter slow_;
  metrics::Counter ignored_;
  metrics::Counter not_permitted_;
  metrics::Counter stale_;

  std::atomic<bool> has_rejection_listeners_{false};
  std::vector<std::function<void(const Rejection&)>> rejection_listeners_;
  std::vector<std::function<void(const BreakerTransition&)>> state_listeners_;

  // Guards transitions and the half-open tallies.
  std::mutex mutex_;
  std::uint32_t half_open_calls_ = 0;
  std::uint32_t half_open_failures_ = 0;
  std::uint32_t half_open_slow_ = 0;
  std::uint32_t consecutive_opens_ = 0;
  TimerId pending_timer_ = 0;
  bool closing_ = false;
  Random random_;

  std::vector<metrics::CallbackRegistration> registrations_;
};

}  // namespace keel::resilience

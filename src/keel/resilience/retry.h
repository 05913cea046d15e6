// Retries: how long to wait between attempts (Backoff), whether to try again (RetryPolicy, one
// per logical call), and how many retries a whole client may add on top of its traffic
// (RetryBudget, shared).
//
// A RetryPolicy is a state machine with no I/O: the caller makes the attempts, sleeps the
// delays and enforces the deadlines however it likes (blocking, coroutine, timer), and asks the
// policy after each attempt whether to go on:
//
//   RetryPolicy policy(config, clock, random, &budget);
//   Attempt attempt = policy.start();
//   for (;;) {
//     auto result = call_upstream(attempt.deadline);
//     RetryDecision decision = result.ok() ? policy.next(Outcome::kSuccess)
//                                          : policy.next(result.error());
//     if (!decision.retry) break;   // report result (or *decision.reason) to the caller
//     sleep_for(decision.delay);
//     attempt.deadline = decision.attempt_deadline;
//   }
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>

#include "keel/core/clock.h"
#include "keel/core/config.h"
#include "keel/core/metrics.h"
#include "keel/core/random.h"
#include "keel/core/result.h"
#include "keel/resilience/outcome.h"

namespace keel::resilience {

struct BackoffConfig {
  enum class Kind {
    // Always `base`, jittered.
    kConstant,
    // base * multiplier^(retry - 1), capped at `max`, jittered.
    kExponential,
    // min(max, uniform(base, 3 * previous delay)), as in the AWS Architecture Blog's
    // "Exponential Backoff And Jitter". Random by construction; `jitter` is not used.
    kDecorrelatedJitter,
  };
  Kind kind = Kind::kExponential;
  Duration base = 100ms;
  Duration max = 10s;
  // Growth per retry for kExponential; at least 1.
  double multiplier = 2.0;
  // For kConstant and kExponential: the delay is scaled by (1 + jitter * u), u uniform in
  // [-1, 1), then capped at `max`. From 0 (none) to 1.
  double jitter = 0.5;
};

// Computes retry delays. Immutable and cheap; every call takes the caller's Random, so one
// Backoff may be shared by threads that each bring their own generator.
class Backoff {
 public:
  // Aborts on a config read_config() would reject (negative durations, multiplier < 1,
  // jitter outside [0, 1]).
  explicit Backoff(BackoffConfig config);

  // The delay before retry `retry_number` (1 for the first retry). `previous_delay` is the
  // delay returned for the previous retry (or `base` for the first); only kDecorrelatedJitter
  // reads it. The result is never negative and never above `max`.
  Duration delay(std::uint32_t retry_number, Duration previous_delay, Random& random) const;

  const BackoffConfig& config() const { return config_; }

 private:
  BackoffConfig config_;
};

class RetryBudget;

struct RetryConfig {
  // Attempts per logical call, including the first. From 1 (never retry).
  std::uint32_t max_attempts = 3;
  BackoffConfig backoff;
  // Time allowed for each attempt; zero means no per-attempt limit.
  Duration per_attempt_timeout = Duration::zero();
  // Time allowed for the whole call, attempts and delays included, from start(); zero means
  // no limit.
  Duration overall_timeout = Duration::zero();
  // Which errors are worth retrying, for RetryPolicy::next(const Error&). Empty: every error.
  // Callers that classify results themselves pass an Outcome to next() instead.
  std::function<bool(const Error&)> retry_on;
};

// Where the next attempt stands.
struct Attempt {
  std::uint32_t number = 1;  // 1-based
  // When the caller should abandon this attempt: min(start + per_attempt_timeout, overall
  // deadline), or TimePoint::max() when neither is set.
  TimePoint deadline = TimePoint::max();
};

struct RetryDecision {
  // Make another attempt after `delay`.
  bool retry = false;
  // The call is over and nothing went wrong: the last attempt was kSuccess or kIgnored.
  bool done = false;
  Duration delay = Duration::zero();
  // Set only when this policy refused a retry the outcome asked for:
  //   retries_exhausted       max_attempts reached
  //   timeout                 the overall deadline leaves no room for the delay
  //   retry_budget_exhausted  the RetryBudget declined the withdrawal
  // Empty when the policy had no say: the call is done, was cancelled, or its error is not
  // retryable (retry_on returned false). Then the caller reports the last attempt's own result,
  // with its own error code, so a non-retryable error reaches the client as itself.
  std::optional<errc> reason;
  // When `retry`: the deadline of the next attempt, counted from when the delay ends.
  TimePoint attempt_deadline = TimePoint::max();
};

// Decides retries for one logical call. Not thread-safe: one call, one thread at a time (the
// budget it draws on may be shared). The clock, random generator and budget are borrowed and
// must outlive the policy; the Random must not be used by another thread meanwhile.
class RetryPolicy {
 public:
  // Aborts on a config read_config() would reject.
  RetryPolicy(RetryConfig config, Clock& clock, Random& random, RetryBudget* budget = nullptr);

  // Records the start of the call (the overall deadline counts from here) and deposits one
  // request into the budget. Call once, before the first attempt.
  Attempt start();

  // After each attempt, how it ended:
  //   kSuccess, kIgnored  no retry; `done`
  //   kCancelled          no retry; no reason (the caller gave up)
  //   kFailure            retry when attempts < max_attempts, the overall deadline is later
  //                       than now + delay, and the budget (if any) grants a withdrawal — in
  //                       that order, so a refused retry never spends budget.
  // Calling next() before start() or after a decision with retry == false aborts.
  RetryDecision next(Outcome outcome);
  // A failed attempt: no retry when `retry_on` is set and returns false for `error` (no
  // reason: the error stands for itself); otherwise as next(Outcome::kFailure).
  RetryDecision next(const Error& error);

  // The deadline of an attempt starting now: min(now + per_attempt_timeout, overall
  // deadline), or TimePoint::max() when neither is set.
  TimePoint attempt_deadline() const;
  // Attempts made or granted so far, the first included.
  std::uint32_t attempts() const { return attempts_; }

  // Reads max_attempts (1..100), backoff (constant | exponential | decorrelated_jitter),
  // base_backoff_ms, max_backoff_ms, backoff_multiplier (>= 1), jitter (0..1),
  // per_attempt_timeout_ms and overall_timeout_ms over the defaults. Unknown fields and bad
  // values are recorded as errors in the node's document; check its status().
  static RetryConfig read_config(const config::Node& node);

 private:
  TimePoint deadline_from(TimePoint start) const;
  void expect_running() const;
  RetryDecision stop(std::optional<errc> reason, bool done);

  RetryConfig config_;
  Backoff backoff_;
  Clock& clock_;
  Random& random_;
  RetryBudget* budget_;
  TimePoint overall_deadline_ = TimePoint::max();
  Duration previous_delay_;
  std::uint32_t attempts_ = 0;
  bool started_ = false;
  bool finished_ = false;
};

// Caps retries to a fraction of the requests seen over a sliding window, plus a floor so that
// a quiet client can still retry — Finagle's RetryBudget, Envoy's retry budget. Shared by
// every call to one upstream so that, when the upstream struggles, retries cannot multiply
// its load beyond (1 + budget_ratio).
//
// A withdrawal is granted when, over the window, one more retry still fits:
//   retries + 1 <= budget_ratio * requests + min_retries_per_second * window_seconds.
// Only whole retries count, as in Finagle: with budget_ratio 0.2 it takes five requests to
// earn one retry, so a trickle of traffic cannot retry every request.
// The window is kept as 10 buckets, so a deposit or withdrawal counts for between 9/10 of
// `window` and `window` before it ages out.
//
// Thread-safe: every method may be called from any thread (a mutex; each call is O(10)).
class RetryBudget {
 public:
  struct Config {
    // Retries allowed per request, from 0 to 1.
    double budget_ratio = 0.2;
    // Retries allowed even with no traffic, per second of window.
    std::uint32_t min_retries_per_second = 3;
    Duration window = 10s;
  };

  // The clock is borrowed and must outlive the budget. Aborts on a config read_config() would
  // reject. `name` labels the metrics.
  RetryBudget(std::string name, Config config, Clock& clock);
  RetryBudget(const RetryBudget&) = delete;
  RetryBudget& operator=(const RetryBudget&) = delete;

  // One per original request (RetryPolicy::start() does it).
  void deposit();
  // One per retry (RetryPolicy::next() does it); true when the retry may go ahead.
  bool try_withdraw();
  // Retries still allowed in the current window, fractional; negative when the requests that
  // paid for recent retries have aged out. A withdrawal is granted when it is at least 1.
  double balance() const;

  const std::string& name() const { return name_; }
  const Config& config() const { return config_; }

  // Registers keel_retry_budget_balance{budget=<name>} (a gauge read at scrape time) and
  // keel_retry_budget_rejected_total{budget=<name>}. Call once, before the budget is shared
  // between threads; the registry must outlive the budget.
  void bind_metrics(metrics::Registry& registry);

  // Reads budget_ratio (0..1), min_retries_per_second and window_ms (>= 1) over the defaults;
  // errors are recorded in the node's document.
  static Config read_config(const config::Node& node);

 private:
  static constexpr std::size_t kBuckets = 10;
  struct Bucket {
    std::int64_t epoch = -1;
    std::uint64_t deposits = 0;
    std::uint64_t withdrawals = 0;
  };
  // Retires buckets older than the window and returns the current one.
  Bucket& current_locked(TimePoint now) const;
  double balance_locked(TimePoint now) const;

  const std::string name_;
  const Config config_;
  Clock& clock_;
  const TimePoint origin_;
  const Duration bucket_width_;
  const double floor_;

  mutable std::mutex mutex_;
  mutable std::array<Bucket, kBuckets> buckets_;

  metrics::Counter* rejected_ = nullptr;
  metrics::CallbackRegistration balance_gauge_;
};

}  // namespace keel::resilience

#include "keel/resilience/retry.h"

#include <algorithm>
#include <cmath>

#include "keel/core/check.h"

namespace keel::resilience {
namespace {

// Allowances are products of doubles (0.1 * 30 = 3.0000000000000004 but 0.7 * 10 =
// 6.9999999999999991); the tolerance keeps such rounding from refusing a whole retry.
constexpr double kBalanceEpsilon = 1e-9;

double nanoseconds(Duration d) { return static_cast<double>(d.count()); }

}  // namespace

Backoff::Backoff(BackoffConfig config) : config_(config) {
  KEEL_CHECK(config_.base >= Duration::zero(), "backoff base must not be negative");
  KEEL_CHECK(config_.max >= Duration::zero(), "backoff max must not be negative");
  KEEL_CHECK(config_.multiplier >= 1.0, "backoff multiplier must be at least 1");
  KEEL_CHECK(config_.jitter >= 0.0 && config_.jitter <= 1.0, "backoff jitter must be in [0, 1]");
}

Duration Backoff::delay(std::uint32_t retry_number, Duration previous_delay, Random& random) const {
  const double base = nanoseconds(config_.base);
  const double cap = nanoseconds(config_.max);
  auto jittered = [&](double delay) {
    if (config_.jitter == 0.0) return delay;
    return delay * (1.0 + config_.jitter * (2.0 * random.uniform01() - 1.0));
  };

  double delay = 0;
  switch (config_.kind) {
    case BackoffConfig::Kind::kConstant:
      delay = jittered(base);
      break;
    case BackoffConfig::Kind::kExponential: {
      const double exponent = retry_number > 1 ? retry_number - 1.0 : 0.0;
      delay = jittered(std::min(cap, base * std::pow(config_.multiplier, exponent)));
      break;
    }
    case BackoffConfig::Kind::kDecorrelatedJitter: {
      const double previous = std::max(base, nanoseconds(previous_delay));
      const double high = previous * 3.0;
      delay = high > base ? base + random.uniform01() * (high - base) : base;
      break;
    }
  }
  // Comparing before converting keeps huge doubles from overflowing the integer conversion.
  if (!(delay < cap)) return config_.max;
  if (delay <= 0) return Duration::zero();
  return Duration(static_cast<Duration::rep>(delay));
}

RetryPolicy::RetryPolicy(RetryConfig config, Clock& clock, Random& random, RetryBudget* budget)
    : config_(std::move(config)),
      backoff_(config_.backoff),
      clock_(clock),
      random_(random),
      budget_(budget),
      previous_delay_(config_.backoff.base) {
  KEEL_CHECK(config_.max_attempts >= 1, "max_attempts must be at least 1");
  KEEL_CHECK(config_.per_attempt_timeout >= Duration::zero(),
             "per_attempt_timeout must not be negative");
  KEEL_CHECK(config_.overall_timeout >= Duration::zero(), "overall_timeout must not be negative");
}

Attempt RetryPolicy::start() {
  KEEL_CHECK(!started_, "RetryPolicy::start() called twice; use one policy per call");
  started_ = true;
  attempts_ = 1;
  const TimePoint now = clock_.now();
  if (config_.overall_timeout > Duration::zero()) overall_deadline_ = now + config_.overall_timeout;
  if (budget_ != nullptr) budget_->deposit();
  return Attempt{attempts_, deadline_from(now)};
}

TimePoint RetryPolicy::deadline_from(TimePoint start) const {
  TimePoint deadline = overall_deadline_;
  if (config_.per_attempt_timeout > Duration::zero()) {
    deadline = std::min(deadline, start + config_.per_attempt_timeout);
  }
  return deadline;
}

TimePoint RetryPolicy::attempt_deadline() const { return deadline_from(clock_.now()); }

RetryDecision RetryPolicy::stop(std::optional<errc> reason, bool done) {
  finished_ = true;
  RetryDecision decision;
  decision.done = done;
  decision.reason = reason;
  return decision;
}

void RetryPolicy::expect_running() const {
  KEEL_CHECK(started_, "RetryPolicy::next() before start()");
  KEEL_CHECK(!finished_, "RetryPolicy::next() after the policy decided to stop");
}

RetryDecision RetryPolicy::next(Outcome outcome) {
  expect_running();
  switch (outcome) {
    case Outcome::kSuccess:
    case Outcome::kIgnored:
      return stop(std::nullopt, true);
    case Outcome::kCancelled:
      return stop(std::nullopt, false);
    case Outcome::kFailure:
      break;
  }

  if (attempts_ >= config_.max_attempts) return stop(errc::retries_exhausted, false);
  const Duration delay = backoff_.delay(attempts_, previous_delay_, random_);
  const TimePoint now = clock_.now();
  if (overall_deadline_ != TimePoint::max() && now + delay >= overall_deadline_) {
    return stop(errc::timeout, false);
  }
  if (budget_ != nullptr && !budget_->try_withdraw()) {
    return stop(errc::retry_budget_exhausted, false);
  }

  ++attempts_;
  previous_delay_ = delay;
  RetryDecision decision;
  decision.retry = true;
  decision.delay = delay;
  decision.attempt_deadline = deadline_from(now + delay);
  return decision;
}

RetryDecision RetryPolicy::next(const Error& error) {
  expect_running();
  if (config_.retry_on && !config_.retry_on(error)) return stop(std::nullopt, false);
  return next(Outcome::kFailure);
}

RetryConfig RetryPolicy::read_config(const config::Node& node) {
  RetryConfig config;
  node.read("max_attempts", config.max_attempts, 1, 100);
  int kind = node.read_choice("backoff", {"constant", "exponential", "decorrelated_jitter"});
  if (kind >= 0) config.backoff.kind = static_cast<BackoffConfig::Kind>(kind);
  node.read_ms("base_backoff_ms", config.backoff.base, Duration::zero(), 1h);
  node.read_ms("max_backoff_ms", config.backoff.max, Duration::zero(), 1h);
  node.read("backoff_multiplier", config.backoff.multiplier, 1.0, 1000.0);
  node.read("jitter", config.backoff.jitter, 0.0, 1.0);
  node.read_ms("per_attempt_timeout_ms", config.per_attempt_timeout, Duration::zero(), 24h);
  node.read_ms("overall_timeout_ms", config.overall_timeout, Duration::zero(), 24h);
  if (config.backoff.base > config.backoff.max) {
    node.fail("base_backoff_ms",
              "must not be greater than max_backoff_ms (" +
                  std::to_string(static_cast<long long>(to_ms(config.backoff.max))) + ")");
  }
  node.expect_only({"max_attempts", "backoff", "base_backoff_ms", "max_backoff_ms",
                    "backoff_multiplier", "jitter", "per_attempt_timeout_ms",
                    "overall_timeout_ms"});
  return config;
}

RetryBudget::RetryBudget(std::string name, Config config, Clock& clock)
    : name_(std::move(name)),
      config_(config),
      clock_(clock),
      origin_(clock.now()),
      bucket_width_(config.window / static_cast<Duration::rep>(kBuckets)),
      floor_(config.min_retries_per_second * std::chrono::duration<double>(config.window).count()) {
  KEEL_CHECK(config_.budget_ratio >= 0.0 && config_.budget_ratio <= 1.0,
             "budget_ratio must be in [0, 1]");
  KEEL_CHECK(bucket_width_ > Duration::zero(), "retry budget window is too short");
}

RetryBudget::Bucket& RetryBudget::current_locked(TimePoint now) const {
  const std::int64_t epoch = (now - origin_) / bucket_width_;
  Bucket& bucket = buckets_[static_cast<std::size_t>(epoch) % kBuckets];
  if (bucket.epoch != epoch) bucket = Bucket{epoch, 0, 0};
  return bucket;
}

double RetryBudget::balance_locked(TimePoint now) const {
  const std::int64_t epoch = current_locked(now).epoch;
  std::uint64_t deposits = 0;
  std::uint64_t withdrawals = 0;
  for (const Bucket& bucket : buckets_) {
    if (bucket.epoch > epoch - static_cast<std::int64_t>(kBuckets)) {
      deposits += bucket.deposits;
      withdrawals += bucket.withdrawals;
    }
  }
  return config_.budget_ratio * static_cast<double>(deposits) + floor_ -
         static_cast<double>(withdrawals);
}

void RetryBudget::deposit() {
  std::lock_guard lock(mutex_);
  ++current_locked(clock_.now()).deposits;
}

bool RetryBudget::try_withdraw() {
  {
    std::lock_guard lock(mutex_);
    const TimePoint now = clock_.now();
    if (balance_locked(now) >= 1.0 - kBalanceEpsilon) {
      ++current_locked(now).withdrawals;
      return true;
    }
  }
  if (rejected_ != nullptr) rejected_->inc();
  return false;
}

double RetryBudget::balance() const {
  std::lock_guard lock(mutex_);
  return balance_locked(clock_.now());
}

void RetryBudget::bind_metrics(metrics::Registry& registry) {
  const metrics::Labels labels = {{"budget", name_}};
  rejected_ = &registry.counter("keel_retry_budget_rejected_total",
                                "Retries refused because the retry budget was spent.", labels);
  balance_gauge_ = registry.gauge_callback(
      "keel_retry_budget_balance", "Retries the retry budget would still grant in its window.",
      labels, [this] { return balance(); });
}

RetryBudget::Config RetryBudget::read_config(const config::Node& node) {
  Config config;
  node.read("budget_ratio", config.budget_ratio, 0.0, 1.0);
  node.read("min_retries_per_second", config.min_retries_per_second, 0, 1'000'000);
  node.read_ms("window_ms", config.window, 1ms, 24h);
  node.expect_only({"budget_ratio", "min_retries_per_second", "window_ms"});
  return config;
}

}  // namespace keel::resilience

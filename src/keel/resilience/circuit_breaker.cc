#include "keel/resilience/circuit_breaker.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "keel/core/check.h"

namespace keel::resilience {
namespace {

std::uint64_t make_word(std::uint64_t generation, std::uint32_t permits, BreakerState state) {
  return (generation << 24) | (static_cast<std::uint64_t>(permits) << 8) |
         static_cast<std::uint64_t>(state);
}

std::int64_t to_ns(TimePoint t) { return t.time_since_epoch().count(); }

}  // namespace

const char* to_string(BreakerState state) {
  switch (state) {
    case BreakerState::kClosed:
      return "CLOSED";
    case BreakerState::kOpen:
      return "OPEN";
    case BreakerState::kHalfOpen:
      return "HALF_OPEN";
    case BreakerState::kDisabled:
      return "DISABLED";
    case BreakerState::kForcedOpen:
      return "FORCED_OPEN";
    case BreakerState::kMetricsOnly:
      return "METRICS_ONLY";
  }
  return "UNKNOWN";
}

// ---- config ----

Status CircuitBreakerConfig::validate() const {
  std::string problems;
  auto problem = [&](const std::string& what) {
    problems += problems.empty() ? "" : "; ";
    problems += what;
  };
  std::uint32_t max_window =
      window_type == WindowType::kCountBased ? CountWindow::kMaxSize : TimeWindow::kMaxSeconds;
  if (window_size < 1 || window_size > max_window) {
    problem("window_size must be from 1 to " + std::to_string(max_window) +
            " for this window type");
  }
  if (minimum_calls < 1) problem("minimum_calls must be at least 1");
  if (!(failure_rate_threshold > 0 && failure_rate_threshold <= 100)) {
    problem("failure_rate_threshold must be a percentage in (0, 100]");
  }
  if (!(slow_call_rate_threshold > 0 && slow_call_rate_threshold <= 100)) {
    problem("slow_call_rate_threshold must be a percentage in (0, 100]");
  }
  if (slow_call_duration <= Duration::zero()) problem("slow_call_duration must be positive");
  if (open_duration <= Duration::zero()) problem("open_duration must be positive");
  if (!(open_backoff_multiplier >= 1.0)) problem("open_backoff_multiplier must be at least 1");
  if (max_open_duration < open_duration) {
    problem("max_open_duration must be at least open_duration");
  }
  if (!(open_jitter >= 0 && open_jitter < 1)) problem("open_jitter must be in [0, 1)");
  if (half_open_permitted_calls < 1 || half_open_permitted_calls > 0xffff) {
    problem("half_open_permitted_calls must be from 1 to 65535");
  }
  if (half_open_max_wait < Duration::zero()) problem("half_open_max_wait must not be negative");
  if (problems.empty()) return {};
  return Error(keel::errc::invalid_argument, "circuit breaker config: " + problems);
}

CircuitBreakerConfig CircuitBreakerConfig::read(const config::Node& node) {
  CircuitBreakerConfig c;
  if (!node.present()) return c;
  int window = node.read_choice("window_type", {"count_based", "time_based"});
  if (window == 1) c.window_type = WindowType::kTimeBased;
  std::uint32_t max_window =
      c.window_type == WindowType::kCountBased ? CountWindow::kMaxSize : TimeWindow::kMaxSeconds;
  node.read("window_size", c.window_size, 1, max_window);
  node.read("minimum_calls", c.minimum_calls, 1);
  node.read("failure_rate_threshold", c.failure_rate_threshold, 0.001, 100.0);
  node.read("slow_call_rate_threshold", c.slow_call_rate_threshold, 0.001, 100.0);
  node.read_ms("slow_call_duration_ms", c.slow_call_duration, 1ms);
  node.read("consecutive_failures", c.consecutive_failures);
  node.read_ms("open_duration_ms", c.open_duration, 1ms);
  node.read("open_backoff_multiplier", c.open_backoff_multiplier, 1.0, 100.0);
  node.read_ms("max_open_duration_ms", c.max_open_duration, 1ms);
  node.read("open_jitter", c.open_jitter, 0.0, 0.99);
  node.read("half_open_permitted_calls", c.half_open_permitted_calls, 1, 0xffff);
  node.read_ms("half_open_max_wait_ms", c.half_open_max_wait);
  node.expect_only({"window_type", "window_size", "minimum_calls", "failure_rate_threshold",
                    "slow_call_rate_threshold", "slow_call_duration_ms", "consecutive_failures",
                    "open_duration_ms", "open_backoff_multiplier", "max_open_duration_ms",
                    "open_jitter", "half_open_permitted_calls", "half_open_max_wait_ms"});
  if (c.max_open_duration < c.open_duration) {
    node.fail("max_open_duration_ms", "must be at least open_duration_ms");
  }
  return c;
}

// ---- permit ----

BreakerPermit& BreakerPermit::operator=(BreakerPermit&& other) noexcept {
  if (this != &other) {
    if (breaker_ != nullptr) breaker_->record(std::move(*this), Outcome::kCancelled, {});
    breaker_ = std::exchange(other.breaker_, nullptr);
    word_ = other.word_;
  }
  return *this;
}

BreakerPermit::~BreakerPermit() {
  if (breaker_ != nullptr) breaker_->record(std::move(*this), Outcome::kCancelled, {});
}

BreakerState BreakerPermit::state() const { return CircuitBreaker::state_of(word_); }

// ---- breaker ----

CircuitBreaker::CircuitBreaker(std::string name, CircuitBreakerConfig config, Clock& clock)
    : name_(std::move(name)),
      config_(std::move(config)),
      clock_(clock),
      minimum_calls_(config_.window_type == CircuitBreakerConfig::WindowType::kCountBased
                         ? std::min(config_.minimum_calls, config_.window_size)
                         : config_.minimum_calls),
      state_word_(make_word(1, 0, BreakerState::kClosed)),
      success_batch_(32),
      random_(config_.random_seed) {
  Status valid = config_.validate();
  KEEL_CHECK(valid.ok(), valid.ok() ? "" : valid.error().message().c_str());
  if (config_.window_type == CircuitBreakerConfig::WindowType::kCountBased) {
    count_window_ = std::make_unique<CountWindow>(config_.window_size);
  } else {
    time_window_ = std::make_unique<TimeWindow>(config_.window_size);
  }
}

CircuitBreaker::~CircuitBreaker() {
  TimerId timer;
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    timer = std::exchange(pending_timer_, 0);
  }
  if (timer != 0) clock_.cancel(timer);
}

BreakerState CircuitBreaker::state() const {
  return state_of(state_word_.load(std::memory_order_acquire));
}

Admission<BreakerPermit> CircuitBreaker::acquire() {
  std::uint64_t word = state_word_.load(std::memory_order_acquire);
  switch (state_of(word)) {
    case BreakerState::kClosed:
    case BreakerState::kMetricsOnly:
    case BreakerState::kDisabled:
      return BreakerPermit(this, word);
    case BreakerState::kOpen:
      return reject(errc::circuit_open,
                    TimePoint(Duration(retry_at_ns_.load(std::memory_order_relaxed))));
    case BreakerState::kForcedOpen:
      return reject(errc::circuit_forced_open, TimePoint::max());
    case BreakerState::kHalfOpen:
      // The probe permits live in the state word, so taking one is atomic with the
      // generation: exactly half_open_permitted_calls callers win per HALF_OPEN period.
      while (state_of(word) == BreakerState::kHalfOpen && permits_of(word) > 0) {
        std::uint64_t taken = word - (std::uint64_t{1} << kPermitShift);
        if (state_word_.compare_exchange_weak(word, taken, std::memory_order_acq_rel)) {
          return BreakerPermit(this, taken);
        }
      }
      if (state_of(word) != BreakerState::kHalfOpen) return acquire();
      return reject(errc::half_open_full, TimePoint::max());
  }
  return reject(errc::circuit_open, TimePoint::max());
}

Admission<BreakerPermit> CircuitBreaker::reject(errc reason, TimePoint retry_at) {
  not_permitted_.inc();
  Rejection rejection{reason, retry_at};
  if (has_rejection_listeners_.load(std::memory_order_relaxed)) [[unlikely]] {
    for (const auto& listener : rejection_listeners_) listener(rejection);
  }
  return rejection;
}

void CircuitBreaker::record(BreakerPermit&& permit, Outcome outcome, Duration latency) {
  if (permit.breaker_ == nullptr) return;
  permit.breaker_ = nullptr;
  const std::uint64_t word = permit.word_;
  const BreakerState admitted_in = state_of(word);
  if (admitted_in == BreakerState::kDisabled) return;

  if (outcome == Outcome::kIgnored || outcome == Outcome::kCancelled) {
    ignored_.inc();
    if (admitted_in == BreakerState::kHalfOpen) return_half_open_permit(word);
    return;
  }
  const bool failed = outcome == Outcome::kFailure;
  const bool slow = latency > config_.slow_call_duration;
  const bool current =
      generation_of(state_word_.load(std::memory_order_acquire)) == generation_of(word);
  if (!failed && !slow && current && admitted_in != BreakerState::kHalfOpen) [[likely]] {
    record_fast_success(word);
    return;
  }
  (failed ? failed_ : successful_).inc();
  if (slow) slow_.inc();

  if (!current) {
    stale_.inc();
    return;
  }
  if (admitted_in == BreakerState::kHalfOpen) {
    record_half_open(word, failed, slow);
  } else {
    record_closed(word, failed, slow);
  }
}

void CircuitBreaker::record_error(BreakerPermit&& permit, const Error& error, Duration latency) {
  record(std::move(permit), config_.classify ? config_.classify(error) : Outcome::kFailure,
         latency);
}

const char* CircuitBreaker::threshold_crossed(const WindowTotals& totals,
                                              std::uint64_t minimum_calls) const {
  if (totals.calls <= 0 || static_cast<std::uint64_t>(totals.calls) < minimum_calls) return nullptr;
  double calls = static_cast<double>(totals.calls);
  if (static_cast<double>(std::max<std::int64_t>(totals.failures, 0)) * 100.0 / calls >=
      config_.failure_rate_threshold) {
    return "failure rate reached the threshold";
  }
  if (static_cast<double>(std::max<std::int64_t>(totals.slow, 0)) * 100.0 / calls >=
      config_.slow_call_rate_threshold) {
    return "slow-call rate reached the threshold";
  }
  return nullptr;
}

WindowTotals CircuitBreaker::add_to_window(CallRecord call) {
  return count_window_ ? count_window_->record(call) : time_window_->record(call, clock_.now());
}

WindowTotals CircuitBreaker::add_successes_to_window(std::uint64_t count) const {
  // A count window holds at most kMaxSize calls, so a larger count fills it all the same.
  auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(count, CountWindow::kMaxSize));
  return count_window_ ? count_window_->record_successes(n)
                       : time_window_->record_successes(n, clock_.now());
}

void CircuitBreaker::record_fast_success(std::uint64_t word) {
  if (config_.consecutive_failures > 0 &&
      consecutive_failures_.load(std::memory_order_relaxed) != 0) {
    consecutive_failures_.store(0, std::memory_order_relaxed);
  }
  std::uint64_t batch = 0;
  const std::size_t index = thread_slot_index();
  if (index < kOwnedSlots) [[likely]] {
    // Only this thread writes `recorded`, so a load and a store count the call without a locked
    // instruction; the line stays in this core's cache until some thread folds.
    OwnedSlot& slot = owned_[index];
    const std::uint64_t recorded = slot.recorded.load(std::memory_order_relaxed) + 1;
    slot.recorded.store(recorded, std::memory_order_relaxed);
    std::uint64_t folded = slot.folded.load(std::memory_order_relaxed);
    if (recorded - folded < success_batch_) return;
    // Fails only if another thread folded this slot meanwhile, which took the batch with it.
    if (!slot.folded.compare_exchange_strong(folded, recorded, std::memory_order_relaxed)) return;
    batch = recorded - folded;
  } else {
    successful_.inc();
    auto& stripe = shared_[index % kSharedStripes];
    if (stripe.count.fetch_add(1, std::memory_order_relaxed) + 1 < success_batch_) return;
    batch = stripe.count.exchange(0, std::memory_order_relaxed);
    if (batch == 0) return;
  }
  const WindowTotals totals = add_successes_to_window(batch);
  if (state_of(word) != BreakerState::kClosed) return;  // METRICS_ONLY never trips
  // Successes lower both rates, but they can bring the window up to minimum_calls.
  if (const char* reason = threshold_crossed(totals, minimum_calls_)) [[unlikely]] {
    transition(word, BreakerState::kOpen, reason);
  }
}

void CircuitBreaker::fold_pending_successes() const {
  for (auto& slot : owned_) {
    std::uint64_t folded = slot.folded.load(std::memory_order_relaxed);
    const std::uint64_t recorded = slot.recorded.load(std::memory_order_relaxed);
    while (folded < recorded) {
      if (slot.folded.compare_exchange_weak(folded, recorded, std::memory_order_relaxed)) {
        add_successes_to_window(recorded - folded);
        break;
      }
    }
  }
  for (auto& stripe : shared_) {
    if (stripe.count.load(std::memory_order_relaxed) == 0) continue;
    std::uint32_t count = stripe.count.exchange(0, std::memory_order_relaxed);
    if (count != 0) add_successes_to_window(count);
  }
}

void CircuitBreaker::discard_pending_successes() {
  for (auto& slot : owned_) {
    std::uint64_t folded = slot.folded.load(std::memory_order_relaxed);
    const std::uint64_t recorded = slot.recorded.load(std::memory_order_relaxed);
    while (folded < recorded &&
           !slot.folded.compare_exchange_weak(folded, recorded, std::memory_order_relaxed)) {
    }
  }
  for (auto& stripe : shared_) stripe.count.store(0, std::memory_order_relaxed);
}

void CircuitBreaker::record_closed(std::uint64_t word, bool failed, bool slow) {
  const bool trips = state_of(word) == BreakerState::kClosed;  // METRICS_ONLY never trips
  fold_pending_successes();
  const WindowTotals totals = add_to_window({failed, slow});
  if (trips && failed && config_.consecutive_failures > 0 &&
      consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1 >=
          config_.consecutive_failures) {
    transition(word, BreakerState::kOpen, "consecutive failures reached the limit");
    return;
  }
  if (!trips) return;
  if (const char* reason = threshold_crossed(totals, minimum_calls_)) [[unlikely]] {
    transition(word, BreakerState::kOpen, reason);
  }
}

void CircuitBreaker::record_half_open(std::uint64_t word, bool failed, bool slow) {
  std::optional<Transition> done;
  {
    std::lock_guard lock(mutex_);
    if (generation_of(state_word_.load(std::memory_order_acquire)) != generation_of(word)) {
      stale_.inc();
      return;
    }
    ++half_open_calls_;
    if (failed) ++half_open_failures_;
    if (slow) ++half_open_slow_;
    if (half_open_calls_ < config_.half_open_permitted_calls) return;
    WindowTotals totals{half_open_calls_, half_open_failures_, half_open_slow_};
    const char* reason = threshold_crossed(totals, config_.half_open_permitted_calls);
    done = reason ? transition_locked(BreakerState::kOpen, reason)
                  : transition_locked(BreakerState::kClosed, "probe calls succeeded");
  }
  complete(done);
}

void CircuitBreaker::return_half_open_permit(std::uint64_t word) {
  std::uint64_t current = state_word_.load(std::memory_order_acquire);
  while (generation_of(current) == generation_of(word) &&
         state_of(current) == BreakerState::kHalfOpen &&
         permits_of(current) < config_.half_open_permitted_calls) {
    std::uint64_t returned = current + (std::uint64_t{1} << kPermitShift);
    if (state_word_.compare_exchange_weak(current, returned, std::memory_order_acq_rel)) return;
  }
}

void CircuitBreaker::transition(std::uint64_t expected, BreakerState to, const char* reason) {
  std::optional<Transition> done;
  {
    std::lock_guard lock(mutex_);
    if (closing_) return;
    std::uint64_t current = state_word_.load(std::memory_order_acquire);
    if (expected != 0 && generation_of(current) != generation_of(expected)) return;
    done = transition_locked(to, reason);
  }
  complete(done);
}

CircuitBreaker::Transition CircuitBreaker::transition_locked(BreakerState to, const char* reason) {
  const std::uint64_t current = state_word_.load(std::memory_order_acquire);
  const BreakerState from = state_of(current);
  const std::uint64_t generation = generation_of(current) + 1;
  const TimerId stale_timer = std::exchange(pending_timer_, 0);
  std::uint32_t permits = 0;
  const TimePoint now = clock_.now();

  switch (to) {
    case BreakerState::kOpen: {
      ++consecutive_opens_;
      double scale = std::pow(config_.open_backoff_multiplier, consecutive_opens_ - 1);
      if (config_.open_jitter > 0)
        scale *= 1.0 + config_.open_jitter * (2 * random_.uniform01() - 1);
      double wait_ns = std::min(static_cast<double>(config_.open_duration.count()) * scale,
                                static_cast<double>(config_.max_open_duration.count()));
      TimePoint retry_at = now + Duration(static_cast<std::int64_t>(wait_ns));
      retry_at_ns_.store(to_ns(retry_at), std::memory_order_relaxed);
      std::uint64_t next_word = make_word(generation, 0, BreakerState::kOpen);
      pending_timer_ = clock_.schedule_at(retry_at, [this, next_word] {
        on_timer(next_word, BreakerState::kHalfOpen, "open duration elapsed");
      });
      break;
    }
    case BreakerState::kHalfOpen: {
      half_open_calls_ = half_open_failures_ = half_open_slow_ = 0;
      permits = config_.half_open_permitted_calls;
      if (config_.half_open_max_wait > Duration::zero()) {
        std::uint64_t next_word = make_word(generation, 0, BreakerState::kHalfOpen);
        pending_timer_ = clock_.schedule_at(now + config_.half_open_max_wait, [this, next_word] {
          on_timer(next_word, BreakerState::kOpen, "probe calls did not report in time");
        });
      }
      break;
    }
    case BreakerState::kClosed:
    case BreakerState::kMetricsOnly:
      discard_pending_successes();
      if (count_window_) count_window_->reset();
      if (time_window_) time_window_->reset();
      consecutive_failures_.store(0, std::memory_order_relaxed);
      if (to == BreakerState::kClosed) consecutive_opens_ = 0;
      break;
    case BreakerState::kForcedOpen:
      retry_at_ns_.store(to_ns(TimePoint::max()), std::memory_order_relaxed);
      break;
    case BreakerState::kDisabled:
      break;
  }
  state_word_.store(make_word(generation, permits, to), std::memory_order_release);
  return {{from, to, reason}, stale_timer};
}

void CircuitBreaker::on_timer(std::uint64_t expected_word, BreakerState to, const char* reason) {
  std::optional<Transition> done;
  {
    std::lock_guard lock(mutex_);
    if (closing_) return;
    std::uint64_t current = state_word_.load(std::memory_order_acquire);
    if (generation_of(current) != generation_of(expected_word)) return;
    pending_timer_ = 0;  // this timer has fired: nothing stale to cancel
    done = transition_locked(to, reason);
  }
  complete(done);
}

void CircuitBreaker::complete(const std::optional<Transition>& transition) {
  if (!transition) return;
  if (transition->stale_timer != 0) clock_.cancel(transition->stale_timer);
  for (const auto& listener : state_listeners_) listener(transition->event);
}

void CircuitBreaker::transition_to_closed() { transition(0, BreakerState::kClosed, "operator"); }
void CircuitBreaker::transition_to_open() { transition(0, BreakerState::kOpen, "operator"); }
void CircuitBreaker::transition_to_half_open() {
  transition(0, BreakerState::kHalfOpen, "operator");
}
void CircuitBreaker::transition_to_disabled() {
  transition(0, BreakerState::kDisabled, "operator");
}
void CircuitBreaker::transition_to_forced_open() {
  transition(0, BreakerState::kForcedOpen, "operator");
}
void CircuitBreaker::transition_to_metrics_only() {
  transition(0, BreakerState::kMetricsOnly, "operator");
}
void CircuitBreaker::reset() { transition(0, BreakerState::kClosed, "reset"); }

CircuitBreaker::Metrics CircuitBreaker::metrics() const {
  fold_pending_successes();
  WindowTotals totals =
      count_window_ ? count_window_->totals() : time_window_->totals(clock_.now());
  Metrics m{};
  m.state = state();
  bool enough = totals.calls > 0 && static_cast<std::uint64_t>(totals.calls) >= minimum_calls_;
  double calls = static_cast<double>(std::max<std::int64_t>(totals.calls, 1));
  m.failure_rate =
      enough ? static_cast<double>(std::max<std::int64_t>(totals.failures, 0)) * 100.0 / calls : -1;
  m.slow_call_rate =
      enough ? static_cast<double>(std::max<std::int64_t>(totals.slow, 0)) * 100.0 / calls : -1;
  m.buffered_calls = static_cast<std::uint64_t>(std::max<std::int64_t>(totals.calls, 0));
  m.failed_calls = static_cast<std::uint64_t>(std::max<std::int64_t>(totals.failures, 0));
  m.slow_calls = static_cast<std::uint64_t>(std::max<std::int64_t>(totals.slow, 0));
  m.successful_calls_total = successful_.value();
  for (const auto& slot : owned_) {
    m.successful_calls_total += slot.recorded.load(std::memory_order_relaxed);
  }
  m.failed_calls_total = failed_.value();
  m.slow_calls_total = slow_.value();
  m.ignored_calls_total = ignored_.value();
  m.not_permitted_calls_total = not_permitted_.value();
  m.stale_results_total = stale_.value();
  return m;
}

void CircuitBreaker::on_state_change(std::function<void(const BreakerTransition&)> listener) {
  state_listeners_.push_back(std::move(listener));
}

void CircuitBreaker::on_rejection(std::function<void(const Rejection&)> listener) {
  rejection_listeners_.push_back(std::move(listener));
  has_rejection_listeners_.store(true, std::memory_order_release);
}

void CircuitBreaker::bind_metrics(metrics::Registry& registry) {
  const metrics::Labels labels{{"breaker", name_}};
  for (std::size_t i = 0; i < kBreakerStateCount; ++i) {
    auto state = static_cast<BreakerState>(i);
    std::string lower = to_string(state);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    registrations_.push_back(registry.gauge_callback(
        "keel_circuit_breaker_state", "1 for the breaker's current state, 0 for the others.",
        {{"breaker", name_}, {"state", lower}},
        [this, state] { return this->state() == state ? 1.0 : 0.0; }));
  }
  registrations_.push_back(registry.gauge_callback("keel_circuit_breaker_failure_rate",
                                                   "Failure rate in the window, percent; -1 until "
                                                   "minimum_calls.",
                                                   labels,
                                                   [this] { return metrics().failure_rate; }));
  registrations_.push_back(
      registry.gauge_callback("keel_circuit_breaker_slow_call_rate",
                              "Slow-call rate in the window, percent; -1 until "
                              "minimum_calls.",
                              labels, [this] { return metrics().slow_call_rate; }));
  registrations_.push_back(registry.gauge_callback(
      "keel_circuit_breaker_buffered_calls", "Calls in the sliding window.", labels,
      [this] { return static_cast<double>(metrics().buffered_calls); }));
  auto counter = [&](const char* kind, const metrics::Counter& source) {
    registrations_.push_back(registry.counter_callback(
        "keel_circuit_breaker_calls_total", "Calls by how they ended or why they were refused.",
        {{"breaker", name_}, {"kind", kind}},
        [&source] { return static_cast<double>(source.value()); }));
  };
  counter("successful", successful_);
  counter("failed", failed_);
  counter("slow", slow_);
  counter("ignored", ignored_);
  counter("not_permitted", not_permitted_);
  counter("stale", stale_);
}

}  // namespace keel::resilience

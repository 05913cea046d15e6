// Pipeline: runs a blocking call through bulkhead → circuit breaker → retry → timeout, for code
// that wants resilience in one line instead of wiring the policies itself.
//
//   Pipeline pipeline("inventory", {.bulkhead = &bulkhead, .breaker = &breaker,
//                                   .retry = RetryConfig{.max_attempts = 3}}, clock);
//   Result<Stock> stock = pipeline.call<Stock>([&](const CallContext& context) {
//     return inventory_client.get(sku, context.deadline);
//   });
//
// Order and scope: the bulkhead admits the whole call once (retries included); every attempt
// asks the breaker for a permit and reports its outcome to it; an open breaker ends the call at
// once (retrying into it would only be refused again). A blocking call cannot be interrupted,
// so the timeout is cooperative: each attempt is handed its deadline to pass to its own I/O,
// and an attempt that returns after its deadline is treated as a failure with errc::timeout
// (its result is discarded). Refusals and timeouts come back as errors of the resilience area;
// the call's own errors come back as they are, unless retries were refused, in which case the
// error names the reason and includes the last attempt's message.
//
// Thread-safety: call() may run on many threads at once. The policies are borrowed and must
// outlive the pipeline. Exceptions thrown by the callable are recorded as failures and rethrown.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>

#include "keel/core/clock.h"
#include "keel/core/random.h"
#include "keel/core/result.h"
#include "keel/resilience/bulkhead.h"
#include "keel/resilience/circuit_breaker.h"
#include "keel/resilience/outcome.h"
#include "keel/resilience/retry.h"

namespace keel::resilience {

struct CallContext {
  std::uint32_t attempt = 1;  // 1-based
  // Give up by then; TimePoint::max() when no timeout applies.
  TimePoint deadline = TimePoint::max();
};

struct PipelineParts {
  SemaphoreBulkhead* bulkhead = nullptr;
  CircuitBreaker* breaker = nullptr;
  // Absent: a single attempt.
  std::optional<RetryConfig> retry;
  RetryBudget* retry_budget = nullptr;
  // Per attempt, when `retry` is absent (otherwise retry->per_attempt_timeout applies).
  Duration timeout = Duration::zero();
  // How a failed attempt counts: kFailure (the default for every error), kIgnored (a caller's
  // mistake such as "not found", which says nothing about the dependency's health).
  std::function<Outcome(const Error&)> classify;
};

class Pipeline {
 public:
  Pipeline(std::string name, PipelineParts parts, Clock& clock, std::uint64_t seed = 1);

  template <typename T>
  Result<T> call(const std::function<Result<T>(const CallContext&)>& attempt);

  const std::string& name() const { return name_; }

 private:
  Outcome classify(const Error& error) const {
    return parts_.classify ? parts_.classify(error) : Outcome::kFailure;
  }
  Error timeout_error(const CallContext& context, Duration took) const;
  Error refused_retry(errc reason, std::uint32_t attempts, const Error& last) const;

  const std::string name_;
  const PipelineParts parts_;
  Clock& clock_;
  const std::uint64_t seed_;
  std::atomic<std::uint64_t> calls_{0};
};

template <typename T>
Result<T> Pipeline::call(const std::function<Result<T>(const CallContext&)>& attempt) {
  BulkheadPermit bulkhead_permit;
  if (parts_.bulkhead != nullptr) {
    auto admission = parts_.bulkhead->acquire();
    if (!admission) return admission.rejection().to_error(name_, clock_.now());
    bulkhead_permit = std::move(admission).permit();
  }

  Random random(seed_ ^ (calls_.fetch_add(1, std::memory_order_relaxed) * 0x9e3779b97f4a7c15ULL));
  std::optional<RetryPolicy> retry;
  CallContext context;
  if (parts_.retry) {
    retry.emplace(*parts_.retry, clock_, random, parts_.retry_budget);
    Attempt first = retry->start();
    context = {first.number, first.deadline};
  } else if (parts_.timeout > Duration::zero()) {
    context.deadline = clock_.now() + parts_.timeout;
  }

  while (true) {
    BreakerPermit breaker_permit;
    if (parts_.breaker != nullptr) {
      auto admission = parts_.breaker->acquire();
      if (!admission) return admission.rejection().to_error(parts_.breaker->name(), clock_.now());
      breaker_permit = std::move(admission).permit();
    }

    const TimePoint started = clock_.now();
    std::optional<Result<T>> result;
    try {
      result.emplace(attempt(context));
    } catch (...) {
      if (parts_.breaker != nullptr) {
        parts_.breaker->record(std::move(breaker_permit), Outcome::kFailure,
                               clock_.now() - started);
      }
      throw;
    }
    const TimePoint finished = clock_.now();
    if (finished > context.deadline) result.emplace(timeout_error(context, finished - started));

    const Outcome outcome = result->ok() ? Outcome::kSuccess : classify(result->error());
    if (parts_.breaker != nullptr) {
      parts_.breaker->record(std::move(breaker_permit), outcome, finished - started);
    }
    if (!retry) return std::move(*result);

    RetryDecision decision =
        outcome == Outcome::kFailure ? retry->next(result->error()) : retry->next(outcome);
    if (!decision.retry) {
      if (decision.reason && !result->ok()) {
        return refused_retry(*decision.reason, retry->attempts(), result->error());
      }
      return std::move(*result);
    }
    sleep_until(clock_, clock_.now() + decision.delay);
    context = {context.attempt + 1, decision.attempt_deadline};
  }
}

}  // namespace keel::resilience

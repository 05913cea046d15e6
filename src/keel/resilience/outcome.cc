#include "keel/resilience/outcome.h"

#include <cmath>

#include "keel/core/error_category.h"

namespace keel::resilience {
namespace {

const char* describe(errc code) {
  switch (code) {
    case errc::circuit_open:
      return "circuit breaker is open";
    case errc::circuit_forced_open:
      return "circuit breaker is forced open";
    case errc::half_open_full:
      return "circuit breaker is half-open and all probe calls are taken";
    case errc::bulkhead_full:
      return "bulkhead is full";
    case errc::bulkhead_timeout:
      return "timed out waiting for a bulkhead permit";
    case errc::limit_exceeded:
      return "concurrency limit reached";
    case errc::rate_limited:
      return "rate limit reached";
    case errc::retry_budget_exhausted:
      return "retry budget exhausted";
    case errc::retries_exhausted:
      return "all attempts failed";
    case errc::timeout:
      return "deadline exceeded";
    case errc::stopped:
      return "stopped";
  }
  return nullptr;
}

}  // namespace

const char* to_string(Outcome outcome) {
  switch (outcome) {
    case Outcome::kSuccess:
      return "success";
    case Outcome::kFailure:
      return "failure";
    case Outcome::kIgnored:
      return "ignored";
    case Outcome::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

const std::error_category& resilience_category() {
  static const ErrorCategory<errc> category("resilience", describe);
  return category;
}

Error Rejection::to_error(std::string_view policy_name, TimePoint now) const {
  std::string message = "'" + std::string(policy_name) + "': " + make_error_code(reason).message();
  if (retry_at != TimePoint::max()) {
    auto wait_ms = static_cast<long long>(
        std::ceil(to_ms(retry_at > now ? retry_at - now : Duration::zero())));
    message += "; retry after " + std::to_string(wait_ms) + " ms";
  }
  return Error(reason, std::move(message));
}

}  // namespace keel::resilience

// Vocabulary shared by every resilience policy: how a call ended, why a call was refused, and
// the area's error codes.
//
// Every policy follows decide → act → record: `acquire()` returns a permit or a `Rejection`
// (never throws, never allocates), the caller does the work however it likes, then reports the
// `Outcome` and the latency it measured.
#pragma once

#include <string>
#include <system_error>
#include <utility>
#include <variant>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::resilience {

enum class Outcome {
  kSuccess,
  kFailure,
  // Counted as neither success nor failure (a result the caller's classifier chose to ignore,
  // such as a 404 or a validation error). Releases any permit.
  kIgnored,
  // The caller gave up on the call (client went away, deadline of an outer scope). Counted as
  // neither success nor failure; releases any permit.
  kCancelled,
};

const char* to_string(Outcome outcome);

enum class errc {
  circuit_open = 1,     // breaker OPEN: calls are not permitted until retry_at
  circuit_forced_open,  // breaker FORCED_OPEN by an operator
  half_open_full,       // breaker HALF_OPEN and all probe permits are out
  bulkhead_full,        // no concurrency permit and no room (or no time) to wait
  bulkhead_timeout,     // waited max_wait for a permit without getting one
  limit_exceeded,       // adaptive concurrency limit reached
  rate_limited,         // rate limiter has no token/quota now
  retry_budget_exhausted,
  retries_exhausted,  // every attempt failed
  timeout,            // the attempt or the overall deadline passed
  stopped,            // the policy was stopped and takes no more work
};

const std::error_category& resilience_category();
inline std::error_code make_error_code(errc e) {
  return {static_cast<int>(e), resilience_category()};
}

// Why a policy refused a call. Cheap to copy; building a human message is left to `to_error()`
// so that rejecting stays allocation-free.
struct Rejection {
  errc reason;
  // When trying again may succeed; TimePoint::max() when the policy cannot say.
  TimePoint retry_at = TimePoint::max();

  // `now` turns `retry_at` into a "retry after N ms" hint in the message.
  Error to_error(std::string_view policy_name, TimePoint now) const;
};

// A permit or a rejection: what every `acquire()` returns.
template <typename Permit>
class [[nodiscard]] Admission {
 public:
  Admission(Permit permit) : value_(std::in_place_index<0>, std::move(permit)) {}  // NOLINT
  Admission(Rejection rejection) : value_(std::in_place_index<1>, rejection) {}    // NOLINT

  bool admitted() const { return value_.index() == 0; }
  explicit operator bool() const { return admitted(); }
  Permit& permit() & { return std::get<0>(value_); }
  Permit&& permit() && { return std::get<0>(std::move(value_)); }
  const Permit& permit() const& { return std::get<0>(value_); }
  const Rejection& rejection() const { return std::get<1>(value_); }

 private:
  std::variant<Permit, Rejection> value_;
};

}  // namespace keel::resilience

template <>
struct std::is_error_code_enum<keel::resilience::errc> : std::true_type {};

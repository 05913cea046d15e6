// CQRS error codes.
#pragma once

#include <system_error>

namespace keel::cqrs {

enum class errc {
  rejected = 1,       // a command handler refused the command (validation, business rule)
  concurrency,        // gave up after losing to concurrent writers max_attempts times
  database,           // the read model's database failed a statement or a connection
  projection_failed,  // a projection's apply() failed and its policy is to stop
  timeout,            // a read-your-writes wait ran out of time
  invalid_argument,
  unknown_command,
};

const std::error_category& cqrs_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), cqrs_category()}; }

}  // namespace keel::cqrs

template <>
struct std::is_error_code_enum<keel::cqrs::errc> : std::true_type {};

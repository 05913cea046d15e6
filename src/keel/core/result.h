// Expected failures as values. A `Result<T>` holds either a T or an `Error`: a code from the
// area that failed (each area defines its own `enum class errc` and std::error_category) and a
// message written for the person who has to fix it. Broken invariants are asserted instead.
#pragma once

#include <cassert>
#include <cstdint>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace keel {

class Error {
 public:
  Error(std::error_code code, std::string message) : code_(code), message_(std::move(message)) {}

  const std::error_code& code() const { return code_; }
  const std::string& message() const { return message_; }
  // "<category>: <message>", e.g. "config: demo.yaml:3:5: ...".
  std::string to_string() const { return std::string(code_.category().name()) + ": " + message_; }

  template <typename Enum>
  requires std::is_error_code_enum_v<Enum>
  bool is(Enum value) const { return code_ == value; }

  // One number a caller may need to act on, such as the actual version of a stream after a
  // failed expected-version check.
  Error& with_detail(std::int64_t detail) {
    detail_ = detail;
    return *this;
  }
  std::optional<std::int64_t> detail() const { return detail_; }

 private:
  std::error_code code_;
  std::string message_;
  std::optional<std::int64_t> detail_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : storage_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit
  Result(Error error) : storage_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return storage_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return std::get<0>(storage_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<0>(storage_);
  }
  T&& value() && {
    assert(ok());
    return std::get<0>(std::move(storage_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const {
    assert(!ok());
    return std::get<1>(storage_);
  }

 private:
  std::variant<T, Error> storage_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const {
    assert(!ok_);
    return error_;
  }

 private:
  Error error_{std::error_code(), std::string()};
  bool ok_ = true;
};

using Status = Result<void>;

inline Status ok_status() { return {}; }

// Core's own error codes.
enum class errc {
  invalid_argument = 1,
  config_invalid,
  io_error,
};

const std::error_category& core_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), core_category()}; }

}  // namespace keel

template <>
struct std::is_error_code_enum<keel::errc> : std::true_type {};

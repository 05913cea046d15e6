// The std::error_category every area's `enum class errc` needs, written once: an area gives its
// name and a function that describes each code, and gets a category object.
//
//   const char* describe(errc e) { switch (e) { case errc::closed: return "closed"; } return
//   nullptr; } const std::error_category& eventlog_category() {
//     static const ErrorCategory<errc> category("eventlog", describe);
//     return category;
//   }
#pragma once

#include <string>
#include <system_error>

namespace keel {

template <typename Errc>
class ErrorCategory final : public std::error_category {
 public:
  // `describe` returns null for a value that is not one of the codes.
  using Describe = const char* (*)(Errc);
  ErrorCategory(const char* name, Describe describe) : name_(name), describe_(describe) {}

  const char* name() const noexcept override { return name_; }
  std::string message(int value) const override {
    const char* text = describe_(static_cast<Errc>(value));
    return text != nullptr ? text : "unknown " + std::string(name_) + " error";
  }

 private:
  const char* name_;
  Describe describe_;
};

}  // namespace keel

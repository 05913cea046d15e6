#include "keel/cqrs/errc.h"

#include <string>

#include "keel/core/error_category.h"
#include "keel/cqrs/read_model.h"

namespace keel::cqrs {

namespace {
const char* describe(errc code) {
  switch (code) {
    case errc::rejected:
      return "command rejected";
    case errc::concurrency:
      return "lost to concurrent writers";
    case errc::database:
      return "read model database error";
    case errc::projection_failed:
      return "projection failed";
    case errc::timeout:
      return "timed out";
    case errc::invalid_argument:
      return "invalid argument";
    case errc::unknown_command:
      return "unknown command";
  }
  return nullptr;
}
}  // namespace

const std::error_category& cqrs_category() {
  static const ErrorCategory<errc> category("cqrs", describe);
  return category;
}

std::string to_string(const Value& value) {
  struct Visitor {
    std::string operator()(std::nullptr_t) const { return "NULL"; }
    std::string operator()(std::int64_t v) const { return std::to_string(v); }
    std::string operator()(double v) const {
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%.17g", v);
      return buffer;
    }
    std::string operator()(const std::string& v) const { return v; }
  };
  return std::visit(Visitor{}, value);
}

std::int64_t as_int(const Value& value) {
  if (auto* i = std::get_if<std::int64_t>(&value)) return *i;
  if (auto* d = std::get_if<double>(&value)) return static_cast<std::int64_t>(*d);
  if (auto* s = std::get_if<std::string>(&value)) return std::strtoll(s->c_str(), nullptr, 10);
  return 0;
}

}  // namespace keel::cqrs

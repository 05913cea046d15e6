#include "keel/core/result.h"

#include "keel/core/error_category.h"

namespace keel {
namespace {

const char* describe(errc code) {
  switch (code) {
    case errc::invalid_argument:
      return "invalid argument";
    case errc::config_invalid:
      return "invalid configuration";
    case errc::io_error:
      return "input/output error";
  }
  return nullptr;
}

}  // namespace

const std::error_category& core_category() {
  static const ErrorCategory<errc> category("keel", describe);
  return category;
}

}  // namespace keel

#include "keel/core/result.h"

namespace keel {
namespace {

class CoreCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "keel"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_argument:
        return "invalid argument";
      case errc::config_invalid:
        return "invalid configuration";
      case errc::io_error:
        return "input/output error";
    }
    return "unknown error";
  }
};

}  // namespace

const std::error_category& core_category() {
  static const CoreCategory category;
  return category;
}

}  // namespace keel

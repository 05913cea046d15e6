#include "keel/shard/errc.h"

#include <string>

namespace keel::shard {
namespace {

class ShardCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "shard"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_argument:
        return "invalid argument";
      case errc::invalid_slot_map:
        return "invalid slot map";
    }
    return "unknown error";
  }
};

}  // namespace

const std::error_category& shard_category() {
  static const ShardCategory category;
  return category;
}

}  // namespace keel::shard

#include "keel/shard/errc.h"

#include <string>

#include "keel/core/error_category.h"

namespace keel::shard {
namespace {

const char* describe(errc code) {
  switch (code) {
    case errc::invalid_argument:
      return "invalid argument";
    case errc::invalid_slot_map:
      return "invalid slot map";
  }
  return nullptr;
}

}  // namespace

const std::error_category& shard_category() {
  static const ErrorCategory<errc> category("shard", describe);
  return category;
}

}  // namespace keel::shard

#include "keel/eventlog/errc.h"

#include <string>

namespace keel::eventlog {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "eventlog"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::wrong_expected_version:
        return "wrong expected version";
      case errc::stream_deleted:
        return "stream deleted";
      case errc::duplicate_event_id:
        return "duplicate event id";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::disk_full:
        return "disk full";
      case errc::io_error:
        return "input/output error";
      case errc::corrupt:
        return "corrupt data";
      case errc::closed:
        return "store closed";
    }
    return "unknown error";
  }
};

}  // namespace

const std::error_category& eventlog_category() {
  static const Category category;
  return category;
}

}  // namespace keel::eventlog

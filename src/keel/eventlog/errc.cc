#include "keel/eventlog/errc.h"

#include <string>

#include "keel/core/error_category.h"

namespace keel::eventlog {
namespace {

const char* describe(errc code) {
  switch (code) {
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
  return nullptr;
}

}  // namespace

const std::error_category& eventlog_category() {
  static const ErrorCategory<errc> category("eventlog", describe);
  return category;
}

}  // namespace keel::eventlog

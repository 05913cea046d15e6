// The API's errors: node::errc, and the mapping of every library error to an HTTP status and a
// code string, so that the server answers one failure one way wherever it comes from.
#include "keel/core/error_category.h"
#include "keel/eventlog/errc.h"
#include "keel/node/api.h"
#include "keel/node/text_codec.h"

namespace keel::node {
namespace {

const char* describe(errc code) {
  switch (code) {
    case errc::bad_json:
      return "bad_json";
    case errc::invalid_argument:
      return "invalid_argument";
    case errc::invalid_stream_name:
      return "invalid_stream_name";
    case errc::system_stream:
      return "system_stream";
    case errc::not_found:
      return "not_found";
    case errc::method_not_allowed:
      return "method_not_allowed";
    case errc::payload_too_large:
      return "payload_too_large";
    case errc::unsupported_media_type:
      return "unsupported_media_type";
    case errc::conflict:
      return "conflict";
    case errc::unavailable:
      return "unavailable";
    case errc::internal:
      return "internal";
  }
  return nullptr;
}

ApiError from_eventlog(eventlog::errc code) {
  using eventlog::errc;
  switch (code) {
    case errc::wrong_expected_version:
      return {.status = 409, .code = "wrong_expected_version"};
    case errc::duplicate_event_id:
      return {.status = 409, .code = "duplicate_event_id"};
    case errc::stream_deleted:
      return {.status = 410, .code = "stream_deleted"};
    case errc::invalid_argument:
      return {.status = 400, .code = "invalid_argument"};
    case errc::disk_full:
      return {.status = 507, .code = "disk_full"};
    case errc::io_error:
    case errc::closed:
      return {.status = 503, .code = "unavailable"};
    case errc::corrupt:
      return {.status = 500, .code = "corrupt"};
  }
  return {.status = 500, .code = "internal"};
}

}  // namespace

const std::error_category& node_category() {
  static const ErrorCategory<errc> category("node", describe);
  return category;
}

std::string_view code_string(errc e) {
  const char* text = describe(e);
  return text != nullptr ? text : "internal";
}

int http_status(errc e) {
  switch (e) {
    case errc::bad_json:
    case errc::invalid_argument:
    case errc::invalid_stream_name:
      return 400;
    case errc::system_stream:
      return 403;
    case errc::not_found:
      return 404;
    case errc::method_not_allowed:
      return 405;
    case errc::conflict:
      return 409;
    case errc::payload_too_large:
      return 413;
    case errc::unsupported_media_type:
      return 415;
    case errc::unavailable:
      return 503;
    case errc::internal:
      return 500;
  }
  return 500;
}

std::string allow_header(MethodSet methods) {
  std::string out;
  auto add = [&](MethodSet bit, const char* name) {
    if ((methods & bit) == 0) return;
    if (!out.empty()) out += ", ";
    out += name;
  };
  add(kMethodGet, "GET");
  add(kMethodPost, "POST");
  add(kMethodPut, "PUT");
  add(kMethodDelete, "DELETE");
  return out;
}

ApiError api_error(const Error& error) {
  const std::error_code& code = error.code();
  ApiError out;
  if (code.category() == node_category()) {
    const auto e = static_cast<errc>(code.value());
    out.status = http_status(e);
    out.code = code_string(e);
    if (e == errc::method_not_allowed && error.detail()) {
      out.allow = allow_header(static_cast<MethodSet>(*error.detail()));
    }
  } else if (code.category() == eventlog::eventlog_category()) {
    const auto e = static_cast<eventlog::errc>(code.value());
    out = from_eventlog(e);
    if (e == eventlog::errc::wrong_expected_version) out.actual_version = error.detail();
  } else if (code == keel::errc::invalid_argument) {
    out.status = 400;  // pubsub's refusals (group options, member names, unknown deliveries)
    out.code = "invalid_argument";
  } else {
    out.status = 500;
    out.code = "internal";
  }
  out.message = error.message();
  return out;
}

ApiError payload_too_large(std::size_t limit_bytes) {
  return {.status = 413,
          .code = std::string(code_string(errc::payload_too_large)),
          .message = "the body is over the limit of " + std::to_string(limit_bytes) + " bytes"};
}

std::string error_json(const ApiError& error) {
  std::string out;
  out.reserve(error.message.size() + error.code.size() + 40);
  out += "{\"error\":";
  detail::append_json_string(out, error.code);
  out += ",\"message\":";
  detail::append_json_string(out, error.message);
  if (error.actual_version) {
    out += ",\"actual_version\":";
    detail::append_int(out, *error.actual_version);
  }
  out += '}';
  return out;
}

}  // namespace keel::node

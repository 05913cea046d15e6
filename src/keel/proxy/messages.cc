#include "keel/proxy/messages.h"

namespace keel::proxy {

namespace h1 = http::h1;

const char* flag_code(Flag flag) {
  switch (flag) {
    case Flag::kNone:
      return "-";
    case Flag::kNoRoute:
      return "NR";
    case Flag::kOverflow:
      return "UO";
    case Flag::kBreakerOpen:
      return "BO";
    case Flag::kNoHealthy:
      return "UH";
    case Flag::kConnectFailure:
      return "UF";
    case Flag::kReset:
      return "UR";
    case Flag::kTimeout:
      return "UT";
    case Flag::kDownstreamReset:
      return "DC";
    case Flag::kBadRequest:
      return "BR";
  }
  return "?";
}

LocalReply local_reply_for(Flag flag) {
  switch (flag) {
    case Flag::kConnectFailure:
      return {502, "upstream_connect_failure"};
    case Flag::kReset:
      return {502, "upstream_reset"};
    case Flag::kTimeout:
      return {504, "upstream_timeout"};
    case Flag::kOverflow:
      return {503, "overflow"};
    case Flag::kBreakerOpen:
      return {503, "breaker_open"};
    case Flag::kBadRequest:
      return {400, "bad_request: malformed request body"};
    default:
      return {503, "no_healthy_endpoint"};
  }
}

void upstream_request_head(const h1::Head& request, const Forwarding& forwarding, std::string& out,
                           std::string& forwarded_for) {
  const ForwardedHeaders& forwarded = *forwarding.headers;
  out.clear();
  out.append(request.method).append(" ").append(request.target).append(" HTTP/1.1\r\n");
  forwarded_for.clear();  // every X-Forwarded-For line, in order
  for (const auto& field : request.fields) {
    if (forwarded.x_forwarded_for && h1::iequals(field.name, "x-forwarded-for")) {
      if (!forwarded_for.empty()) forwarded_for.append(", ");
      forwarded_for.append(field.value);
      continue;
    }
    if (!forwarded.x_forwarded_proto && h1::iequals(field.name, "x-forwarded-proto")) {
      out.append(field.name).append(": ").append(field.value).append("\r\n");
      continue;
    }
    // An absolute-form target's authority replaces Host (RFC 9112 3.2.2).
    if (!request.authority.empty() && h1::iequals(field.name, "host")) continue;
    if (h1::hop_by_hop(request, field.name) || h1::iequals(field.name, "expect") ||
        h1::iequals(field.name, "content-length") || h1::iequals(field.name, "x-forwarded-proto") ||
        h1::iequals(field.name, "x-request-id")) {
      continue;
    }
    out.append(field.name).append(": ").append(field.value).append("\r\n");
  }
  if (!request.authority.empty()) out.append("host: ").append(request.authority).append("\r\n");
  if (forwarded.x_forwarded_for) {
    out.append("x-forwarded-for: ");
    if (!forwarded_for.empty()) out.append(forwarded_for).append(", ");
    out.append(forwarding.peer).append("\r\n");
  }
  if (forwarded.x_forwarded_proto) out.append("x-forwarded-proto: http\r\n");
  if (!forwarding.request_id.empty()) {
    out.append("x-request-id: ").append(forwarding.request_id).append("\r\n");
  }
  if (request.framing == h1::Framing::kLength) {
    out.append("content-length: ").append(std::to_string(request.content_length)).append("\r\n");
  } else if (request.framing == h1::Framing::kChunked) {
    out.append("transfer-encoding: chunked\r\n");
  }
  out.append("\r\n");
}

void client_response_head(const h1::Head& response, unsigned version, bool keep_alive, bool dechunk,
                          std::string_view request_id, std::string& out) {
  out.assign(version == 10 ? "HTTP/1.0 " : "HTTP/1.1 ");
  out.append(std::to_string(response.status));
  out.append(" ").append(response.reason).append("\r\n");
  for (const auto& field : response.fields) {
    if (h1::hop_by_hop(response, field.name) || h1::iequals(field.name, "x-request-id") ||
        (response.framing != h1::Framing::kNone && h1::iequals(field.name, "content-length"))) {
      continue;
    }
    out.append(field.name).append(": ").append(field.value).append("\r\n");
  }
  if (response.framing == h1::Framing::kLength) {
    out.append("content-length: ").append(std::to_string(response.content_length)).append("\r\n");
  } else if (response.framing == h1::Framing::kChunked && !dechunk) {
    // As it came: codings before chunked (gzip, chunked) are the body's, not the hop's.
    out.append("transfer-encoding: ").append(response.transfer_encoding).append("\r\n");
  }
  if (!keep_alive) {
    out.append("connection: close\r\n");
  } else if (version == 10) {
    out.append("connection: keep-alive\r\n");
  }
  if (!request_id.empty()) out.append("x-request-id: ").append(request_id).append("\r\n");
  out.append("\r\n");
}

}  // namespace keel::proxy

#include "keel/http/h1.h"

#include <algorithm>
#include <array>

#include "keel/core/text.h"

namespace keel::http::h1 {
namespace {

constexpr std::array<bool, 256> kToken = [] {
  std::array<bool, 256> table{};
  for (int c = '0'; c <= '9'; ++c) table[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) table[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) table[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) table[static_cast<unsigned char>(c)] = true;
  return table;
}();

bool token_char(char c) { return kToken[static_cast<unsigned char>(c)]; }

// A field value's byte: visible ASCII, obs-text, space or tab (no other control).
bool value_char(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u == '\t' || (u >= 0x20 && u != 0x7f);
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Calls on_token(token) for each element of a comma-separated list, trimmed, empty ones skipped.
template <typename F>
void for_each_token(std::string_view list, F&& on_token) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    std::string_view token = trim(list.substr(0, comma));
    if (!token.empty()) on_token(token);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
}

ParseResult error(unsigned status, const char* why) { return {Parsed::kError, status, why}; }

// Reads one line ending in CRLF from `bytes` at `at`; false when it has not all come yet.
// A CR not followed by LF, or an LF alone, is an error.
enum class Line { kOk, kMore, kBad };
Line next_line(std::string_view bytes, std::size_t& at, std::string_view& line) {
  const std::size_t lf = bytes.find('\n', at);
  if (lf == std::string_view::npos) {
    // A bare CR or LF in what has come so far cannot become valid later.
    return Line::kMore;
  }
  if (lf == at || bytes[lf - 1] != '\r') return Line::kBad;
  line = bytes.substr(at, lf - 1 - at);
  at = lf + 1;
  return Line::kOk;
}

bool parse_version(std::string_view text, unsigned& version) {
  if (text == "HTTP/1.1") {
    version = 11;
  } else if (text == "HTTP/1.0") {
    version = 10;
  } else {
    return false;
  }
  return true;
}

// The fields after the start line, and what they say about framing and the connection.
// `request`: the stricter rules for requests (RFC 9112 6.1, 6.3).
// `no_body`: a response that has none whatever its fields say.
ParseResult parse_fields(std::string_view bytes, std::size_t at, bool request, bool no_body,
                         Head& head) {
  head.fields.clear();
  bool has_length = false;
  bool chunked = false;
  bool has_transfer_encoding = false;
  bool close = false;
  bool keep_alive = false;
  int hosts = 0;
  for (;;) {
    std::string_view line;
    switch (next_line(bytes, at, line)) {
      case Line::kMore:
        return {};
      case Line::kBad:
        return error(400, "a line does not end in CRLF");
      case Line::kOk:
        break;
    }
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') {
      return error(400, "obsolete line folding in a field");
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) return error(400, "a field without a colon");
    const std::string_view name = line.substr(0, colon);
    if (name.empty()) return error(400, "a field with an empty name");
    for (char c : name) {
      if (!token_char(c)) return error(400, "a field name with a character not allowed there");
    }
    const std::string_view value = trim(line.substr(colon + 1));
    for (char c : value) {
      if (!value_char(c)) return error(400, "a field value with a control character");
    }
    head.fields.push_back({name, value});

    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 19) return error(400, "a bad Content-Length");
      std::uint64_t length = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return error(400, "a bad Content-Length");
        length = length * 10 + static_cast<std::uint64_t>(c - '0');
      }
      if (has_length && length != head.content_length) {
        return error(400, "two different Content-Length values");
      }
      has_length = true;
      head.content_length = length;
    } else if (iequals(name, "transfer-encoding")) {
      if (has_transfer_encoding) {
        return error(request ? 400 : 502, "more than one Transfer-Encoding field");
      }
      has_transfer_encoding = true;
      head.transfer_encoding = value;
      std::size_t codings = 0;
      bool last_chunked = false;
      for_each_token(value, [&](std::string_view coding) {
        ++codings;
        last_chunked = iequals(coding, "chunked");
      });
      if (codings == 0) return error(request ? 400 : 502, "an empty Transfer-Encoding");
      // A request's body must be chunked and nothing else (RFC 9112 6.3: a request whose final
      // coding is not chunked cannot be framed); a response's is chunked when that is its
      // final coding, else it ends with the connection.
      if (request && (codings > 1 || !last_chunked)) {
        return error(501, "a transfer coding other than chunked");
      }
      chunked = last_chunked;
    } else if (request && iequals(name, "host")) {
      if (++hosts > 1) return error(400, "more than one Host field");
    } else if (iequals(name, "connection")) {
      ++head.connection_fields;
      for_each_token(value, [&](std::string_view option) {
        if (iequals(option, "close")) close = true;
        if (iequals(option, "keep-alive")) keep_alive = true;
      });
    } else if (request && iequals(name, "expect")) {
      if (iequals(value, "100-continue")) head.expect_continue = true;
    }
  }
  head.size = at;
  if (request && head.version == 11 && hosts == 0) return error(400, "no Host field");
  if (request && has_transfer_encoding) {
    if (has_length) return error(400, "both Content-Length and Transfer-Encoding");
    if (head.version == 10) return error(400, "Transfer-Encoding in an HTTP/1.0 request");
  }
  if (no_body) {
    head.framing = Framing::kNone;
  } else if (has_transfer_encoding) {
    head.framing = chunked ? Framing::kChunked : Framing::kUntilClose;
  } else if (has_length) {
    head.framing = Framing::kLength;
  } else {
    head.framing = request ? Framing::kNone : Framing::kUntilClose;
  }
  head.keep_alive = !close && (head.version == 11 || keep_alive);
  if (head.framing == Framing::kUntilClose) head.keep_alive = false;
  return {Parsed::kDone, 0, ""};
}

// absolute-form = "http" / "https" "://" authority [ path-abempty ] [ "?" query ]. Splits the
// target into `authority` and an origin-form `target`; returns why it cannot, or null.
const char* split_absolute_form(Head& head) {
  const std::string_view target = head.target;
  const std::size_t scheme_end = target.find("://");
  if (scheme_end == std::string_view::npos)
    return "a request target that is neither a path nor a URI";
  const std::string_view scheme = target.substr(0, scheme_end);
  if (!iequals(scheme, "http") && !iequals(scheme, "https")) {
    return "an absolute request target whose scheme is not http or https";
  }
  const std::size_t authority_start = scheme_end + 3;
  const std::size_t path_start = target.find_first_of("/?", authority_start);
  const std::string_view authority = target.substr(
      authority_start,
      path_start == std::string_view::npos ? std::string_view::npos : path_start - authority_start);
  if (authority.empty()) return "an absolute request target without a host";
  for (char c : authority) {
    // host [ ":" port ], host a reg-name, IPv4 or IP literal; no userinfo (RFC 9110 4.2.4).
    const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         (c >= '0' && c <= '9') ||
                         std::string_view("-._~!$&'()*+,;=:%[]").find(c) != std::string_view::npos;
    if (!allowed) {
      return c == '@' ? "an absolute request target with userinfo"
                      : "an absolute request target with a character not allowed in a host";
    }
  }
  head.authority = authority;
  if (path_start == std::string_view::npos) {
    head.target = "/";
  } else if (target[path_start] == '?') {
    return "an absolute request target with a query but no path";
  } else {
    head.target = target.substr(path_start);
  }
  return nullptr;
}

void reset(Head& head) {
  head.method = {};
  head.target = {};
  head.authority = {};
  head.status = 0;
  head.reason = {};
  head.version = 11;
  head.framing = Framing::kNone;
  head.content_length = 0;
  head.keep_alive = true;
  head.expect_continue = false;
  head.size = 0;
  head.connection_fields = 0;
  head.transfer_encoding = {};
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  }
  return true;
}

std::string_view Head::find(std::string_view name) const {
  for (const auto& field : fields) {
    if (iequals(field.name, name)) return field.value;
  }
  return {};
}

bool Head::has(std::string_view name) const {
  return std::any_of(fields.begin(), fields.end(),
                     [&](const Field& field) { return iequals(field.name, name); });
}

ParseResult parse_request(std::string_view bytes, Head& head) {
  reset(head);
  std::size_t at = 0;
  while (bytes.substr(at, 2) == "\r\n") at += 2;  // empty lines before a request
  if (at == bytes.size() || bytes.substr(at) == "\r") return {};
  std::string_view line;
  switch (next_line(bytes, at, line)) {
    case Line::kMore:
      // No line end yet: an impossible first byte need not wait for the rest.
      if (!token_char(bytes[at])) return error(400, "not an HTTP request");
      return {};
    case Line::kBad:
      return error(400, "the request line does not end in CRLF");
    case Line::kOk:
      break;
  }
  const std::size_t first = line.find(' ');
  const std::size_t last = line.rfind(' ');
  if (first == std::string_view::npos || first == last || first == 0) {
    return error(400, "a malformed request line");
  }
  head.method = line.substr(0, first);
  head.target = line.substr(first + 1, last - first - 1);
  for (char c : head.method) {
    if (!token_char(c)) return error(400, "a method with a character not allowed there");
  }
  if (head.target.empty()) return error(400, "an empty request target");
  for (char c : head.target) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7f) return error(400, "a request target with a space or control");
  }
  if (!parse_version(line.substr(last + 1), head.version)) {
    return error(400, "an HTTP version other than 1.0 or 1.1");
  }
  if (head.target.front() != '/' && head.target != "*") {
    if (const char* why = split_absolute_form(head)) return error(400, why);
  }
  return parse_fields(bytes, at, true, false, head);
}

ParseResult parse_response(std::string_view bytes, bool head_request, Head& head) {
  reset(head);
  std::size_t at = 0;
  std::string_view line;
  switch (next_line(bytes, at, line)) {
    case Line::kMore:
      return {};
    case Line::kBad:
      return error(502, "the status line does not end in CRLF");
    case Line::kOk:
      break;
  }
  // HTTP/1.x SP 3DIGIT SP [reason]; some servers leave out the space after the code.
  if (line.size() < 12 || !parse_version(line.substr(0, 8), head.version) || line[8] != ' ') {
    return error(502, "a malformed status line");
  }
  for (std::size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return error(502, "a malformed status code");
  }
  head.status =
      static_cast<unsigned>((line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0'));
  if (head.status < 100) return error(502, "a status code below 100");
  if (line.size() > 12) {
    if (line[12] != ' ') return error(502, "a malformed status line");
    head.reason = line.substr(13);
    for (char c : head.reason) {
      if (!value_char(c)) return error(502, "a reason phrase with a control character");
    }
  }
  const bool no_body =
      head_request || head.status < 200 || head.status == 204 || head.status == 304;
  return parse_fields(bytes, at, false, no_body, head);
}

bool hop_by_hop(const Head& head, std::string_view name) {
  static constexpr std::string_view kAlways[] = {"connection", "keep-alive", "proxy-connection",
                                                 "te",         "trailer",    "transfer-encoding",
                                                 "upgrade"};
  for (auto always : kAlways) {
    if (iequals(name, always)) return true;
  }
  if (head.connection_fields == 0) return false;
  bool named = false;
  for (const auto& field : head.fields) {
    if (!iequals(field.name, "connection")) continue;
    for_each_token(field.value,
                   [&](std::string_view option) { named = named || iequals(option, name); });
  }
  return named;
}

bool ChunkedReader::framing_byte(char c) {
  auto fail = [&](const char* why) {
    error_ = why;
    return false;
  };
  switch (state_) {
    case State::kSize: {
      int digit = -1;
      if (c >= '0' && c <= '9') digit = c - '0';
      if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
      if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
      if (digit >= 0) {
        if (++digits_ > 16) return fail("a chunk size longer than 16 hex digits");
        remaining_ = remaining_ * 16 + static_cast<std::uint64_t>(digit);
        return true;
      }
      if (digits_ == 0) return fail("a chunk without a hex size");
      if (c == ';' || c == ' ' || c == '\t') {
        // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] ): whitespace may
        // come before the ';', nothing else.
        state_ = c == ';' ? State::kExtension : State::kExtensionSpace;
        line_ = 0;
        return true;
      }
      if (c == '\r') {
        state_ = State::kSizeLf;
        return true;
      }
      return fail("a bad character after a chunk size");
    }
    case State::kExtensionSpace:
      if (++line_ > max_line_) return fail("a chunk extension too long");
      if (c == ' ' || c == '\t') return true;
      if (c == ';') {
        state_ = State::kExtension;
        return true;
      }
      return fail("a chunk size followed by something other than an extension");
    case State::kExtension:
      if (c == '\r') {
        state_ = State::kSizeLf;
        return true;
      }
      if (!value_char(c)) return fail("a control character in a chunk extension");
      if (++line_ > max_line_) return fail("a chunk extension too long");
      return true;
    case State::kSizeLf:
      if (c != '\n') return fail("a chunk size line that does not end in CRLF");
      digits_ = 0;
      if (remaining_ == 0) {
        state_ = State::kTrailer;
        line_ = 0;
      } else {
        state_ = State::kData;
      }
      return true;
    case State::kDataCr:
      if (c != '\r') return fail("chunk data longer than its size");
      state_ = State::kDataLf;
      return true;
    case State::kDataLf:
      if (c != '\n') return fail("chunk data not followed by CRLF");
      state_ = State::kSize;
      return true;
    case State::kTrailer:  // a trailer line's field name, or the blank line that ends the body
      if (c == '\r') {
        // A line with no colon is not a field line: forwarded as a "trailer", a request line
        // and Host there would be a second request to a lenient upstream.
        if (line_ != 0) return fail("a trailer line that is not a field (no colon)");
        state_ = State::kTrailerLf;
        return true;
      }
      if (c == ':') {
        if (line_ == 0) return fail("a trailer field with an empty name");
        state_ = State::kTrailerValue;
      } else if (!token_char(c)) {
        return fail(line_ == 0 && (c == ' ' || c == '\t')
                        ? "obsolete line folding in a trailer"
                        : "a trailer line that is not a field (a character not allowed in a "
                          "field name)");
      }
      if (++line_ > max_line_ || ++trailer_bytes_ > max_line_) {
        return fail("trailer fields longer than their limit");
      }
      return true;
    case State::kTrailerValue:
      if (c == '\r') {
        state_ = State::kTrailerLf;
        return true;
      }
      if (!value_char(c)) return fail("a control character in a trailer");
      if (++line_ > max_line_ || ++trailer_bytes_ > max_line_) {
        return fail("trailer fields longer than their limit");
      }
      return true;
    case State::kTrailerLf:
      if (c != '\n') return fail("a trailer line that does not end in CRLF");
      if (line_ == 0) {
        state_ = State::kDone;
      } else {
        state_ = State::kTrailer;
        line_ = 0;
      }
      return true;
    case State::kData:
    case State::kDone:
      break;
  }
  return fail("bytes after the end of a chunked body");
}

}  // namespace keel::http::h1

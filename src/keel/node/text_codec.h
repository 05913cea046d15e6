// Byte-level helpers of the node's API codec (internal): UTF-8 checks, percent-decoding, and the
// pieces of JSON and SSE text the encoders write. Each works in one pass over its input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "keel/core/text.h"

namespace keel::node::detail {

// UTF-8 and percent-decoding live in core (keel/core/text.h), shared with http/ and the proxy.
using keel::decode_utf8;
using keel::invalid_utf8_at;
using keel::percent_decode;

// C0 controls, DEL and the C1 controls: never part of a name.
constexpr bool is_control(char32_t c) { return c < 0x20 || (c >= 0x7f && c <= 0x9f); }

// Appends `text` as a quoted JSON string (keel::append_json_escaped between quotes).
void append_json_string(std::string& out, std::string_view text);
void append_uint(std::string& out, std::uint64_t value);
void append_int(std::string& out, std::int64_t value);

// RFC 3339 in UTC with nanoseconds, "2024-05-01T12:34:56.123456789Z".
void append_rfc3339(std::string& out, std::int64_t unix_ns);

using keel::append_base64;

// `text` quoted for an error message, cut after `limit` bytes (at a UTF-8 boundary).
std::string quote_for_message(std::string_view text, std::size_t limit = 64);

}  // namespace keel::node::detail

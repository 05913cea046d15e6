// Byte-level helpers of the node's API codec (internal): UTF-8 checks, percent-decoding, and the
// pieces of JSON and SSE text the encoders write. Each works in one pass over its input.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel::node::detail {

// The code point starting at text[i] and its length in bytes, or nullopt when the bytes there
// are not well-formed UTF-8 (overlong forms, surrogates and values above U+10FFFF included).
struct CodePoint {
  char32_t value;
  std::size_t length;
};
std::optional<CodePoint> decode_utf8(std::string_view text, std::size_t i);

// Where `text` first fails to be UTF-8, or nullopt when it is UTF-8 throughout.
std::optional<std::size_t> invalid_utf8_at(std::string_view text);

// C0 controls, DEL and the C1 controls: never part of a name.
constexpr bool is_control(char32_t c) { return c < 0x20 || (c >= 0x7f && c <= 0x9f); }

// Percent-decodes `text` (RFC 3986 2.1) into `out`; with `plus_is_space` (query strings, as
// HTML forms write them) '+' is a space. Returns the offset of a '%' not followed by two hex
// digits, or nullopt when every escape was well formed.
std::optional<std::size_t> percent_decode(std::string_view text, bool plus_is_space,
                                          std::string& out);

// Appends `text` as a JSON string: quoted, with '"', '\\' and control characters escaped;
// bytes that are not UTF-8 become U+FFFD, so the output is always valid JSON.
void append_json_string(std::string& out, std::string_view text);
void append_uint(std::string& out, std::uint64_t value);
void append_int(std::string& out, std::int64_t value);

// RFC 3339 in UTC with nanoseconds, "2024-05-01T12:34:56.123456789Z".
void append_rfc3339(std::string& out, std::int64_t unix_ns);

// Standard base64 (RFC 4648 4), with padding.
void append_base64(std::string& out, std::string_view bytes);

// `text` quoted for an error message, cut after `limit` bytes (at a UTF-8 boundary).
std::string quote_for_message(std::string_view text, std::size_t limit = 64);

}  // namespace keel::node::detail

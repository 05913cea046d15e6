// Small text helpers that several areas need (header names, config lists).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace keel {

// ASCII lower case (HTTP header names, config keys); other bytes unchanged.
constexpr char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}
std::string ascii_lower(std::string_view text);
void ascii_lower_in_place(std::string& text);

// "a, b,c" -> {"a", "b", "c"}: split at commas, spaces trimmed, empty items dropped.
std::vector<std::string> split_list(std::string_view text);

// The code point starting at text[i] and its length in bytes, or nullopt when the bytes there
// are not well-formed UTF-8 (RFC 3629: overlong forms, surrogates and values above U+10FFFF
// included).
struct Utf8CodePoint {
  char32_t value;
  std::size_t length;
};
std::optional<Utf8CodePoint> decode_utf8(std::string_view text, std::size_t i);

// Where `text` first fails to be UTF-8, or nullopt when it is UTF-8 throughout.
std::optional<std::size_t> invalid_utf8_at(std::string_view text);

// Percent-decodes `text` (RFC 3986 2.1) into `out`; with `plus_is_space` (query strings, as
// HTML forms write them) '+' is a space. Returns the offset of a '%' not followed by two hex
// digits, or nullopt when every escape was well formed.
std::optional<std::size_t> percent_decode(std::string_view text, bool plus_is_space,
                                          std::string& out);

// Whether `text` is exactly one JSON value (RFC 8259), whitespace around it allowed: strings
// well-formed UTF-8 with valid escapes (a \u surrogate only in a pair), no control characters,
// numbers that fit a double, any depth (it keeps its own stack, no recursion). What passes can
// be copied into a JSON document as it is. (Unlike nlohmann's accept(), a leading byte-order
// mark is not JSON: copied into a document it would make that invalid.)
bool is_json_value(std::string_view text);

// Appends `text` escaped for the inside of a JSON string ('"', '\\' and control characters
// escaped; bytes that are not UTF-8 become U+FFFD), so the output is always valid JSON. No
// quotes: the caller writes them.
void append_json_escaped(std::string& out, std::string_view text);

// Standard base64 (RFC 4648 4) with padding, appended to `out`.
void append_base64(std::string& out, std::string_view bytes);
inline std::string base64_encode(std::string_view bytes) {
  std::string out;
  append_base64(out, bytes);
  return out;
}
// The bytes of standard or URL-safe base64 (RFC 4648 4 and 5), padding optional; nullopt when
// `text` has another character or a length no encoding gives.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace keel

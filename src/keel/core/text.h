// Small text helpers that several areas need (header names, config lists).
#pragma once

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

}  // namespace keel

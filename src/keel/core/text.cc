#include "keel/core/text.h"

namespace keel {

std::string ascii_lower(std::string_view text) {
  std::string out(text);
  ascii_lower_in_place(out);
  return out;
}

void ascii_lower_in_place(std::string& text) {
  for (char& c : text) c = ascii_lower(c);
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> words;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    std::string_view word = text.substr(0, comma);
    while (!word.empty() && word.front() == ' ') word.remove_prefix(1);
    while (!word.empty() && word.back() == ' ') word.remove_suffix(1);
    if (!word.empty()) words.emplace_back(word);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return words;
}

}  // namespace keel

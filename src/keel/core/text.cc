#include "keel/core/text.h"

#include <cmath>
#include <cstdlib>

namespace keel {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr char kHex[] = "0123456789abcdef";

}  // namespace

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

std::optional<Utf8CodePoint> decode_utf8(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return Utf8CodePoint{lead, 1};
  std::size_t length;
  char32_t value;
  char32_t minimum;
  if ((lead & 0xe0) == 0xc0) {
    length = 2, value = lead & 0x1f, minimum = 0x80;
  } else if ((lead & 0xf0) == 0xe0) {
    length = 3, value = lead & 0x0f, minimum = 0x800;
  } else if ((lead & 0xf8) == 0xf0) {
    length = 4, value = lead & 0x07, minimum = 0x10000;
  } else {
    return std::nullopt;
  }
  if (text.size() - i < length) return std::nullopt;
  for (std::size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return std::nullopt;
    value = (value << 6) | (byte(i + k) & 0x3f);
  }
  if (value < minimum || value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff)) {
    return std::nullopt;
  }
  return Utf8CodePoint{value, length};
}

std::optional<std::size_t> invalid_utf8_at(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    if (static_cast<unsigned char>(text[i]) < 0x80) {
      ++i;
      continue;
    }
    auto point = decode_utf8(text, i);
    if (!point) return i;
    i += point->length;
  }
  return std::nullopt;
}

std::optional<std::size_t> percent_decode(std::string_view text, bool plus_is_space,
                                          std::string& out) {
  out.clear();
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      const int high = i + 1 < text.size() ? hex_value(text[i + 1]) : -1;
      const int low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
      if (high < 0 || low < 0) return i;
      out.push_back(static_cast<char>(high * 16 + low));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return std::nullopt;
}

void append_json_escaped(std::string& out, std::string_view text) {
  std::size_t run = 0;  // start of the bytes that need no escaping, copied in one append
  for (std::size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (auto point = decode_utf8(text, i)) {
        i += point->length;
        continue;
      }
    }
    out.append(text.data() + run, i - run);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 0xf]);
        } else {
          out += "\xef\xbf\xbd";  // U+FFFD for a byte that is not UTF-8
        }
    }
    ++i;
    run = i;
  }
  out.append(text.data() + run, text.size() - run);
}

}  // namespace keel

namespace keel {
namespace {

class JsonValidator {
 public:
  explicit JsonValidator(std::string_view text) : text_(text) {}

  // Iterative: the open containers are a stack of brackets, so no nesting can overflow ours.
  bool run() {
    bool want_value = true;
    for (;;) {
      skip_space();
      if (want_value) {
        if (at_end()) return false;
        const char c = text_[i_];
        if (c == '{' || c == '[') {
          ++i_;
          skip_space();
          if (!at_end() && text_[i_] == closing(c)) {
            ++i_;  // empty: a whole value
          } else {
            stack_.push_back(c);
            if (c == '{' && !key()) return false;
            continue;  // its first member's value
          }
        } else if (!scalar()) {
          return false;
        }
        want_value = false;
        continue;
      }
      // After a value: the end, or a ',' and the next member, or the container's end.
      if (stack_.empty()) return at_end();
      if (at_end()) return false;
      const char c = text_[i_++];
      if (c == closing(stack_.back())) {
        stack_.pop_back();  // the container is a whole value
        continue;
      }
      if (c != ',') return false;
      skip_space();
      if (stack_.back() == '{' && !key()) return false;
      want_value = true;
    }
  }

 private:
  static char closing(char open) { return open == '{' ? '}' : ']'; }
  bool at_end() const { return i_ >= text_.size(); }
  void skip_space() {
    while (!at_end() &&
           (text_[i_] == ' ' || text_[i_] == '\t' || text_[i_] == '\n' || text_[i_] == '\r'))
      ++i_;
  }
  // `"key" :` (the value follows).
  bool key() {
    if (at_end() || text_[i_] != '"' || !string()) return false;
    skip_space();
    if (at_end() || text_[i_] != ':') return false;
    ++i_;
    return true;
  }
  bool scalar() {
    switch (text_[i_]) {
      case '"':
        return string();
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        return number();
    }
  }
  bool literal(std::string_view word) {
    if (text_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  bool digits() {
    const std::size_t start = i_;
    while (!at_end() && text_[i_] >= '0' && text_[i_] <= '9') ++i_;
    return i_ > start;
  }
  bool number() {
    const std::size_t start = i_;
    if (!at_end() && text_[i_] == '-') ++i_;
    if (at_end()) return false;
    if (text_[i_] == '0') {
      ++i_;
    } else if (!digits()) {
      return false;
    }
    bool fraction = false;
    if (!at_end() && text_[i_] == '.') {
      ++i_;
      if (!digits()) return false;
      fraction = true;
    }
    if (!at_end() && (text_[i_] == 'e' || text_[i_] == 'E')) {
      ++i_;
      if (!at_end() && (text_[i_] == '+' || text_[i_] == '-')) ++i_;
      if (!digits()) return false;
      fraction = true;
    }
    // A number may overflow a double (1e400, or an integer of 400 digits): refused, as JSON
    // readers that read numbers as doubles must. Short integers cannot.
    if (!fraction && i_ - start <= 20) return true;
    const std::string copy(text_.substr(start, i_ - start));
    return std::isfinite(std::strtod(copy.c_str(), nullptr));
  }
  int hex4() {
    if (text_.size() - i_ < 4) return -1;
    int value = 0;
    for (int k = 0; k < 4; ++k) {
      const int digit = hex_value(text_[i_++]);
      if (digit < 0) return -1;
      value = value << 4 | digit;
    }
    return value;
  }
  bool string() {
    ++i_;  // the opening quote
    for (;;) {
      if (at_end()) return false;
      const auto c = static_cast<unsigned char>(text_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i_ >= text_.size()) return false;
        const char escaped = text_[i_++];
        if (escaped == 'u') {
          const int unit = hex4();
          if (unit < 0 || (unit >= 0xDC00 && unit <= 0xDFFF)) return false;
          if (unit >= 0xD800 && unit <= 0xDBFF) {  // a high surrogate: a low one must follow
            if (text_.size() - i_ < 2 || text_[i_] != '\\' || text_[i_ + 1] != 'u') return false;
            i_ += 2;
            const int low = hex4();
            if (low < 0xDC00 || low > 0xDFFF) return false;
          }
        } else if (std::string_view("\"\\/bfnrt").find(escaped) == std::string_view::npos) {
          return false;
        }
      } else if (c < 0x80) {
        ++i_;
      } else {
        auto code_point = decode_utf8(text_, i_);
        if (!code_point) return false;
        i_ += code_point->length;
      }
    }
  }

  std::string_view text_;
  std::size_t i_ = 0;
  std::string stack_;  // the open containers' brackets
};

}  // namespace

bool is_json_value(std::string_view text) { return JsonValidator(text).run(); }

void append_base64(std::string& out, std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out.reserve(out.size() + (bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  const auto at = [&](std::size_t k) -> std::uint32_t {
    return static_cast<unsigned char>(bytes[k]);
  };
  for (; i + 3 <= bytes.size(); i += 3) {
    const std::uint32_t n = at(i) << 16 | at(i + 1) << 8 | at(i + 2);
    out.push_back(kAlphabet[n >> 18]);
    out.push_back(kAlphabet[n >> 12 & 63]);
    out.push_back(kAlphabet[n >> 6 & 63]);
    out.push_back(kAlphabet[n & 63]);
  }
  if (bytes.size() - i == 1) {
    const std::uint32_t n = at(i) << 16;
    out.push_back(kAlphabet[n >> 18]);
    out.push_back(kAlphabet[n >> 12 & 63]);
    out += "==";
  } else if (bytes.size() - i == 2) {
    const std::uint32_t n = at(i) << 16 | at(i + 1) << 8;
    out.push_back(kAlphabet[n >> 18]);
    out.push_back(kAlphabet[n >> 12 & 63]);
    out.push_back(kAlphabet[n >> 6 & 63]);
    out.push_back('=');
  }
}

std::optional<std::string> base64_decode(std::string_view text) {
  auto value_of = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
  };
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    const int v = value_of(c);
    if (v < 0) return std::nullopt;
    buffer = (buffer << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

}  // namespace keel

#include "keel/kafka/metadata.h"

#include <charconv>
#include <nlohmann/json.hpp>

#include "keel/core/text.h"

namespace keel::kafka {

using json = nlohmann::json;

namespace {

// `bytes` as a JSON member: "name":"text" when it is UTF-8, else "name_base64":"...".
void put_bytes(std::string& m, std::string_view name, std::string_view bytes) {
  m += '"';
  m += name;
  if (invalid_utf8_at(bytes)) {
    m += "_base64\":\"";
    append_base64(m, bytes);
  } else {
    m += "\":\"";
    append_json_escaped(m, bytes);
  }
  m += '"';
}

}  // namespace

std::string record_metadata(const Record& r) {
  std::string m = R"({"kafka":{"timestamp":)";
  m += std::to_string(r.timestamp);
  if (r.key) {
    m += ',';
    put_bytes(m, "key", *r.key);
  }
  if (!r.value) m += R"(,"value":null)";
  if (!r.headers.empty()) {
    m += R"(,"headers":[)";
    for (std::size_t i = 0; i < r.headers.size(); ++i) {
      if (i > 0) m += ',';
      m += '{';
      put_bytes(m, "key", r.headers[i].key);
      m += ',';
      if (r.headers[i].value) {
        put_bytes(m, "value", *r.headers[i].value);
      } else {
        m += R"("value":null)";
      }
      m += '}';
    }
    m += ']';
  }
  m += "}}";
  return m;
}

namespace {

std::optional<std::string> bytes_member(const json& object, const char* name) {
  auto text = object.find(name);
  if (text != object.end() && text->is_string()) return text->get<std::string>();
  auto b64 = object.find(std::string(name) + "_base64");
  if (b64 != object.end() && b64->is_string()) return base64_decode(b64->get<std::string>());
  return std::nullopt;
}

// The general reader: any JSON an HTTP writer may have put under "kafka".
std::optional<KafkaFields> kafka_fields_json(std::string_view metadata) {
  json doc = json::parse(metadata, nullptr, false);
  if (!doc.is_object()) return std::nullopt;
  auto it = doc.find("kafka");
  if (it == doc.end() || !it->is_object()) return std::nullopt;
  const json& k = *it;
  KafkaFields f;
  if (auto t = k.find("timestamp"); t != k.end() && t->is_number_integer()) {
    f.timestamp = t->get<std::int64_t>();
  }
  f.key = bytes_member(k, "key");
  if (auto v = k.find("value"); v != k.end() && v->is_null()) f.null_value = true;
  if (auto h = k.find("headers"); h != k.end() && h->is_array()) {
    for (const json& header : *h) {
      if (!header.is_object()) continue;
      auto key = bytes_member(header, "key");
      if (!key) continue;
      f.headers.emplace_back(std::move(*key), bytes_member(header, "value"));
    }
  }
  return f;
}

// Reads exactly what record_metadata() writes, in one pass; false on anything else (the
// caller then takes the general reader).
class FastMetadata {
 public:
  explicit FastMetadata(std::string_view text) : s_(text) {}

  bool read(KafkaFields& f) {
    if (!literal(R"({"kafka":{"timestamp":)") || !integer(f.timestamp)) return false;
    while (at_ < s_.size() && s_[at_] == ',') {
      ++at_;
      std::string name;
      if (!string(name) || !literal(":")) return false;
      if (name == "key" || name == "key_base64") {
        std::string key;
        if (!string(key)) return false;
        f.key = name == "key" ? std::optional(std::move(key)) : base64_decode(key);
        if (!f.key) return false;
      } else if (name == "value") {
        if (!literal("null")) return false;
        f.null_value = true;
      } else if (name == "headers") {
        if (!headers(f)) return false;
      } else {
        return false;
      }
    }
    return literal("}}") && at_ == s_.size();
  }

 private:
  bool literal(std::string_view text) {
    if (s_.substr(at_, text.size()) != text) return false;
    at_ += text.size();
    return true;
  }
  bool integer(std::int64_t& out) {
    const char* begin = s_.data() + at_;
    auto [end, error] = std::from_chars(begin, s_.data() + s_.size(), out);
    if (error != std::errc()) return false;
    at_ += static_cast<std::size_t>(end - begin);
    return true;
  }
  bool hex4(std::uint32_t& out) {
    if (at_ + 4 > s_.size()) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[at_++];
      out <<= 4;
      if (c >= '0' && c <= '9')
        out |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        out |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        out |= static_cast<std::uint32_t>(c - 'A' + 10);
      else
        return false;
    }
    return true;
  }
  static void utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }
  bool string(std::string& out) {
    if (!literal("\"")) return false;
    while (at_ < s_.size()) {
      const std::size_t plain = s_.find_first_of("\"\\", at_);
      if (plain == std::string_view::npos) return false;
      out.append(s_.substr(at_, plain - at_));
      at_ = plain + 1;
      if (s_[plain] == '"') return true;
      if (at_ >= s_.size()) return false;
      const char e = s_[at_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out.push_back(e);
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!hex4(cp)) return false;
          if (cp >= 0xd800 && cp < 0xdc00) {
            std::uint32_t low = 0;
            if (!literal("\\u") || !hex4(low) || low < 0xdc00 || low > 0xdfff) return false;
            cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            return false;
          }
          utf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }
  bool headers(KafkaFields& f) {
    if (!literal("[")) return false;
    if (literal("]")) return true;
    do {
      std::string name;
      std::string key;
      if (!literal("{") || !string(name) || !literal(":") || !string(key)) return false;
      if (name == "key_base64") {
        auto decoded = base64_decode(key);
        if (!decoded) return false;
        key = std::move(*decoded);
      } else if (name != "key") {
        return false;
      }
      name.clear();
      if (!literal(",") || !string(name) || !literal(":")) return false;
      std::optional<std::string> value;
      if (name == "value" && literal("null")) {
        value = std::nullopt;
      } else {
        std::string text;
        if (!string(text)) return false;
        if (name == "value")
          value = std::move(text);
        else if (name == "value_base64")
          value = base64_decode(text);
        else
          return false;
        if (!value) return false;
      }
      if (!literal("}")) return false;
      f.headers.emplace_back(std::move(key), std::move(value));
    } while (literal(","));
    return literal("]");
  }

  std::string_view s_;
  std::size_t at_ = 0;
};

}  // namespace

std::optional<KafkaFields> kafka_fields(std::string_view metadata) {
  if (metadata.find("\"kafka\"") == std::string_view::npos) return std::nullopt;
  KafkaFields fast;
  if (FastMetadata(metadata).read(fast)) return fast;
  return kafka_fields_json(metadata);
}

}  // namespace keel::kafka

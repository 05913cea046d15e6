#include "keel/node/json_body.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "keel/node/api.h"
#include "keel/node/text_codec.h"

namespace keel::node::detail {
namespace {

constexpr std::size_t kMaxPathBytes = 200;  // of a place named in an error message

// Builds an ordered_json from SAX events. Each open array or object is a frame holding its
// finished children; a frame becomes a value when it closes and goes into its parent.
class Builder {
 public:
  Json take() { return std::move(root_); }
  const std::optional<Error>& error() const { return error_; }

  bool null() { return add(Json(nullptr)); }
  bool boolean(bool value) { return add(Json(value)); }
  bool number_integer(Json::number_integer_t value) { return add(Json(value)); }
  bool number_unsigned(Json::number_unsigned_t value) { return add(Json(value)); }
  bool number_float(Json::number_float_t value, const Json::string_t& text) {
    // nlohmann reads an integer that does not fit 64 bits as a double: refuse it rather than
    // store other digits than the client sent. (1e400 and the like fail in the lexer.)
    if (text.find_first_of(".eE") == std::string::npos) {
      return fail(errc::invalid_argument,
                  "the integer " + quote_for_message(text, 40) + " at " + place() +
                      " is out of range: integers must lie in -2^63 .. 2^64-1 (send larger "
                      "ones as strings)");
    }
    return add(Json(value));
  }
  bool string(Json::string_t& value) { return add(Json(std::move(value))); }
  bool binary(Json::binary_t& value) { return add(Json::binary(std::move(value))); }

  bool start_object(std::size_t) { return open(true); }
  bool key(Json::string_t& key) {
    stack_.back().key = std::move(key);
    return true;
  }
  bool end_object() {
    Frame frame = std::move(stack_.back());
    stack_.pop_back();
    // Duplicate keys, found by sorting views of them: n log n, no copies of the keys.
    std::vector<std::string_view> keys;
    keys.reserve(frame.members.size());
    for (const auto& member : frame.members) keys.emplace_back(member.first);
    std::sort(keys.begin(), keys.end());
    if (auto twice = std::adjacent_find(keys.begin(), keys.end()); twice != keys.end()) {
      return fail(errc::bad_json, "the key " + quote_for_message(*twice) + " appears twice in " +
                                      (stack_.empty() ? "the body" : place()));
    }
    Json object(Json::value_t::object);
    auto& map = object.get_ref<Json::object_t&>();
    map.reserve(frame.members.size());
    // The vector underneath ordered_map, not its emplace(): that searches for the key first.
    for (auto& member : frame.members)
      map.emplace_back(std::move(member.first), std::move(member.second));
    return add(std::move(object));
  }
  bool start_array(std::size_t) { return open(false); }
  bool end_array() {
    Frame frame = std::move(stack_.back());
    stack_.pop_back();
    return add(Json(std::move(frame.array)));
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& exception) {
    // what() is "[json.exception.parse_error.101] parse error at line 1, column 5: syntax
    // error while parsing value - …; last read: '…'". Keep the middle: the prefix is noise and
    // the last read token can be the whole body.
    std::string_view what = exception.what();
    if (auto bracket = what.find("] ");
        what.starts_with("[json.exception.") && bracket != std::string_view::npos) {
      what.remove_prefix(bracket + 2);
    }
    std::string text(what);
    if (auto last = what.find("; last read:"); last != std::string_view::npos) {
      const auto expected = what.rfind("; expected ");
      text = std::string(what.substr(0, last));
      if (expected != std::string_view::npos && expected > last) text += what.substr(expected);
    }
    if (text.size() > 300) text.resize(300);
    // nlohmann counts the byte it stopped at from 1.
    const std::size_t byte = position > 0 ? position - 1 : 0;
    return fail(errc::bad_json,
                "the body is not JSON: at byte " + std::to_string(byte) + ": " + text);
  }

 private:
  struct Frame {
    bool object = false;
    Json::array_t array;
    std::vector<std::pair<std::string, Json>> members;
    std::string key;  // of the member being read
  };

  bool open(bool object) {
    if (stack_.size() >= kMaxJsonDepth) {
      return fail(errc::bad_json, "the body nests arrays and objects deeper than " +
                                      std::to_string(kMaxJsonDepth) + " levels, at " + place());
    }
    stack_.push_back(Frame{.object = object});
    return true;
  }

  bool add(Json value) {
    if (stack_.empty()) {
      root_ = std::move(value);
      return true;
    }
    Frame& frame = stack_.back();
    if (frame.object) {
      frame.members.emplace_back(std::move(frame.key), std::move(value));
    } else {
      frame.array.push_back(std::move(value));
    }
    return true;
  }

  // Where the value being read is, as "events[2].data.total".
  std::string place() const {
    std::string out;
    for (const Frame& frame : stack_) {
      if (frame.object) {
        if (!out.empty()) out.push_back('.');
        out += frame.key;
      } else {
        out += "[" + std::to_string(frame.array.size()) + "]";
      }
      if (out.size() > kMaxPathBytes) break;
    }
    if (out.empty()) return "the top level";
    std::string quoted = quote_for_message(out, kMaxPathBytes);
    return quoted.substr(1, quoted.size() - 2);  // escaped, without the quotes
  }

  bool fail(errc code, std::string message) {
    error_ = Error(code, std::move(message));
    return false;
  }

  std::vector<Frame> stack_;
  Json root_;
  std::optional<Error> error_;
};

}  // namespace

Result<Json> parse_json_body(std::string_view body) {
  // nlohmann's lexer takes a NUL byte for the end of the input and would accept "1\0junk";
  // JSON has no place for a raw NUL, in a string or out of one.
  if (const std::size_t nul = body.find('\0'); nul != std::string_view::npos) {
    return Error(errc::bad_json,
                 "the body is not JSON: at byte " + std::to_string(nul) + ": a NUL byte");
  }
  Builder builder;
  const bool parsed = Json::sax_parse(body, &builder);
  if (!parsed || builder.error()) {
    if (builder.error()) return *builder.error();
    return Error(errc::bad_json, "the body is not JSON");
  }
  return builder.take();
}

std::string describe_json(const Json& value, std::size_t limit) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() <= limit) return text;
  std::size_t end = limit;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xc0) == 0x80) --end;
  return text.substr(0, end) + "...";
}

}  // namespace keel::node::detail

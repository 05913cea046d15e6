#include "keel/core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

namespace keel::config {

struct detail::DocumentState {
  std::string source_name;
  YAML::Node root;
  std::vector<std::string> errors;
};

struct Node::Impl {
  std::shared_ptr<detail::DocumentState> state;
  YAML::Node node;  // a null node when absent, never yaml-cpp's invalid "zombie" node
  YAML::Mark mark;  // this node's position, or its parent's when absent
};

namespace {

std::string position(const detail::DocumentState& state, const YAML::Mark& mark) {
  if (mark.line < 0) return state.source_name;
  return state.source_name + ":" + std::to_string(mark.line + 1) + ":" +
         std::to_string(mark.column + 1);
}

std::string shown(const YAML::Node& node) {
  if (node.IsScalar()) return "\"" + node.Scalar() + "\"";
  if (node.IsSequence()) return "a list";
  if (node.IsMap()) return "a mapping";
  return "nothing";
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

bool parse_integer(const std::string& text, std::int64_t& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  long long value = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  out = value;
  return true;
}

bool parse_double(const std::string& text, double& out) {
  if (text.empty()) return false;
  errno = 0;
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (errno != 0 || *end != '\0' || !std::isfinite(value)) return false;
  out = value;
  return true;
}

// `map[key]` without yaml-cpp's pitfalls: const lookup (never inserts), and an absent key
// gives nullopt instead of an invalid node whose accessors throw.
std::optional<YAML::Node> lookup(const YAML::Node& map, std::string_view key) {
  if (!map.IsMap()) return std::nullopt;
  const YAML::Node& const_map = map;
  YAML::Node value = const_map[std::string(key)];
  if (!value.IsDefined()) return std::nullopt;
  return value;
}

}  // namespace

Node::Node(std::shared_ptr<Impl> impl, std::string path)
    : impl_(std::move(impl)), path_(std::move(path)) {}

std::string Node::field(std::string_view key) const {
  if (key.empty()) return path_.empty() ? "(top level)" : path_;
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

std::string Node::where(std::string_view key) const {
  YAML::Mark mark = impl_->mark;
  if (!key.empty()) {
    if (auto value = lookup(impl_->node, key)) mark = value->Mark();
  }
  return position(*impl_->state, mark) + ": " + field(key);
}

void Node::fail(std::string_view key, std::string_view what) const {
  impl_->state->errors.push_back(where(key) + ": " + std::string(what));
}

Node Node::child(std::string_view key) const {
  auto impl = std::make_shared<Impl>(Impl{impl_->state, YAML::Node(), impl_->mark});
  if (auto value = lookup(impl_->node, key)) {
    impl = std::make_shared<Impl>(Impl{impl_->state, *value, value->Mark()});
  } else if (!impl_->node.IsMap() && !impl_->node.IsNull()) {
    fail("", "expected a mapping with field '" + std::string(key) + "', got " + shown(impl_->node));
  }
  return Node(std::move(impl), field(key));
}

std::vector<Node> Node::items() const {
  std::vector<Node> result;
  if (!present()) return result;
  if (!impl_->node.IsSequence()) {
    fail("", "expected a list, got " + shown(impl_->node));
    return result;
  }
  for (std::size_t i = 0; i < impl_->node.size(); ++i) {
    const YAML::Node& sequence = impl_->node;
    YAML::Node element = sequence[i];
    auto impl = std::make_shared<Impl>(Impl{impl_->state, element, element.Mark()});
    result.push_back(Node(std::move(impl), path_ + "[" + std::to_string(i) + "]"));
  }
  return result;
}

std::vector<std::pair<std::string, Node>> Node::entries() const {
  std::vector<std::pair<std::string, Node>> result;
  if (!present()) return result;
  if (!impl_->node.IsMap()) {
    fail("", "expected a mapping, got " + shown(impl_->node));
    return result;
  }
  for (const auto& entry : impl_->node) {
    std::string key = entry.first.Scalar();
    result.emplace_back(key, child(key));
  }
  return result;
}

bool Node::present() const { return !impl_->node.IsNull(); }
bool Node::is_map() const { return impl_->node.IsMap(); }

namespace {

// The scalar at `key`, or nullopt when absent; records an error for non-scalars.
std::optional<YAML::Node> scalar_of(const Node& node, const YAML::Node& map, std::string_view key) {
  std::optional<YAML::Node> value = lookup(map, key);
  if (!value || value->IsNull()) return std::nullopt;
  if (!value->IsScalar()) {
    node.fail(key, "expected a single value, got " + shown(*value));
    return std::nullopt;
  }
  return value;
}

}  // namespace

void Node::read(std::string_view key, bool& out) const {
  auto value = scalar_of(*this, impl_->node, key);
  if (!value) return;
  const std::string& text = value->Scalar();
  if (text == "true" || text == "yes" || text == "on") {
    out = true;
  } else if (text == "false" || text == "no" || text == "off") {
    out = false;
  } else {
    fail(key, "expected true or false, got " + shown(*value));
  }
}

void Node::read(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max) const {
  auto value = scalar_of(*this, impl_->node, key);
  if (!value) return;
  std::int64_t parsed = 0;
  if (!parse_integer(value->Scalar(), parsed)) {
    fail(key, "expected a whole number, got " + shown(*value));
  } else if (parsed < min || parsed > max) {
    fail(key, "expected a whole number from " + std::to_string(min) + " to " + std::to_string(max) +
                  ", got " + std::to_string(parsed));
  } else {
    out = parsed;
  }
}

void Node::read(std::string_view key, std::uint32_t& out, std::uint32_t min,
                std::uint32_t max) const {
  std::int64_t wide = out;
  read(key, wide, min, max);
  out = static_cast<std::uint32_t>(wide);
}

void Node::read(std::string_view key, double& out, double min, double max) const {
  auto value = scalar_of(*this, impl_->node, key);
  if (!value) return;
  double parsed = 0;
  if (!parse_double(value->Scalar(), parsed)) {
    fail(key, "expected a number, got " + shown(*value));
  } else if (parsed < min || parsed > max) {
    std::ostringstream message;
    message << "expected a number from " << min << " to " << max << ", got " << parsed;
    fail(key, message.str());
  } else {
    out = parsed;
  }
}

void Node::read(std::string_view key, std::string& out) const {
  if (auto value = scalar_of(*this, impl_->node, key)) out = value->Scalar();
}

void Node::read_ms(std::string_view key, Duration& out, Duration min, Duration max) const {
  auto to_ms_count = [](Duration d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  std::int64_t ms = to_ms_count(out);
  std::size_t errors_before = impl_->state->errors.size();
  read(key, ms, to_ms_count(min), to_ms_count(max));
  if (impl_->state->errors.size() == errors_before) out = std::chrono::milliseconds(ms);
}

int Node::read_choice(std::string_view key, std::initializer_list<std::string_view> allowed) const {
  auto value = scalar_of(*this, impl_->node, key);
  if (!value) return -1;
  int index = 0;
  for (std::string_view choice : allowed) {
    if (value->Scalar() == choice) return index;
    ++index;
  }
  std::string expected;
  for (std::string_view choice : allowed) {
    expected += expected.empty() ? "" : ", ";
    expected += choice;
  }
  fail(key, "expected one of " + expected + ", got " + shown(*value));
  return -1;
}

void Node::require(std::string_view key) const {
  if (!child(key).present()) fail(key, "required field is missing");
}

void Node::expect_only(std::initializer_list<std::string_view> known) const {
  if (!impl_->node.IsMap()) return;
  for (const auto& entry : impl_->node) {
    std::string key = entry.first.Scalar();
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string_view closest;
    std::size_t best = 3;  // suggest only near misses
    for (std::string_view candidate : known) {
      std::size_t distance = edit_distance(key, candidate);
      if (distance < best) {
        best = distance;
        closest = candidate;
      }
    }
    std::string message = "unknown field";
    if (!closest.empty()) message += " (did you mean '" + std::string(closest) + "'?)";
    impl_->state->errors.push_back(position(*impl_->state, entry.first.Mark()) + ": " + field(key) +
                                   ": " + message);
  }
}

Result<Document> Document::parse(std::string_view text, std::string source_name) {
  auto state = std::make_shared<detail::DocumentState>();
  state->source_name = std::move(source_name);
  try {
    YAML::Node loaded = YAML::Load(std::string(text));
    state->root = loaded.IsDefined() ? loaded : YAML::Node();
  } catch (const YAML::Exception& e) {
    return Error(errc::config_invalid, position(*state, e.mark) + ": not valid YAML: " + e.msg);
  }
  if (state->root.IsDefined() && !state->root.IsNull() && !state->root.IsMap()) {
    return Error(errc::config_invalid, position(*state, state->root.Mark()) +
                                           ": expected a mapping at the top level, got " +
                                           shown(state->root));
  }
  return Document(std::move(state));
}

Result<Document> Document::load_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return Error(errc::io_error, path + ": cannot open: " + std::strerror(errno));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) return Error(errc::io_error, path + ": read failed");
  return parse(text.str(), path);
}

Node Document::root() const {
  return Node(std::make_shared<Node::Impl>(Node::Impl{state_, state_->root, state_->root.Mark()}),
              "");
}

Status Document::status() const {
  if (state_->errors.empty()) return {};
  std::string joined;
  for (const auto& error : state_->errors) {
    if (!joined.empty()) joined += '\n';
    joined += error;
  }
  return Error(errc::config_invalid, joined);
}

const std::vector<std::string>& Document::errors() const { return state_->errors; }

}  // namespace keel::config

// YAML configuration read into typed structs. Every reader records what was wrong and where
// (file, line, column, the field's dotted path, and what was expected), keeps going so that one
// run reports every mistake, and leaves defaults in place for absent optional fields.
//
//   auto document = config::Document::load_file("keel.yaml");
//   if (!document) return document.error();
//   BreakerConfig breaker;
//   config::Node node = document->root().child("breaker");
//   node.read("failure_rate_threshold", breaker.failure_rate_threshold, 0.0, 100.0);
//   node.expect_only({"failure_rate_threshold", ...});
//   if (auto status = document->status(); !status) return status.error();
//
// Durations are integers whose field name carries the unit (`open_duration_ms`).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::config {

namespace detail {
struct DocumentState;
}  // namespace detail

class Node {
 public:
  // `key` under this mapping; an absent key gives an absent node that reads as nothing.
  Node child(std::string_view key) const;
  // Elements of a sequence (an error is recorded when this is present but not a sequence).
  std::vector<Node> items() const;
  // Entries of a mapping, in document order.
  std::vector<std::pair<std::string, Node>> entries() const;

  bool present() const;
  bool is_map() const;
  const std::string& path() const { return path_; }

  // Optional fields: an absent key leaves `out` unchanged. Wrong types and out-of-range
  // values are recorded as errors.
  void read(std::string_view key, bool& out) const;
  void read(std::string_view key, std::int64_t& out,
            std::int64_t min = std::numeric_limits<std::int64_t>::min(),
            std::int64_t max = std::numeric_limits<std::int64_t>::max()) const;
  void read(std::string_view key, std::uint32_t& out, std::uint32_t min = 0,
            std::uint32_t max = std::numeric_limits<std::uint32_t>::max()) const;
  void read(std::string_view key, double& out, double min = -std::numeric_limits<double>::max(),
            double max = std::numeric_limits<double>::max()) const;
  void read(std::string_view key, std::string& out) const;
  // An integer count of milliseconds.
  void read_ms(std::string_view key, Duration& out, Duration min = Duration::zero(),
               Duration max = Duration::max()) const;
  // One of `allowed`; returns its index, or -1 when absent or invalid.
  int read_choice(std::string_view key, std::initializer_list<std::string_view> allowed) const;

  // Records an error when `key` is absent.
  void require(std::string_view key) const;
  // Records an error for every key of this mapping not in `known`, suggesting the closest.
  void expect_only(std::initializer_list<std::string_view> known) const;
  // Records a custom error about `key` (or this node when `key` is empty).
  void fail(std::string_view key, std::string_view what) const;

 private:
  friend class Document;
  struct Impl;
  Node(std::shared_ptr<Impl> impl, std::string path);
  std::string where(std::string_view key) const;
  std::string field(std::string_view key) const;

  std::shared_ptr<Impl> impl_;
  std::string path_;
};

class Document {
 public:
  // Parses YAML text; `source_name` names it in messages (usually the file path). A syntax
  // error is returned at once, with its line and column.
  static Result<Document> parse(std::string_view text, std::string source_name);
  static Result<Document> load_file(const std::string& path);

  Node root() const;
  // Ok, or every error the readers recorded, one per line.
  Status status() const;
  const std::vector<std::string>& errors() const;

 private:
  explicit Document(std::shared_ptr<detail::DocumentState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::DocumentState> state_;
};

}  // namespace keel::config

// Reading a request body as JSON (internal to the codec). nlohmann's SAX parser, which is
// iterative and linear, feeds a builder that adds the checks nlohmann does not make:
//
// - nesting deeper than kMaxJsonDepth is refused (the DOM's copy and dump are recursive);
// - a key twice in one object is refused (nlohmann keeps the last silently; a client that
//   sent two meant something we cannot guess);
// - an integer outside 64 bits is refused (nlohmann turns it into a double and loses digits).
//
// The result is an ordered_json, so event data keeps the client's key order when it is stored.
// Objects are built from their finished members in one go: ordered_json's own insert searches
// linearly for the key, which would make an object of n keys cost n^2.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "keel/core/result.h"

namespace keel::node::detail {

using Json = nlohmann::ordered_json;

// Errors: node::errc::bad_json (with the byte offset for a syntax error, the place in the
// document for depth and duplicate keys) or node::errc::invalid_argument (an integer out of
// range, with its place).
Result<Json> parse_json_body(std::string_view body);

// `value` for an error message: compact JSON, cut after `limit` bytes.
std::string describe_json(const Json& value, std::size_t limit = 64);

}  // namespace keel::node::detail

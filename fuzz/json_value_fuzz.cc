// core's is_json_value() against nlohmann's acceptor on any bytes: the two must agree, except
// where nlohmann is known to differ on purpose (it skips a leading UTF-8 byte-order mark, which
// is_json_value() refuses because copied into a document it would make that invalid; and it
// stops at a NUL byte as if the input ended there). Neither may crash on any input.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string_view>

#include "keel/core/text.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool ours = keel::is_json_value(text);
  if (text.find('\0') != std::string_view::npos) {
    if (ours) __builtin_trap();  // a NUL is never JSON
    return 0;
  }
  if (text.starts_with("\xEF\xBB\xBF")) {
    if (ours) __builtin_trap();
    return 0;
  }
  if (ours != nlohmann::json::accept(text)) __builtin_trap();
  return 0;
}

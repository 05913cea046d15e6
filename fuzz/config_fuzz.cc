// Feeds arbitrary bytes to the YAML config loader and the resilience config readers: any
// input must give a value or an error, never a crash or a hang.
#include <cstdint>
#include <string_view>

#include "keel/core/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto document = keel::config::Document::parse(text, "fuzz.yaml");
  if (!document) return 0;
  keel::config::Node root = document->root();
  for (const auto& [key, node] : root.entries()) {
    std::int64_t integer = 0;
    double number = 0;
    std::string text_value;
    bool flag = false;
    node.read("a", integer, 0, 10);
    node.read("b", number, 0.0, 1.0);
    node.read("c", text_value);
    node.read("d", flag);
    node.read_choice("e", {"x", "y"});
    for (const auto& item : node.items()) item.read("f", integer);
    node.expect_only({"a", "b", "c", "d", "e"});
  }
  (void)document->status();
  return 0;
}

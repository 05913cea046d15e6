// Feeds arbitrary bytes to `keel proxy`'s config loader: any input gives a config or an error
// naming its place, never a crash or a hang.
#include <cstdint>
#include <string_view>

#include "keel/proxy/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto config = keel::proxy::parse_config(text, "fuzz.yaml");
  if (!config) {
    if (config.error().message().empty()) __builtin_trap();  // an error must say something
    return 0;
  }
  for (const auto& listener : config->listeners) {
    for (const auto& route : listener.routes) {
      for (const auto& target : route.clusters) {
        if (config->cluster(target.cluster) == nullptr) __builtin_trap();  // checked at load
      }
    }
  }
  return 0;
}

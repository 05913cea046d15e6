// Feeds arbitrary bytes to SlotMap::from_json, the parser of the shard map stored in etcd: any
// input must give a map or an error — never a crash — and a map that parses must survive a
// round trip unchanged.
#include <cstdint>
#include <string_view>

#include "keel/shard/slot_map.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto map = keel::shard::SlotMap::from_json(text);
  if (!map) return 0;
  auto again = keel::shard::SlotMap::from_json(map->to_json());
  if (!again || !(*again == *map)) __builtin_trap();
  for (std::uint32_t slot = 0; slot < map->slot_count(); slot += 97) (void)map->owner(slot);
  return 0;
}

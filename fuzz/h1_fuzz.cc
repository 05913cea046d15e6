// Feeds arbitrary bytes to the proxy's HTTP/1.1 head parsers and chunked-body reader: any input
// must give a head, a need for more, or an error with a status — never a crash or a read
// outside the input — and what they report must be consistent with the bytes.
#include <cstdint>
#include <string_view>

#include "keel/http/h1.h"

namespace h1 = keel::http::h1;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  h1::Head head;
  for (bool response : {false, true}) {
    const auto parsed =
        response ? h1::parse_response(bytes, false, head) : h1::parse_request(bytes, head);
    if (parsed.state == h1::Parsed::kError && parsed.status < 400) __builtin_trap();
    if (parsed.state != h1::Parsed::kDone) continue;
    if (head.size > bytes.size()) __builtin_trap();
    for (const auto& field : head.fields) {
      // Every view lies inside the input, and no value keeps a line end.
      if (field.name.data() < bytes.data() ||
          field.value.data() + field.value.size() > bytes.data() + bytes.size() ||
          field.value.find('\n') != std::string_view::npos) {
        __builtin_trap();
      }
      (void)h1::hop_by_hop(head, field.name);
    }
  }
  // The chunked reader, fed in two parts, sees the same body as fed at once.
  h1::ChunkedReader whole;
  std::uint64_t data_whole = 0;
  const auto all = whole.feed(bytes, [&](std::string_view run) { data_whole += run.size(); });
  h1::ChunkedReader split;
  std::uint64_t data_split = 0;
  const std::size_t half = size / 2;
  auto count = [&](std::string_view run) { data_split += run.size(); };
  auto first = split.feed(bytes.substr(0, half), count);
  if (first.error == nullptr && !first.done) {
    auto second = split.feed(bytes.substr(half), count);
    if ((second.error == nullptr) != (all.error == nullptr)) __builtin_trap();
    if (all.error == nullptr && (half + second.used != all.used || data_split != data_whole)) {
      __builtin_trap();
    }
  }
  return 0;
}

// crc32c throughput per path: bytes processed per second over buffers of a record's size (256 B)
// and a page's (4 KiB), 8-byte aligned.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "keel/core/random.h"
#include "keel/eventlog/crc32c.h"

namespace keel::eventlog {
namespace {

using Implementation = std::uint32_t (*)(const void*, std::size_t, std::uint32_t);

void run(benchmark::State& state, Implementation function) {
  const auto size = static_cast<std::size_t>(state.range(0));
  std::vector<std::uint8_t> buffer(size);
  Random random(1);
  for (auto& byte : buffer) byte = static_cast<std::uint8_t>(random.next());
  std::uint32_t crc = 0;
  for (auto _ : state) {
    crc = function(buffer.data(), buffer.size(), crc);
    benchmark::DoNotOptimize(crc);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) *
                          static_cast<std::int64_t>(size));
}

void BM_Crc32cHardware(benchmark::State& state) {
  if (!crc32c_hardware()) {
    state.SkipWithError("no SSE4.2 on this CPU");
    return;
  }
  run(state, &crc32c_sse42);
}

void BM_Crc32cPortable(benchmark::State& state) { run(state, &crc32c_portable); }

void BM_Crc32cDispatched(benchmark::State& state) { run(state, &crc32c); }

BENCHMARK(BM_Crc32cHardware)->Arg(256)->Arg(4096);
BENCHMARK(BM_Crc32cPortable)->Arg(256)->Arg(4096);
BENCHMARK(BM_Crc32cDispatched)->Arg(4096);

}  // namespace
}  // namespace keel::eventlog

BENCHMARK_MAIN();

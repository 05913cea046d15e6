// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum that frames every log
// record: a torn or bit-flipped record fails it on recovery. CRC-32C rather than CRC-32 because
// x86 computes it in hardware (SSE4.2), and it is what iSCSI, ext4, LevelDB and Kafka use, so
// the figures and test vectors are well known.
//
// Pure functions, safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>

namespace keel::eventlog {

// The CRC-32C of `size` bytes at `data` (which need not be aligned; `data` may be null when
// `size` is 0). Extendable: pass a previous result as `crc` to continue it, so
//   crc32c(b, n, crc32c(a, m)) == crc32c of the m bytes of a followed by the n bytes of b.
// crc32c(p, 0, c) == c. Uses the SSE4.2 instruction when the CPU has it (checked once), the
// portable table-driven code otherwise; both give identical results.
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);

// One byte through the raw CRC register (crc32c() inverts the register on the way in and out:
// crc32c(p, n, c) == ~(the register ~c advanced over the n bytes)). For scans that need the
// register at every offset.
std::uint32_t crc32c_register_byte(std::uint32_t reg, std::uint8_t byte);

// True when crc32c() runs on the CPU's CRC32 instruction.
bool crc32c_hardware();

// The two implementations behind crc32c(), with the same contract, so tests can check one
// against the other and the benchmark can time each. crc32c_sse42() may be called only when
// crc32c_hardware() is true.
std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc = 0);
std::uint32_t crc32c_sse42(const void* data, std::size_t size, std::uint32_t crc = 0);

}  // namespace keel::eventlog

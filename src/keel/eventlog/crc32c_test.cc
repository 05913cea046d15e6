#include "keel/eventlog/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "keel/core/random.h"

namespace keel::eventlog {
namespace {

using Implementation = std::uint32_t (*)(const void*, std::size_t, std::uint32_t);

struct Named {
  const char* name;
  Implementation function;
};

std::vector<Named> implementations() {
  std::vector<Named> list = {{"crc32c", &crc32c}, {"portable", &crc32c_portable}};
  if (crc32c_hardware()) list.push_back({"sse42", &crc32c_sse42});
  return list;
}

std::uint32_t of(Implementation function, const std::vector<std::uint8_t>& bytes) {
  return function(bytes.data(), bytes.size(), 0);
}

TEST(Crc32c, MatchesKnownVectors) {
  std::vector<std::uint8_t> ascending(32), descending(32);
  for (int i = 0; i < 32; ++i) {
    ascending[i] = static_cast<std::uint8_t>(i);
    descending[i] = static_cast<std::uint8_t>(31 - i);
  }
  const std::string check = "123456789";
  for (const Named& implementation : implementations()) {
    SCOPED_TRACE(implementation.name);
    EXPECT_EQ(implementation.function(check.data(), check.size(), 0), 0xE3069283u);
    // RFC 3720 (iSCSI), appendix B.4.
    EXPECT_EQ(of(implementation.function, std::vector<std::uint8_t>(32, 0x00)), 0x8A9136AAu);
    EXPECT_EQ(of(implementation.function, std::vector<std::uint8_t>(32, 0xFF)), 0x62A8AB43u);
    EXPECT_EQ(of(implementation.function, ascending), 0x46DD794Eu);
    EXPECT_EQ(of(implementation.function, descending), 0x113FDB5Cu);
    EXPECT_EQ(implementation.function(nullptr, 0, 0), 0u);
    EXPECT_EQ(implementation.function("a", 1, 0), 0xC1D04330u);
  }
}

TEST(Crc32c, ReportsWhichPathItUses) {
#if defined(__x86_64__)
  EXPECT_EQ(crc32c_hardware(), __builtin_cpu_supports("sse4.2") != 0);
#else
  EXPECT_FALSE(crc32c_hardware());
#endif
  RecordProperty("hardware", crc32c_hardware() ? "sse4.2" : "none");
}

// Every length from 0 to 300 at each of the 8 alignments covers the head, the 8-byte body and
// the tail loops of both implementations in every combination.
TEST(Crc32c, HardwareAndPortableAgreeOnEveryLengthAndAlignment) {
  if (!crc32c_hardware()) GTEST_SKIP() << "no SSE4.2 on this CPU";
  const std::uint64_t seed = 20261128;
  Random random(seed);
  std::vector<std::uint8_t> buffer(300 + 16);
  for (int round = 0; round < 4; ++round) {
    for (auto& byte : buffer) byte = static_cast<std::uint8_t>(random.next());
    const auto start_crc = static_cast<std::uint32_t>(round == 0 ? 0 : random.next());
    for (std::size_t offset = 0; offset < 8; ++offset) {
      for (std::size_t length = 0; length <= 300; ++length) {
        const std::uint8_t* data = buffer.data() + offset;
        ASSERT_EQ(crc32c_sse42(data, length, start_crc), crc32c_portable(data, length, start_crc))
            << "seed " << seed << ", round " << round << ", offset " << offset << ", length "
            << length;
      }
    }
  }
}

TEST(Crc32c, ExtendsAcrossAnySplit) {
  const std::uint64_t seed = 77;
  Random random(seed);
  std::vector<std::uint8_t> buffer(1000);
  for (auto& byte : buffer) byte = static_cast<std::uint8_t>(random.next());
  for (const Named& implementation : implementations()) {
    SCOPED_TRACE(implementation.name);
    const std::uint32_t whole = of(implementation.function, buffer);
    for (std::size_t split = 0; split <= buffer.size(); split += 7) {
      const std::uint32_t head = implementation.function(buffer.data(), split, 0);
      ASSERT_EQ(implementation.function(buffer.data() + split, buffer.size() - split, head), whole)
          << "split at " << split;
    }
    // Three pieces, and zero-length pieces in between, change nothing.
    std::uint32_t crc = implementation.function(buffer.data(), 100, 0);
    crc = implementation.function(buffer.data() + 100, 0, crc);
    crc = implementation.function(buffer.data() + 100, 333, crc);
    crc = implementation.function(buffer.data() + 433, buffer.size() - 433, crc);
    EXPECT_EQ(crc, whole);
  }
}

TEST(Crc32c, DetectsEverySingleBitFlip) {
  const std::uint64_t seed = 5;
  Random random(seed);
  std::vector<std::uint8_t> record(256);
  for (auto& byte : record) byte = static_cast<std::uint8_t>(random.next());
  const std::uint32_t clean = crc32c(record.data(), record.size());
  for (std::size_t bit = 0; bit < record.size() * 8; ++bit) {
    record[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
    ASSERT_NE(crc32c(record.data(), record.size()), clean) << "bit " << bit;
    record[bit / 8] ^= static_cast<std::uint8_t>(1u << (bit % 8));
  }
  EXPECT_EQ(crc32c(record.data(), record.size()), clean);
}

TEST(Crc32c, DependsOnLengthNotJustContent) {
  // Without the pre- and post-inversion, leading zero bytes would not change the CRC.
  const std::vector<std::uint8_t> zeros(64, 0);
  EXPECT_NE(crc32c(zeros.data(), 8), crc32c(zeros.data(), 16));
  EXPECT_NE(crc32c(zeros.data(), 0), crc32c(zeros.data(), 1));
}

}  // namespace
}  // namespace keel::eventlog

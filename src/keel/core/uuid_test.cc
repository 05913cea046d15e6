#include "keel/core/uuid.h"

#include <gtest/gtest.h>

#include <set>
#include <unordered_set>
#include <vector>

namespace keel {
namespace {

TEST(Uuid, AppendsItsCanonicalFormToWhatIsThere) {
  const Uuid uuid = *Uuid::parse("123e4567-e89b-12d3-a456-426614174000");
  std::string out = "id=";
  uuid.append_to(out);
  EXPECT_EQ(out, "id=123e4567-e89b-12d3-a456-426614174000");
}

TEST(Uuid, DefaultIsNil) {
  Uuid uuid;
  EXPECT_TRUE(uuid.is_nil());
  EXPECT_EQ(uuid.to_string(), "00000000-0000-0000-0000-000000000000");
}

TEST(Uuid, ParsesCanonicalFormInEitherCaseAndPrintsLowercase) {
  Result<Uuid> parsed = Uuid::parse("123E4567-e89b-12D3-a456-426614174000");
  ASSERT_TRUE(parsed.ok()) << parsed.error().to_string();
  EXPECT_EQ(parsed->to_string(), "123e4567-e89b-12d3-a456-426614174000");
  const std::array<std::uint8_t, 16> expected = {0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3,
                                                 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17, 0x40, 0x00};
  EXPECT_EQ(parsed->bytes(), expected);
  EXPECT_FALSE(parsed->is_nil());
}

TEST(Uuid, RoundTripsThroughTextAndBytes) {
  Random random(1);
  for (int i = 0; i < 1000; ++i) {
    const Uuid uuid = Uuid::random_v4(random);
    Result<Uuid> parsed = Uuid::parse(uuid.to_string());
    ASSERT_TRUE(parsed.ok()) << uuid.to_string() << ": " << parsed.error().to_string();
    EXPECT_EQ(*parsed, uuid);
    EXPECT_EQ(Uuid::from_bytes(uuid.bytes().data()), uuid);
  }
  Result<Uuid> max = Uuid::parse("FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF");
  ASSERT_TRUE(max.ok());
  EXPECT_EQ(max->to_string(), "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

TEST(Uuid, RandomV4SetsVersionAndVariantBits) {
  Random random(2);
  for (int i = 0; i < 1000; ++i) {
    const Uuid uuid = Uuid::random_v4(random);
    EXPECT_EQ(uuid.bytes()[6] >> 4, 4) << uuid.to_string();
    EXPECT_EQ(uuid.bytes()[8] >> 6, 0b10) << uuid.to_string();
    const std::string text = uuid.to_string();
    EXPECT_EQ(text[14], '4') << text;
    EXPECT_NE(std::string("89ab").find(text[19]), std::string::npos) << text;
  }
}

TEST(Uuid, RandomV4UsesTheOtherBits) {
  // Every one of the 122 free bits is seen both set and clear.
  Random random(3);
  std::array<std::uint8_t, 16> seen_set{}, seen_clear{};
  for (int i = 0; i < 200; ++i) {
    const Uuid uuid = Uuid::random_v4(random);
    for (int b = 0; b < 16; ++b) {
      seen_set[b] |= uuid.bytes()[b];
      seen_clear[b] |= static_cast<std::uint8_t>(~uuid.bytes()[b]);
    }
  }
  for (int b = 0; b < 16; ++b) {
    const std::uint8_t fixed = b == 6 ? 0xf0 : b == 8 ? 0xc0 : 0x00;
    EXPECT_EQ(seen_set[b] & seen_clear[b], 0xff & ~fixed) << "byte " << b;
  }
}

TEST(Uuid, SameSeedGivesSameSequence) {
  Random a(42), b(42), c(43);
  bool differs = false;
  for (int i = 0; i < 100; ++i) {
    const Uuid x = Uuid::random_v4(a);
    EXPECT_EQ(x, Uuid::random_v4(b));
    differs |= x != Uuid::random_v4(c);
  }
  EXPECT_TRUE(differs);
  Random first(42), second(42);
  EXPECT_EQ(Uuid::random_v4(first).to_string(), Uuid::random_v4(second).to_string());
}

TEST(Uuid, RandomV4DoesNotRepeat) {
  Random random(4);
  std::unordered_set<Uuid, UuidHash> seen;
  for (int i = 0; i < 100000; ++i) {
    ASSERT_TRUE(seen.insert(Uuid::random_v4(random)).second) << "repeat after " << i;
  }
}

void expect_parse_error(std::string_view text, const std::string& fragment) {
  Result<Uuid> parsed = Uuid::parse(text);
  ASSERT_FALSE(parsed.ok()) << "accepted \"" << text << "\"";
  EXPECT_TRUE(parsed.error().is(errc::invalid_argument));
  const std::string& message = parsed.error().message();
  EXPECT_NE(message.find(fragment), std::string::npos)
      << "message: " << message << "\nexpected it to contain: " << fragment;
}

TEST(Uuid, RejectsWrongLength) {
  expect_parse_error("", "uuid \"\": has 0 characters, not 36");
  expect_parse_error("123e4567-e89b-12d3-a456-42661417400",
                     "\"123e4567-e89b-12d3-a456-42661417400\": has 35 characters, not 36");
  expect_parse_error("123e4567-e89b-12d3-a456-4266141740000", "has 37 characters, not 36");
  expect_parse_error("123e4567e89b12d3a456426614174000", "has 32 characters, not 36");
  expect_parse_error("{123e4567-e89b-12d3-a456-426614174000}", "has 38 characters");
  expect_parse_error(" 123e4567-e89b-12d3-a456-426614174000", "has 37 characters");
}

TEST(Uuid, RejectsNonHexDigits) {
  expect_parse_error("g23e4567-e89b-12d3-a456-426614174000", "'g' at offset 0 is not a hex digit");
  expect_parse_error("123e4567-e89b-12d3-a456-42661417400z", "'z' at offset 35 is not a hex digit");
  expect_parse_error("123e4567-e8 b-12d3-a456-426614174000", "' ' at offset 11 is not a hex digit");
  expect_parse_error(std::string_view("123e4567-e89b-12d3-a456-4266141\0"
                                      "4000",
                                      36),
                     "byte 0x00 at offset 31 is not a hex digit");
  expect_parse_error("123e4567-e89b-12d3-a456-42661417400\xff",
                     "byte 0xff at offset 35 is not a hex digit");
}

TEST(Uuid, RejectsMisplacedDashes) {
  expect_parse_error("123e456-7e89b-12d3-a456-426614174000", "'-' at offset 7 is not a hex digit");
  expect_parse_error("123e45678e89b-12d3-a456-426614174000", "'8' at offset 8 should be '-'");
  expect_parse_error("123e4567-e89b-12d3-a4564-26614174000", "'4' at offset 23 should be '-'");
  expect_parse_error("123e4567-e89b-12d3-a456:426614174000", "':' at offset 23 should be '-'");
  expect_parse_error("------------------------------------", "'-' at offset 0 is not a hex digit");
}

TEST(Uuid, ErrorMessageQuotesTheTextAndShortensLongInput) {
  const std::string long_text(1000, 'a');
  Result<Uuid> parsed = Uuid::parse(long_text);
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().message(), "uuid \"" + std::string(64, 'a') +
                                          "...\": has 1000 characters, not 36; expected the form "
                                          "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits)");
}

TEST(Uuid, OrdersLikeItsCanonicalText) {
  Random random(5);
  std::vector<Uuid> uuids;
  for (int i = 0; i < 200; ++i) uuids.push_back(Uuid::random_v4(random));
  for (const Uuid& a : uuids) {
    for (const Uuid& b : uuids) {
      EXPECT_EQ(a < b, a.to_string() < b.to_string());
      EXPECT_EQ(a == b, a.to_string() == b.to_string());
    }
  }
  EXPECT_LT(Uuid(), uuids.front());
}

// Buckets of a power-of-two table are chosen by the low bits of the hash; each of 256 buckets
// should get about n/256 keys. The bound is wide (±25% at ~390 expected, about 5 standard
// deviations) so the test is stable, yet a hash that ignored most input bits would fail it.
void expect_spread(const std::vector<Uuid>& uuids, const char* what) {
  constexpr int kBuckets = 256;
  const UuidHash hash;
  std::vector<int> low(kBuckets), high(kBuckets);
  for (const Uuid& uuid : uuids) {
    const std::size_t h = hash(uuid);
    ++low[h % kBuckets];
    ++high[h >> (8 * sizeof(std::size_t) - 8)];
  }
  const double expected = static_cast<double>(uuids.size()) / kBuckets;
  for (int b = 0; b < kBuckets; ++b) {
    EXPECT_GT(low[b], expected * 0.75) << what << ", low bits, bucket " << b;
    EXPECT_LT(low[b], expected * 1.25) << what << ", low bits, bucket " << b;
    EXPECT_GT(high[b], expected * 0.75) << what << ", high bits, bucket " << b;
    EXPECT_LT(high[b], expected * 1.25) << what << ", high bits, bucket " << b;
  }
}

TEST(UuidHash, SpreadsRandomAndSequentialUuids) {
  constexpr int kCount = 100000;
  Random random(6);
  std::vector<Uuid> randoms, counter_at_end, counter_at_start;
  for (int i = 0; i < kCount; ++i) {
    randoms.push_back(Uuid::random_v4(random));
    std::array<std::uint8_t, 16> bytes{};
    for (int k = 0; k < 4; ++k) {
      bytes[15 - k] = static_cast<std::uint8_t>(i >> (8 * k));
    }
    counter_at_end.push_back(Uuid::from_bytes(bytes.data()));
    std::array<std::uint8_t, 16> reversed{};
    for (int k = 0; k < 4; ++k) reversed[k] = bytes[15 - k];
    counter_at_start.push_back(Uuid::from_bytes(reversed.data()));
  }
  expect_spread(randoms, "random v4");
  expect_spread(counter_at_end, "counter in the last bytes");
  expect_spread(counter_at_start, "counter in the first bytes");
}

TEST(UuidHash, EqualUuidsHashEqual) {
  const Uuid a = *Uuid::parse("123e4567-e89b-12d3-a456-426614174000");
  const Uuid b = *Uuid::parse("123E4567-E89B-12D3-A456-426614174000");
  EXPECT_EQ(UuidHash()(a), UuidHash()(b));
  EXPECT_NE(UuidHash()(a), UuidHash()(Uuid()));
}

}  // namespace
}  // namespace keel

namespace keel {
namespace {

TEST(UuidEntropyTest, TheUnseededGeneratorGivesDistinctVersion4Ids) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    Uuid id = Uuid::random_v4();
    EXPECT_EQ(id.bytes()[6] >> 4, 4);
    EXPECT_TRUE(seen.insert(id.to_string()).second);
  }
}

}  // namespace
}  // namespace keel

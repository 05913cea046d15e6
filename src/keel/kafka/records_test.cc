#include "keel/kafka/records.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "keel/kafka/wire.h"

namespace keel::kafka {
namespace {

std::string sample_set(Compression codec, int count = 3, std::int64_t base = 0) {
  static const Header headers[] = {{"a", std::string_view("b")}, {"null", std::nullopt}};
  std::vector<OutRecord> records;
  static std::vector<std::string> values;
  values.clear();
  for (int i = 0; i < count; ++i) values.push_back("value-" + std::to_string(i));
  for (int i = 0; i < count; ++i) {
    OutRecord r;
    r.offset = base + i;
    r.timestamp = 1700000000000 + i;
    if (i % 2 == 0) r.key = "key";
    r.value = i == 1 ? std::optional<std::string_view>() : std::string_view(values[i]);
    r.headers = headers;
    records.push_back(r);
  }
  std::string out;
  append_batch(out, records, codec);
  return out;
}

TEST(Wire, VarintsRoundTripAtTheEdges) {
  for (std::int64_t v :
       {std::int64_t{0}, std::int64_t{-1}, std::int64_t{1}, std::int64_t{63}, std::int64_t{-64},
        std::int64_t{64}, std::int64_t{1} << 40, std::numeric_limits<std::int64_t>::min(),
        std::numeric_limits<std::int64_t>::max()}) {
    std::string out;
    Writer(out).varint(v);
    EXPECT_EQ(out.size(), varint_size(v));
    Reader r(out);
    EXPECT_EQ(r.varlong(), v);
    EXPECT_TRUE(r.ok());
  }
}

TEST(Wire, ShortAndImpossibleLengthsFailOnce) {
  Reader truncated(
      std::string_view("\x00\x05"
                       "ab",
                       4));
  EXPECT_EQ(truncated.string(), "");
  EXPECT_FALSE(truncated.ok());
  EXPECT_STREQ(truncated.error(), "truncated");
  EXPECT_EQ(truncated.i32(), 0);  // sticky: later reads give zeros

  Reader huge(std::string_view("\x7f\xff\xff\xff", 4));
  EXPECT_EQ(huge.array(), 0);
  EXPECT_FALSE(huge.ok());

  Reader endless(std::string_view("\xff\xff\xff\xff\xff\xff", 6));
  endless.varint();
  EXPECT_FALSE(endless.ok());
}

class EveryCodec : public testing::TestWithParam<Compression> {};

TEST_P(EveryCodec, ABatchRoundTripsKeysValuesHeadersAndTimestamps) {
  const std::string set = sample_set(GetParam()) + sample_set(GetParam(), 2, 3);
  std::vector<RecordBatch> batches;
  BatchError error;
  ASSERT_TRUE(decode_batches(set, 1 << 20, batches, error)) << error.message;
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].compression(), GetParam());
  ASSERT_EQ(batches[0].records.size(), 3u);
  const Record& first = batches[0].records[0];
  EXPECT_EQ(first.key, "key");
  EXPECT_EQ(first.value, "value-0");
  EXPECT_EQ(first.timestamp, 1700000000000);
  ASSERT_EQ(first.headers.size(), 2u);
  EXPECT_EQ(first.headers[0].key, "a");
  EXPECT_EQ(first.headers[0].value, "b");
  EXPECT_EQ(first.headers[1].value, std::nullopt);
  EXPECT_EQ(batches[0].records[1].key, std::nullopt);
  EXPECT_EQ(batches[0].records[1].value, std::nullopt);  // a null value, not an empty one
  EXPECT_EQ(batches[0].records[2].offset_delta, 2);
  EXPECT_EQ(batches[0].records[2].timestamp, 1700000000002);
  EXPECT_EQ(batches[1].base_offset, 3);
  EXPECT_EQ(batches[1].records.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Codecs, EveryCodec,
                         testing::Values(Compression::kNone, Compression::kGzip,
                                         Compression::kSnappy, Compression::kLz4,
                                         Compression::kZstd));

TEST(Records, AFlippedBitIsACorruptMessage) {
  std::string set = sample_set(Compression::kNone);
  set[set.size() - 3] ^= 0x10;
  std::vector<RecordBatch> batches;
  BatchError error;
  EXPECT_FALSE(decode_batches(set, 1 << 20, batches, error));
  EXPECT_EQ(error.code, Code::kCorruptMessage);
  EXPECT_NE(error.message.find("CRC"), std::string::npos) << error.message;
}

TEST(Records, EveryTruncationIsRefusedWithoutReadingPastTheEnd) {
  for (Compression codec : {Compression::kNone, Compression::kZstd}) {
    const std::string set = sample_set(codec);
    for (std::size_t n = 1; n < set.size(); ++n) {
      std::vector<RecordBatch> batches;
      BatchError error;
      EXPECT_FALSE(decode_batches(std::string_view(set).substr(0, n), 1 << 20, batches, error))
          << n;
      EXPECT_NE(error.code, Code::kNone);
    }
  }
}

TEST(Records, OldMessageFormatsAreRefused) {
  std::string set = sample_set(Compression::kNone);
  set[16] = 1;  // magic
  std::vector<RecordBatch> batches;
  BatchError error;
  EXPECT_FALSE(decode_batches(set, 1 << 20, batches, error));
  EXPECT_EQ(error.code, Code::kUnsupportedForMessageFormat);
}

TEST(Records, DecompressionIsBounded) {
  std::vector<std::string> big(1, std::string(100000, 'x'));
  OutRecord r;
  r.value = big[0];
  std::string set;
  append_batch(set, std::span<const OutRecord>(&r, 1), Compression::kZstd);
  ASSERT_LT(set.size(), 1000u);  // a bomb in miniature
  std::vector<RecordBatch> batches;
  BatchError error;
  EXPECT_FALSE(decode_batches(set, 50000, batches, error));
  EXPECT_EQ(error.code, Code::kCorruptMessage);
  batches.clear();
  EXPECT_TRUE(decode_batches(set, 200000, batches, error)) << error.message;
}

TEST(Records, XerialFramedSnappyAsJavaWritesItInflates) {
  const std::string plain = "hello hello hello hello";
  const std::string block = deflate(Compression::kSnappy, plain);
  std::string framed("\x82SNAPPY\0\0\0\0\1\0\0\0\1", 16);
  Writer(framed).bytes(block);
  std::string out;
  ASSERT_TRUE(inflate(Compression::kSnappy, framed, 1000, out));
  EXPECT_EQ(out, plain);
}

TEST(Records, GarbageIsNotInflated) {
  for (Compression codec :
       {Compression::kGzip, Compression::kSnappy, Compression::kLz4, Compression::kZstd}) {
    std::string out;
    EXPECT_FALSE(inflate(codec, "definitely not compressed", 1 << 20, out))
        << static_cast<int>(codec);
  }
}

}  // namespace
}  // namespace keel::kafka

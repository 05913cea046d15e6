// Kafka record batches (message format v2, https://kafka.apache.org/documentation/#recordbatch):
// decoding what producers send — CRC-32C checked, gzip/snappy/lz4/zstd inflated within a bound,
// every length checked against what is there — and encoding what consumers fetch (uncompressed).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "keel/kafka/wire.h"

namespace keel::kafka {

enum class Compression : std::uint8_t { kNone = 0, kGzip = 1, kSnappy = 2, kLz4 = 3, kZstd = 4 };

struct Header {
  std::string_view key;
  std::optional<std::string_view> value;
};

struct Record {
  std::int32_t offset_delta = 0;
  std::int64_t timestamp = 0;  // base timestamp + the record's delta
  std::optional<std::string_view> key;
  std::optional<std::string_view> value;
  std::vector<Header> headers;
};

struct RecordBatch {
  std::int64_t base_offset = 0;
  std::int16_t attributes = 0;
  std::int32_t last_offset_delta = 0;
  std::int64_t base_timestamp = 0;
  std::int64_t max_timestamp = 0;
  std::int64_t producer_id = -1;
  std::int16_t producer_epoch = -1;
  std::int32_t base_sequence = -1;
  std::vector<Record> records;
  // The inflated records of a compressed batch: the records' views point into it.
  std::unique_ptr<std::string> inflated;

  Compression compression() const { return static_cast<Compression>(attributes & 7); }
  bool log_append_time() const { return (attributes & 8) != 0; }
  bool transactional() const { return (attributes & 16) != 0; }
  bool control() const { return (attributes & 32) != 0; }
};

struct BatchError {
  Code code = Code::kNone;
  std::string message;
};

// Every batch in `set` (a Produce partition's records) into `out`, whose records point into
// `set` or the batch's `inflated` bytes. `max_inflated_bytes` bounds what decompression may
// produce for the whole set. Fails with CORRUPT_MESSAGE (a CRC or a length that does not
// match), UNSUPPORTED_FOR_MESSAGE_FORMAT (magic before 2) or INVALID_RECORD (offsets out of
// order, a control batch, a count that does not match).
bool decode_batches(std::string_view set, std::size_t max_inflated_bytes,
                    std::vector<RecordBatch>& out, BatchError& error);

// Inflates `compressed` with `codec` into `out`, at most `limit` bytes; false when the bytes are
// not that codec's format or inflate past `limit`.
bool inflate(Compression codec, std::string_view compressed, std::size_t limit, std::string& out);
// The codecs' own encoders, for tests and benchmarks that play a producer.
std::string deflate(Compression codec, std::string_view bytes);

struct OutRecord {
  std::int64_t offset = 0;
  std::int64_t timestamp = 0;
  std::optional<std::string_view> key;
  std::optional<std::string_view> value;
  std::span<const Header> headers;
};

// An idempotent producer's fields of a batch (none: -1).
struct BatchProducer {
  std::int64_t id = -1;
  std::int16_t epoch = -1;
  std::int32_t base_sequence = -1;
};

// Appends one uncompressed batch holding `records` (offsets ascending; the first is the base)
// to `out`; `codec` and `producer` make it as a producer would (tests).
void append_batch(std::string& out, std::span<const OutRecord> records,
                  Compression codec = Compression::kNone, BatchProducer producer = {});

}  // namespace keel::kafka

#include "keel/kafka/records.h"

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>

#include "keel/eventlog/crc32c.h"

namespace keel::kafka {

namespace {

constexpr std::size_t kBatchHeaderBytes = 61;  // base offset .. record count
constexpr std::size_t kCrcAt = 17;             // base offset, length, leader epoch, magic
constexpr std::size_t kAttributesAt = 21;

bool inflate_gzip(std::string_view in, std::size_t limit, std::string& out) {
  z_stream z{};
  if (inflateInit2(&z, 15 + 32) != Z_OK) return false;  // gzip or zlib header
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  char chunk[64 * 1024];
  int rc = Z_OK;
  while (rc != Z_STREAM_END) {
    z.next_out = reinterpret_cast<Bytef*>(chunk);
    z.avail_out = sizeof chunk;
    rc = inflate(&z, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) break;
    out.append(chunk, sizeof chunk - z.avail_out);
    if (out.size() > limit || (rc == Z_OK && z.avail_in == 0 && z.avail_out != 0)) {
      rc = Z_DATA_ERROR;  // over the bound, or input ended before the stream did
      break;
    }
  }
  inflateEnd(&z);
  return rc == Z_STREAM_END;
}

bool inflate_snappy_block(std::string_view in, std::size_t limit, std::string& out) {
  std::size_t length = 0;
  if (snappy_uncompressed_length(in.data(), in.size(), &length) != SNAPPY_OK) return false;
  if (length > limit - std::min(limit, out.size())) return false;
  const std::size_t at = out.size();
  out.resize(at + length);
  if (snappy_uncompress(in.data(), in.size(), out.data() + at, &length) != SNAPPY_OK) return false;
  out.resize(at + length);
  return true;
}

// Snappy as Java's producer writes it (xerial framing: a magic header, then blocks each with a
// big-endian length) or as librdkafka writes it (one raw block).
bool inflate_snappy(std::string_view in, std::size_t limit, std::string& out) {
  static constexpr std::string_view kXerial("\x82SNAPPY\0", 8);
  if (in.substr(0, 8) != kXerial) return inflate_snappy_block(in, limit, out);
  Reader reader(in.substr(std::min<std::size_t>(16, in.size())));
  if (in.size() < 16) return false;
  while (reader.remaining() > 0) {
    const std::int32_t n = reader.i32();
    if (!reader.ok() || n < 0) return false;
    const std::string_view block = reader.raw(static_cast<std::size_t>(n));
    if (!reader.ok() || !inflate_snappy_block(block, limit, out)) return false;
  }
  return true;
}

bool inflate_lz4(std::string_view in, std::size_t limit, std::string& out) {
  LZ4F_dctx* context = nullptr;
  if (LZ4F_isError(LZ4F_createDecompressionContext(&context, LZ4F_VERSION))) return false;
  char chunk[64 * 1024];
  const char* at = in.data();
  std::size_t left = in.size();
  std::size_t hint = 1;
  bool ok = true;
  while (left > 0 && hint != 0) {
    std::size_t produced = sizeof chunk;
    std::size_t consumed = left;
    hint = LZ4F_decompress(context, chunk, &produced, at, &consumed, nullptr);
    if (LZ4F_isError(hint)) {
      ok = false;
      break;
    }
    at += consumed;
    left -= consumed;
    out.append(chunk, produced);
    if (out.size() > limit) {
      ok = false;
      break;
    }
    if (consumed == 0 && produced == 0) break;
  }
  // Frames end inside the input; drain what the context still holds.
  while (ok && hint != 0) {
    std::size_t produced = sizeof chunk;
    std::size_t consumed = 0;
    hint = LZ4F_decompress(context, chunk, &produced, at, &consumed, nullptr);
    if (LZ4F_isError(hint) || produced == 0) {
      ok = !LZ4F_isError(hint) && hint == 0;
      break;
    }
    out.append(chunk, produced);
    if (out.size() > limit) ok = false;
  }
  LZ4F_freeDecompressionContext(context);
  return ok && hint == 0;
}

bool inflate_zstd(std::string_view in, std::size_t limit, std::string& out) {
  ZSTD_DStream* stream = ZSTD_createDStream();
  if (stream == nullptr) return false;
  ZSTD_inBuffer input{in.data(), in.size(), 0};
  char chunk[64 * 1024];
  std::size_t rc = 1;
  bool ok = true;
  while (input.pos < input.size || rc != 0) {
    ZSTD_outBuffer output{chunk, sizeof chunk, 0};
    rc = ZSTD_decompressStream(stream, &output, &input);
    if (ZSTD_isError(rc)) {
      ok = false;
      break;
    }
    out.append(chunk, output.pos);
    if (out.size() > limit) {
      ok = false;
      break;
    }
    if (input.pos == input.size && output.pos < output.size && rc != 0) {
      ok = false;  // the input ended inside a frame
      break;
    }
  }
  ZSTD_freeDStream(stream);
  return ok && rc == 0;
}

bool decode_records(Reader& reader, std::int32_t count, RecordBatch& batch, BatchError& error) {
  batch.records.reserve(static_cast<std::size_t>(count));
  std::int32_t previous_delta = -1;
  for (std::int32_t i = 0; i < count; ++i) {
    const std::int32_t length = reader.varint();
    if (!reader.ok() || length < 0 || static_cast<std::size_t>(length) > reader.remaining()) {
      error = {Code::kCorruptMessage, "record " + std::to_string(i) + ": bad length"};
      return false;
    }
    Reader body(reader.raw(static_cast<std::size_t>(length)));
    Record record;
    body.i8();  // attributes: unused in v2
    record.timestamp = batch.base_timestamp + body.varlong();
    record.offset_delta = body.varint();
    auto bytes_or_null = [&body]() -> std::optional<std::string_view> {
      const std::int32_t n = body.varint();
      if (n == -1) return std::nullopt;
      if (n < 0) {
        body.fail("negative length");
        return std::string_view();
      }
      return body.raw(static_cast<std::size_t>(n));
    };
    record.key = bytes_or_null();
    record.value = bytes_or_null();
    const std::int32_t headers = body.varint();
    if (headers < 0 || static_cast<std::size_t>(headers) > body.remaining())
      body.fail("bad headers");
    for (std::int32_t h = 0; body.ok() && h < headers; ++h) {
      Header header;
      auto key = bytes_or_null();
      if (!key) body.fail("a null header key");
      header.key = key.value_or(std::string_view());
      header.value = bytes_or_null();
      record.headers.push_back(header);
    }
    if (!body.ok() || body.remaining() != 0) {
      error = {Code::kCorruptMessage,
               "record " + std::to_string(i) + ": " +
                   (body.ok() ? std::string("bytes left over") : std::string(body.error()))};
      return false;
    }
    if (record.offset_delta <= previous_delta) {
      error = {Code::kInvalidRecord, "record " + std::to_string(i) + ": offset delta out of order"};
      return false;
    }
    previous_delta = record.offset_delta;
    batch.records.push_back(std::move(record));
  }
  return true;
}

}  // namespace

bool inflate(Compression codec, std::string_view compressed, std::size_t limit, std::string& out) {
  switch (codec) {
    case Compression::kNone:
      if (compressed.size() > limit) return false;
      out.append(compressed);
      return true;
    case Compression::kGzip:
      return inflate_gzip(compressed, limit, out);
    case Compression::kSnappy:
      return inflate_snappy(compressed, limit, out);
    case Compression::kLz4:
      return inflate_lz4(compressed, limit, out);
    case Compression::kZstd:
      return inflate_zstd(compressed, limit, out);
  }
  return false;
}

std::string deflate(Compression codec, std::string_view bytes) {
  std::string out;
  switch (codec) {
    case Compression::kNone:
      out.assign(bytes);
      break;
    case Compression::kGzip: {
      z_stream z{};
      deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
      out.resize(deflateBound(&z, static_cast<uLong>(bytes.size())) + 32);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
      z.avail_in = static_cast<uInt>(bytes.size());
      z.next_out = reinterpret_cast<Bytef*>(out.data());
      z.avail_out = static_cast<uInt>(out.size());
      ::deflate(&z, Z_FINISH);
      out.resize(z.total_out);
      deflateEnd(&z);
      break;
    }
    case Compression::kSnappy: {
      std::size_t n = snappy_max_compressed_length(bytes.size());
      out.resize(n);
      snappy_compress(bytes.data(), bytes.size(), out.data(), &n);
      out.resize(n);
      break;
    }
    case Compression::kLz4: {
      out.resize(LZ4F_compressFrameBound(bytes.size(), nullptr));
      const std::size_t n =
          LZ4F_compressFrame(out.data(), out.size(), bytes.data(), bytes.size(), nullptr);
      out.resize(LZ4F_isError(n) ? 0 : n);
      break;
    }
    case Compression::kZstd: {
      out.resize(ZSTD_compressBound(bytes.size()));
      const std::size_t n = ZSTD_compress(out.data(), out.size(), bytes.data(), bytes.size(), 1);
      out.resize(ZSTD_isError(n) ? 0 : n);
      break;
    }
  }
  return out;
}

bool decode_batches(std::string_view set, std::size_t max_inflated_bytes,
                    std::vector<RecordBatch>& out, BatchError& error) {
  std::size_t inflated_total = 0;
  Reader reader(set);
  while (reader.remaining() > 0) {
    const std::size_t start = reader.offset();
    if (reader.remaining() < kBatchHeaderBytes) {
      // The Kafka log may end with a partial batch; a produce may not.
      error = {Code::kCorruptMessage, "a record batch cut short at byte " + std::to_string(start)};
      return false;
    }
    RecordBatch batch;
    batch.base_offset = reader.i64();
    const std::int32_t length = reader.i32();
    if (length < static_cast<std::int32_t>(kBatchHeaderBytes - 12) ||
        static_cast<std::size_t>(length) > reader.remaining()) {
      error = {Code::kCorruptMessage, "record batch at byte " + std::to_string(start) +
                                          ": length " + std::to_string(length) +
                                          " does not match the " +
                                          std::to_string(reader.remaining()) + " bytes left"};
      return false;
    }
    const std::string_view whole = set.substr(start, 12 + static_cast<std::size_t>(length));
    reader.i32();  // partition leader epoch
    const std::int8_t magic = reader.i8();
    if (magic != 2) {
      error = {Code::kUnsupportedForMessageFormat,
               "record batch at byte " + std::to_string(start) + ": message format v" +
                   std::to_string(magic) + "; only v2 (magic 2) is taken"};
      return false;
    }
    const auto crc = static_cast<std::uint32_t>(reader.i32());
    const std::uint32_t actual =
        eventlog::crc32c(whole.data() + kAttributesAt, whole.size() - kAttributesAt);
    if (crc != actual) {
      error = {Code::kCorruptMessage,
               "record batch at byte " + std::to_string(start) + ": CRC-32C mismatch"};
      return false;
    }
    batch.attributes = reader.i16();
    batch.last_offset_delta = reader.i32();
    batch.base_timestamp = reader.i64();
    batch.max_timestamp = reader.i64();
    batch.producer_id = reader.i64();
    batch.producer_epoch = reader.i16();
    batch.base_sequence = reader.i32();
    const std::int32_t count = reader.i32();
    const std::string_view body = reader.raw(whole.size() - kBatchHeaderBytes);
    if (batch.control() || batch.transactional()) {
      error = {Code::kInvalidRecord, "transactional and control batches are not taken"};
      return false;
    }
    if (count < 0 || static_cast<std::int64_t>(count) - 1 != batch.last_offset_delta) {
      error = {Code::kInvalidRecord, "record batch at byte " + std::to_string(start) + ": " +
                                         std::to_string(count) + " records but last offset delta " +
                                         std::to_string(batch.last_offset_delta)};
      return false;
    }
    std::string_view records = body;
    if (batch.compression() != Compression::kNone) {
      if (static_cast<int>(batch.compression()) > 4) {
        error = {Code::kCorruptMessage, "unknown compression codec " +
                                            std::to_string(static_cast<int>(batch.compression()))};
        return false;
      }
      batch.inflated = std::make_unique<std::string>();
      if (!inflate(batch.compression(), body, max_inflated_bytes - inflated_total,
                   *batch.inflated)) {
        error = {Code::kCorruptMessage,
                 "record batch at byte " + std::to_string(start) +
                     ": cannot be decompressed (not the codec's format, or inflates past " +
                     std::to_string(max_inflated_bytes) + " bytes)"};
        return false;
      }
      inflated_total += batch.inflated->size();
      records = *batch.inflated;
    }
    if (static_cast<std::size_t>(count) > records.size()) {
      error = {Code::kCorruptMessage, "more records counted than bytes"};
      return false;
    }
    Reader record_reader(records);
    if (!decode_records(record_reader, count, batch, error)) return false;
    if (record_reader.remaining() != 0 ||
        (!batch.records.empty() && batch.records.back().offset_delta != batch.last_offset_delta)) {
      error = {Code::kCorruptMessage,
               "record batch at byte " + std::to_string(start) + ": records do not fill it"};
      return false;
    }
    out.push_back(std::move(batch));
  }
  return true;
}

void append_batch(std::string& out, std::span<const OutRecord> records, Compression codec,
                  BatchProducer producer) {
  if (records.empty()) return;
  const std::int64_t base_offset = records.front().offset;
  std::int64_t base_timestamp = records.front().timestamp;
  std::int64_t max_timestamp = base_timestamp;
  for (const OutRecord& r : records) {
    base_timestamp = std::min(base_timestamp, r.timestamp);
    max_timestamp = std::max(max_timestamp, r.timestamp);
  }
  const std::size_t start = out.size();
  Writer w(out);
  w.i64(base_offset);
  const std::size_t length_at = w.placeholder_i32();
  w.i32(-1);  // partition leader epoch
  w.i8(2);    // magic
  const std::size_t crc_at = w.placeholder_i32();
  w.i16(static_cast<std::int16_t>(codec));
  w.i32(static_cast<std::int32_t>(records.back().offset - base_offset));
  w.i64(base_timestamp);
  w.i64(max_timestamp);
  w.i64(producer.id);
  w.i16(producer.epoch);
  w.i32(producer.base_sequence);
  w.i32(static_cast<std::int32_t>(records.size()));
  std::string plain;
  std::string& body = codec == Compression::kNone ? out : plain;
  Writer b(body);
  for (const OutRecord& r : records) {
    auto bytes_size = [](const std::optional<std::string_view>& v) {
      return v ? varint_size(static_cast<std::int64_t>(v->size())) + v->size() : varint_size(-1);
    };
    std::size_t size = 1 + varint_size(r.timestamp - base_timestamp) +
                       varint_size(r.offset - base_offset) + bytes_size(r.key) +
                       bytes_size(r.value) +
                       varint_size(static_cast<std::int64_t>(r.headers.size()));
    for (const Header& h : r.headers) size += bytes_size(h.key) + bytes_size(h.value);
    b.varint(static_cast<std::int64_t>(size));
    b.i8(0);
    b.varint(r.timestamp - base_timestamp);
    b.varint(r.offset - base_offset);
    auto put = [&b](const std::optional<std::string_view>& v) {
      if (!v) {
        b.varint(-1);
        return;
      }
      b.varint(static_cast<std::int64_t>(v->size()));
      b.raw(*v);
    };
    put(r.key);
    put(r.value);
    b.varint(static_cast<std::int64_t>(r.headers.size()));
    for (const Header& h : r.headers) {
      put(h.key);
      put(h.value);
    }
  }
  if (codec != Compression::kNone) out += deflate(codec, plain);
  w.patch_i32(length_at, static_cast<std::uint32_t>(out.size() - start - 12));
  w.patch_i32(crc_at, eventlog::crc32c(out.data() + start + kAttributesAt,
                                       out.size() - start - kAttributesAt));
}

}  // namespace keel::kafka

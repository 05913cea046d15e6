#include "keel/kafka/wire.h"

namespace keel::kafka {

std::uint64_t Reader::big_endian(std::size_t n) {
  if (remaining() < n) {
    fail("truncated");
    return 0;
  }
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = v << 8 | static_cast<unsigned char>(bytes_[at_ + i]);
  at_ += n;
  return v;
}

std::string_view Reader::raw(std::size_t n) {
  if (remaining() < n) {
    fail("truncated");
    return {};
  }
  std::string_view out = bytes_.substr(at_, n);
  at_ += n;
  return out;
}

std::string_view Reader::string() {
  auto s = nullable_string();
  if (!s) {
    fail("a null string where one is required");
    return {};
  }
  return *s;
}

std::optional<std::string_view> Reader::nullable_string() {
  const std::int16_t n = i16();
  if (!ok()) return std::string_view();
  if (n == -1) return std::nullopt;
  if (n < 0) {
    fail("negative string length");
    return std::string_view();
  }
  return raw(static_cast<std::size_t>(n));
}

std::optional<std::string_view> Reader::nullable_bytes() {
  const std::int32_t n = i32();
  if (!ok()) return std::string_view();
  if (n == -1) return std::nullopt;
  if (n < 0) {
    fail("negative bytes length");
    return std::string_view();
  }
  return raw(static_cast<std::size_t>(n));
}

std::optional<std::int32_t> Reader::nullable_array(std::size_t min_element_bytes) {
  const std::int32_t n = i32();
  if (!ok()) return 0;
  if (n == -1) return std::nullopt;
  if (n < 0 || static_cast<std::size_t>(n) * min_element_bytes > remaining()) {
    fail(n < 0 ? "negative array length" : "array length past the end of the request");
    return 0;
  }
  return n;
}

std::uint64_t Reader::unsigned_varint(int max_bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < max_bytes; ++i) {
    if (remaining() == 0) {
      fail("truncated varint");
      return 0;
    }
    const auto byte = static_cast<unsigned char>(bytes_[at_++]);
    v |= static_cast<std::uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) return v;
  }
  fail("varint too long");
  return 0;
}

std::int32_t Reader::varint() {
  const auto u = static_cast<std::uint32_t>(unsigned_varint(5));
  return static_cast<std::int32_t>((u >> 1) ^ (~(u & 1) + 1));
}

std::int64_t Reader::varlong() {
  const std::uint64_t u = unsigned_varint(10);
  return static_cast<std::int64_t>((u >> 1) ^ (~(u & 1) + 1));
}

void Writer::big_endian(std::uint64_t v, int n) {
  char bytes[8];
  for (int i = n - 1; i >= 0; --i, v >>= 8) bytes[i] = static_cast<char>(v & 0xff);
  out_.append(bytes, static_cast<std::size_t>(n));
}

void Writer::string(std::string_view s) {
  i16(static_cast<std::int16_t>(s.size()));
  out_.append(s);
}

void Writer::nullable_string(std::optional<std::string_view> s) {
  if (!s) {
    i16(-1);
    return;
  }
  string(*s);
}

void Writer::bytes(std::string_view b) {
  i32(static_cast<std::int32_t>(b.size()));
  out_.append(b);
}

void Writer::nullable_bytes(std::optional<std::string_view> b) {
  if (!b) {
    i32(-1);
    return;
  }
  bytes(*b);
}

void Writer::varint(std::int64_t v) {
  std::uint64_t u = (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
  while (u >= 0x80) {
    out_.push_back(static_cast<char>((u & 0x7f) | 0x80));
    u >>= 7;
  }
  out_.push_back(static_cast<char>(u));
}

void Writer::patch_i32(std::size_t at, std::uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8)
    out_[at + static_cast<std::size_t>(i)] = static_cast<char>(v & 0xff);
}

std::size_t varint_size(std::int64_t v) {
  std::uint64_t u = (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63);
  std::size_t n = 1;
  while (u >= 0x80) {
    u >>= 7;
    ++n;
  }
  return n;
}

}  // namespace keel::kafka

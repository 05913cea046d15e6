#include "keel/core/uuid.h"

#include <cstring>
#include <random>

namespace keel {
namespace {

constexpr std::size_t kCanonicalLength = 36;
constexpr std::size_t kQuotedTextLimit = 64;  // longer texts are cut in error messages

constexpr bool is_dash_position(std::size_t position) {
  return position == 8 || position == 13 || position == 18 || position == 23;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string quoted(std::string_view text) {
  if (text.size() <= kQuotedTextLimit) return "\"" + std::string(text) + "\"";
  return "\"" + std::string(text.substr(0, kQuotedTextLimit)) + "...\"";
}

std::string describe(char c) {
  if (c >= 0x20 && c < 0x7f) return std::string("'") + c + "'";
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto byte = static_cast<unsigned char>(c);
  return std::string("byte 0x") + kDigits[byte >> 4] + kDigits[byte & 0xf];
}

Error parse_error(std::string_view text, const std::string& what) {
  return Error(errc::invalid_argument,
               "uuid " + quoted(text) + ": " + what +
                   "; expected the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx (hex digits)");
}

std::uint64_t load_u64(const std::uint8_t* bytes) {
  std::uint64_t value;
  std::memcpy(&value, bytes, sizeof value);
  return value;
}

std::uint64_t mix64(std::uint64_t x) {
  // The splitmix64 / murmur3 finalizer: every input bit affects every output bit.
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

Uuid Uuid::random_v4(Random& random) {
  Uuid uuid;
  const std::uint64_t high = random.next();
  const std::uint64_t low = random.next();
  for (int i = 0; i < 8; ++i) {
    uuid.bytes_[i] = static_cast<std::uint8_t>(high >> (56 - 8 * i));
    uuid.bytes_[8 + i] = static_cast<std::uint8_t>(low >> (56 - 8 * i));
  }
  uuid.bytes_[6] = static_cast<std::uint8_t>((uuid.bytes_[6] & 0x0f) | 0x40);  // version 4
  uuid.bytes_[8] = static_cast<std::uint8_t>((uuid.bytes_[8] & 0x3f) | 0x80);  // variant 10
  return uuid;
}

Uuid Uuid::random_v4() {
  thread_local Random random([] {
    std::random_device device;
    return (std::uint64_t{device()} << 32) ^ device();
  }());
  return random_v4(random);
}

Result<Uuid> Uuid::parse(std::string_view text) {
  if (text.size() != kCanonicalLength) {
    return parse_error(text, "has " + std::to_string(text.size()) + " characters, not 36");
  }
  Uuid uuid;
  std::size_t byte_index = 0;
  for (std::size_t position = 0; position < kCanonicalLength;) {
    if (is_dash_position(position)) {
      if (text[position] != '-') {
        return parse_error(text, describe(text[position]) + " at offset " +
                                     std::to_string(position) + " should be '-'");
      }
      ++position;
      continue;
    }
    const int high = hex_value(text[position]);
    const int low = hex_value(text[position + 1]);
    if (high < 0 || low < 0) {
      const std::size_t bad = high < 0 ? position : position + 1;
      return parse_error(
          text, describe(text[bad]) + " at offset " + std::to_string(bad) + " is not a hex digit");
    }
    uuid.bytes_[byte_index++] = static_cast<std::uint8_t>(high << 4 | low);
    position += 2;
  }
  return uuid;
}

std::string Uuid::to_string() const {
  std::string text;
  text.reserve(kCanonicalLength);
  append_to(text);
  return text;
}

void Uuid::append_to(std::string& out) const {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < bytes_.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kDigits[bytes_[i] >> 4]);
    out.push_back(kDigits[bytes_[i] & 0xf]);
  }
}

Uuid Uuid::from_bytes(const std::uint8_t* sixteen) {
  Uuid uuid;
  std::memcpy(uuid.bytes_.data(), sixteen, uuid.bytes_.size());
  return uuid;
}

bool Uuid::is_nil() const {
  for (std::uint8_t byte : bytes_) {
    if (byte != 0) return false;
  }
  return true;
}

std::size_t UuidHash::operator()(const Uuid& uuid) const {
  const std::uint64_t high = load_u64(uuid.bytes().data());
  const std::uint64_t low = load_u64(uuid.bytes().data() + 8);
  return static_cast<std::size_t>(mix64(high ^ mix64(low)));
}

}  // namespace keel

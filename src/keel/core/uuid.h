// A 128-bit universally unique identifier (RFC 4122 / RFC 9562), the idempotency key of an
// event. A value type: 16 bytes, copyable, ordered byte by byte, hashable with UuidHash.
#pragma once

#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "keel/core/random.h"
#include "keel/core/result.h"

namespace keel {

class Uuid {
 public:
  // The nil UUID, 00000000-0000-0000-0000-000000000000.
  Uuid() = default;

  // A version 4 (random) UUID drawn from `random`: 122 random bits, the version nibble set to 4
  // and the variant bits to 10. The same seed gives the same sequence of UUIDs, so a simulation
  // that creates events can be replayed. Uniqueness is only as good as the seeding: production
  // code seeds its Random from a real entropy source.
  static Uuid random_v4(Random& random);
  // The same from a per-thread generator seeded from std::random_device: for ids that must be
  // unique across processes and runs (bookkeeping records), not replayable.
  static Uuid random_v4();

  // Reads the canonical form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx": 36 characters, hex digits
  // in either case, dashes at offsets 8, 13, 18 and 23. No braces, no "urn:uuid:" prefix, no
  // surrounding spaces. Any version and variant is accepted. On failure the error
  // (errc::invalid_argument) quotes the text and says what is wrong and where.
  static Result<Uuid> parse(std::string_view text);

  // The canonical form in lowercase; parse(to_string()) gives back the same UUID.
  std::string to_string() const;
  // The same appended to `out`: no allocation when `out` has room (per-request ids).
  void append_to(std::string& out) const;

  // Network byte order: bytes()[0] is the first two hex digits of the canonical form.
  const std::array<std::uint8_t, 16>& bytes() const { return bytes_; }
  // Copies exactly 16 bytes from `sixteen`, in the order bytes() returns them.
  static Uuid from_bytes(const std::uint8_t* sixteen);

  bool is_nil() const;

  // Byte-wise (lexicographic) order, the same order as comparing the canonical strings.
  auto operator<=>(const Uuid&) const = default;

 private:
  std::array<std::uint8_t, 16> bytes_{};
};

// For unordered containers. Mixes all 128 bits, so UUIDs that differ only in a few bits
// (sequential or hand-made ones, not just random v4) still spread over the buckets.
struct UuidHash {
  std::size_t operator()(const Uuid& uuid) const;
};

}  // namespace keel

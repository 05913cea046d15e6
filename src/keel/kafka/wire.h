// Kafka's wire primitives (https://kafka.apache.org/protocol#protocol_types): big-endian
// integers, length-prefixed strings and bytes, arrays, and the zig-zag varints of record
// batches. Reader is bounds-checked with a sticky error: once a read runs past the end or
// meets an impossible length, every later read returns zero values and ok() is false, so a
// decoder reads its fields straight through and checks once. Nothing here allocates per field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace keel::kafka {

// The protocol's error codes that the listener answers with.
enum class Code : std::int16_t {
  kUnknownServerError = -1,
  kNone = 0,
  kOffsetOutOfRange = 1,
  kCorruptMessage = 2,
  kUnknownTopicOrPartition = 3,
  kLeaderNotAvailable = 5,
  kNotLeaderOrFollower = 6,
  kRequestTimedOut = 7,
  kMessageTooLarge = 10,
  kCoordinatorNotAvailable = 15,
  kNotCoordinator = 16,
  kInvalidTopic = 17,
  kRecordListTooLarge = 18,
  kInvalidRequiredAcks = 21,
  kIllegalGeneration = 22,
  kInconsistentGroupProtocol = 23,
  kInvalidGroupId = 24,
  kUnknownMemberId = 25,
  kInvalidSessionTimeout = 26,
  kRebalanceInProgress = 27,
  kUnsupportedVersion = 35,
  kTopicAlreadyExists = 36,
  kInvalidPartitions = 37,
  kInvalidReplicationFactor = 38,
  kInvalidConfig = 40,
  kInvalidRequest = 42,
  kUnsupportedForMessageFormat = 43,
  kOutOfOrderSequenceNumber = 45,
  kDuplicateSequenceNumber = 46,
  kInvalidProducerEpoch = 47,
  kKafkaStorageError = 56,
  kGroupIdNotFound = 69,
  kNonEmptyGroup = 68,
  kMemberIdRequired = 79,
  kInvalidRecord = 87,
};

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  std::int8_t i8() { return static_cast<std::int8_t>(big_endian(1)); }
  std::int16_t i16() { return static_cast<std::int16_t>(big_endian(2)); }
  std::int32_t i32() { return static_cast<std::int32_t>(big_endian(4)); }
  std::int64_t i64() { return static_cast<std::int64_t>(big_endian(8)); }
  bool boolean() { return i8() != 0; }
  // STRING (int16 length); a null one (-1) fails: this field may not be null.
  std::string_view string();
  std::optional<std::string_view> nullable_string();
  // BYTES (int32 length); a null one reads as nullopt.
  std::optional<std::string_view> nullable_bytes();
  std::string_view bytes() { return nullable_bytes().value_or(std::string_view()); }
  // An ARRAY's element count: -1 (null) is nullopt; a count that cannot fit in what is left
  // (each element takes at least `min_element_bytes`) fails.
  std::optional<std::int32_t> nullable_array(std::size_t min_element_bytes = 1);
  std::int32_t array(std::size_t min_element_bytes = 1) {
    return nullable_array(min_element_bytes).value_or(0);
  }
  // Zig-zag varints of record batches (protobuf's encoding, at most 5 and 10 bytes).
  std::int32_t varint();
  std::int64_t varlong();
  // The next `n` bytes as they are.
  std::string_view raw(std::size_t n);

  bool ok() const { return error_ == nullptr; }
  // What went wrong first, for messages ("truncated", "negative length").
  const char* error() const { return error_ != nullptr ? error_ : ""; }
  void fail(const char* why) {
    if (error_ == nullptr) error_ = why;
    at_ = bytes_.size();
  }
  std::size_t remaining() const { return bytes_.size() - at_; }
  std::size_t offset() const { return at_; }

 private:
  std::uint64_t big_endian(std::size_t n);
  std::uint64_t unsigned_varint(int max_bytes);

  std::string_view bytes_;
  std::size_t at_ = 0;
  const char* error_ = nullptr;
};

// Appends Kafka's encodings to a string.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  void i8(std::int8_t v) { big_endian(static_cast<std::uint8_t>(v), 1); }
  void i16(std::int16_t v) { big_endian(static_cast<std::uint16_t>(v), 2); }
  void i32(std::int32_t v) { big_endian(static_cast<std::uint32_t>(v), 4); }
  void i64(std::int64_t v) { big_endian(static_cast<std::uint64_t>(v), 8); }
  void boolean(bool v) { i8(v ? 1 : 0); }
  void code(Code c) { i16(static_cast<std::int16_t>(c)); }
  void string(std::string_view s);
  void nullable_string(std::optional<std::string_view> s);
  void bytes(std::string_view b);
  void nullable_bytes(std::optional<std::string_view> b);
  void array(std::size_t count) { i32(static_cast<std::int32_t>(count)); }
  void varint(std::int64_t v);  // zig-zag, for varint and varlong fields alike
  void raw(std::string_view b) { out_.append(b); }

  // An int32 to fill in later (a size or a CRC): where it is.
  std::size_t placeholder_i32() {
    out_.append(4, '\0');
    return out_.size() - 4;
  }
  void patch_i32(std::size_t at, std::uint32_t v);
  std::size_t size() const { return out_.size(); }
  std::string& out() { return out_; }

 private:
  void big_endian(std::uint64_t v, int n);
  std::string& out_;
};

// The number of bytes varint() writes for `v`.
std::size_t varint_size(std::int64_t v);

}  // namespace keel::kafka

// HTTP/1.1 message heads and chunked framing (RFC 9110, RFC 9112), parsed in place: the result
// points into the caller's bytes and nothing is allocated per message once the field list has
// grown. This is the proxy's data path, where Beast's parser and serializer cost more than the
// rest of a request put together; Beast stays for the admin listener and the clients.
//
// Strict where a lenient reading would let two servers see two different messages (request
// smuggling): CRLF line ends only, no obs-fold, no whitespace before a field's colon, one
// Content-Length value, one Transfer-Encoding field, Transfer-Encoding and Content-Length never
// together in a request, `chunked` as a request's only transfer coding, exactly one Host field
// in an HTTP/1.1 request.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keel::http::h1 {

struct Field {
  std::string_view name;
  std::string_view value;  // without surrounding whitespace
};

// How a message's body is delimited.
enum class Framing {
  kNone,        // no body (a request without length, 1xx/204/304, an answer to HEAD)
  kLength,      // Content-Length bytes
  kChunked,     // chunked transfer coding
  kUntilClose,  // a response whose body ends when the connection closes
};

struct Head {
  // A request's line. An absolute-form target (`http://host:port/path?query`, RFC 9112
  // 3.2.2) is split: `target` is its origin form (the path and query, "/" when it has no path)
  // and `authority` its host and port, which replaces the Host field when forwarded. Empty
  // for an origin-form target.
  std::string_view method;
  std::string_view target;
  std::string_view authority;
  // A response's line.
  unsigned status = 0;
  std::string_view reason;

  unsigned version = 11;  // 10 or 11
  std::vector<Field> fields;
  Framing framing = Framing::kNone;
  std::uint64_t content_length = 0;    // with kLength
  bool keep_alive = true;              // from the version and Connection
  bool expect_continue = false;        // Expect: 100-continue
  std::size_t size = 0;                // bytes of the head, the blank line included
  std::size_t connection_fields = 0;   // how many Connection fields (hop_by_hop reads them)
  std::string_view transfer_encoding;  // the Transfer-Encoding field's value, when there is one

  // The first field's value with that name (compared case-insensitively); empty when none.
  std::string_view find(std::string_view name) const;
  bool has(std::string_view name) const;
};

enum class Parsed { kDone, kNeedMore, kError };

struct ParseResult {
  Parsed state = Parsed::kNeedMore;
  unsigned status = 0;   // with kError: the answer a client should get (400, 413, 501...)
  const char* why = "";  // with kError: what is wrong, for x-keel-reason's detail
};

// Parses a request head from the start of `bytes`. kNeedMore: the blank line has not come yet
// (the caller enforces its header size limit). Leading empty lines are skipped (RFC 9112 2.2).
ParseResult parse_request(std::string_view bytes, Head& head);

// Parses a response head. `head_request`: the answer to a HEAD, which has no body whatever its
// fields say.
ParseResult parse_response(std::string_view bytes, bool head_request, Head& head);

// Whether a field is hop-by-hop (RFC 9110 7.6.1): Connection, Keep-Alive, Proxy-Connection, TE,
// Trailer, Transfer-Encoding, Upgrade, or one that Connection names.
bool hop_by_hop(const Head& head, std::string_view name);

// Whether two names are equal ignoring ASCII case (field names, tokens).
bool iequals(std::string_view a, std::string_view b);

// Walks a chunked body as it arrives, so that it can be passed on byte for byte and its end
// found: chunk sizes, extensions, the data, trailer fields. Bounded: sizes of at most 16 hex
// digits, extension lines of at most `max_line` bytes, and as much for all trailer fields.
class ChunkedReader {
 public:
  ChunkedReader() = default;
  explicit ChunkedReader(std::size_t max_line) : max_line_(max_line) {}

  struct Step {
    std::size_t used = 0;  // bytes of the input that belong to the body
    bool done = false;     // the body ended (the trailer's blank line was read)
    const char* error = nullptr;
  };
  // Reads what `bytes` holds of the body; `on_data(std::string_view)` gets each run of data
  // bytes (without framing). Stops at the body's end: bytes after it are not used.
  template <typename OnData>
  Step feed(std::string_view bytes, OnData&& on_data);
  std::uint64_t data_bytes() const { return data_bytes_; }

 private:
  enum class State {
    kSize,
    kExtensionSpace,
    kExtension,
    kSizeLf,
    kData,
    kDataCr,
    kDataLf,
    kTrailer,
    kTrailerValue,
    kTrailerLf,
    kDone
  };
  // One framing byte; false with `error_` set when it is not allowed.
  bool framing_byte(char c);

  std::size_t max_line_ = 8 * 1024;
  State state_ = State::kSize;
  std::uint64_t remaining_ = 0;  // data bytes left in the current chunk
  std::size_t digits_ = 0;
  std::size_t line_ = 0;           // bytes of the current extension or trailer line
  std::size_t trailer_bytes_ = 0;  // of all trailer lines together
  std::uint64_t data_bytes_ = 0;
  const char* error_ = nullptr;
};

template <typename OnData>
ChunkedReader::Step ChunkedReader::feed(std::string_view bytes, OnData&& on_data) {
  std::size_t at = 0;
  while (at < bytes.size() && state_ != State::kDone) {
    if (state_ == State::kData) {
      const std::size_t n =
          static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, bytes.size() - at));
      on_data(bytes.substr(at, n));
      at += n;
      remaining_ -= n;
      data_bytes_ += n;
      if (remaining_ == 0) state_ = State::kDataCr;
      continue;
    }
    if (!framing_byte(bytes[at])) return {at, false, error_};
    ++at;
  }
  return {at, state_ == State::kDone, nullptr};
}

}  // namespace keel::http::h1

#include "keel/http/h1.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace keel::http::h1 {
namespace {

TEST(H1, ParsesARequestHeadInPlace) {
  const std::string bytes =
      "\r\nGET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Thing:  two words \r\nConnection: close\r\n\r\nrest";
  Head head;
  auto result = parse_request(bytes, head);
  ASSERT_EQ(result.state, Parsed::kDone) << result.why;
  EXPECT_EQ(head.method, "GET");
  EXPECT_EQ(head.target, "/a?b=1");
  EXPECT_EQ(head.version, 11u);
  EXPECT_EQ(head.find("x-thing"), "two words");
  EXPECT_EQ(head.find("HOST"), "x");
  EXPECT_FALSE(head.keep_alive);
  EXPECT_EQ(head.framing, Framing::kNone);
  EXPECT_EQ(bytes.substr(head.size), "rest");
}

TEST(H1, AbsoluteFormTargetsAreSplitIntoAuthorityAndOriginForm) {
  Head head;
  auto parsed = parse_request("GET http://a.example:81/p?q HTTP/1.1\r\nHost: b\r\n\r\n", head);
  ASSERT_EQ(parsed.state, Parsed::kDone) << parsed.why;
  EXPECT_EQ(head.target, "/p?q");
  EXPECT_EQ(head.authority, "a.example:81");
  parsed = parse_request("OPTIONS HTTP://[::1] HTTP/1.1\r\nHost: b\r\n\r\n", head);
  ASSERT_EQ(parsed.state, Parsed::kDone) << parsed.why;
  EXPECT_EQ(head.target, "/");
  EXPECT_EQ(head.authority, "[::1]");
  parsed = parse_request("GET /plain HTTP/1.1\r\nHost: b\r\n\r\n", head);
  EXPECT_EQ(head.authority, "");
  for (const char* bad :
       {"GET mailto:x HTTP/1.1\r\nHost: b\r\n\r\n", "GET http:///p HTTP/1.1\r\nHost: b\r\n\r\n",
        "GET http://u@h/p HTTP/1.1\r\nHost: b\r\n\r\n",
        "GET relative/path HTTP/1.1\r\nHost: b\r\n\r\n"}) {
    EXPECT_EQ(parse_request(bad, head).state, Parsed::kError) << bad;
  }
}

TEST(H1, NeedsMoreUntilTheBlankLine) {
  const std::string whole =
      "POST / HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n";
  Head head;
  for (std::size_t n = 0; n < whole.size(); ++n) {
    EXPECT_EQ(parse_request(whole.substr(0, n), head).state, Parsed::kNeedMore) << n;
  }
  ASSERT_EQ(parse_request(whole, head).state, Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kLength);
  EXPECT_EQ(head.content_length, 5u);
  EXPECT_EQ(head.version, 10u);
  EXPECT_TRUE(head.keep_alive);
}

TEST(H1, RefusesAmbiguousOrMalformedRequests) {
  struct Case {
    std::string bytes;
    unsigned status;
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
      {"GET / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501},
      {"GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: x\ny: z\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\x01z\r\n\r\n", 400},
      {"GET / HTTP/9.9\r\n\r\n", 400},
      {"GET /a b HTTP/1.1\r\n\r\n", 400},
      {"GET  HTTP/1.1\r\n\r\n", 400},
      {"\x01\x02 garbage", 400},
      {"G(T / HTTP/1.1\r\n\r\n", 400},
      // An empty coding list would leave the body unframed: a request smuggled inside it.
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n0 /x HTTP/1.1\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       400},
      {"GET / HTTP/1.1\r\n\r\n", 400},                        // no Host
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},  // two
  };
  for (const auto& c : cases) {
    Head head;
    auto result = parse_request(c.bytes, head);
    EXPECT_EQ(result.state, Parsed::kError) << c.bytes;
    EXPECT_EQ(result.status, c.status) << c.bytes;
    EXPECT_NE(std::string(result.why), "") << c.bytes;
  }
}

TEST(H1, ResponseFramingFollowsStatusMethodAndFields) {
  Head head;
  ASSERT_EQ(parse_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false, head).state,
            Parsed::kDone);
  EXPECT_EQ(head.status, 200u);
  EXPECT_EQ(head.reason, "OK");
  EXPECT_EQ(head.framing, Framing::kLength);
  EXPECT_TRUE(head.keep_alive);

  ASSERT_EQ(parse_response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true, head).state,
            Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kNone);

  ASSERT_EQ(parse_response("HTTP/1.1 204 No Content\r\n\r\n", false, head).state, Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kNone);
  EXPECT_TRUE(head.keep_alive);

  ASSERT_EQ(parse_response("HTTP/1.1 200 OK\r\n\r\n", false, head).state, Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kUntilClose);
  EXPECT_FALSE(head.keep_alive);

  // Transfer-Encoding wins over Content-Length in a response.
  ASSERT_EQ(
      parse_response("HTTP/1.1 200\r\nContent-Length: 9\r\nTransfer-Encoding: chunked\r\n\r\n",
                     false, head)
          .state,
      Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kChunked);
  EXPECT_EQ(head.reason, "");

  // A coding before chunked stays the body's: still chunked framing, the value kept.
  ASSERT_EQ(
      parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", false, head)
          .state,
      Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kChunked);
  EXPECT_EQ(head.transfer_encoding, "gzip, chunked");
  ASSERT_EQ(parse_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, head).state,
            Parsed::kDone);
  EXPECT_EQ(head.framing, Framing::kUntilClose);

  EXPECT_EQ(parse_response("HTTP/1.1 2x0 OK\r\n\r\n", false, head).state, Parsed::kError);
  EXPECT_EQ(parse_response("SSH-2.0-OpenSSH\r\n\r\n", false, head).state, Parsed::kError);
}

TEST(H1, HopByHopIncludesFieldsConnectionNames) {
  Head head;
  ASSERT_EQ(
      parse_request("GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Secret, close\r\n\r\n", head).state,
      Parsed::kDone);
  EXPECT_TRUE(hop_by_hop(head, "x-secret"));
  EXPECT_TRUE(hop_by_hop(head, "Keep-Alive"));
  EXPECT_TRUE(hop_by_hop(head, "transfer-encoding"));
  EXPECT_FALSE(hop_by_hop(head, "x-other"));
}

TEST(H1, ChunkedReaderFindsTheEndAcrossAnySplit) {
  const std::string body = "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: t\r\n\r\nNEXT";
  const std::size_t end = body.size() - 4;
  for (std::size_t split = 0; split <= end; ++split) {
    ChunkedReader reader;
    std::string data;
    auto collect = [&](std::string_view run) { data.append(run); };
    auto first = reader.feed(std::string_view(body).substr(0, split), collect);
    ASSERT_EQ(first.error, nullptr);
    ASSERT_EQ(first.used, split);
    auto second = reader.feed(std::string_view(body).substr(split), collect);
    ASSERT_EQ(second.error, nullptr) << split;
    EXPECT_TRUE(second.done);
    EXPECT_EQ(split + second.used, end);
    EXPECT_EQ(data, "hello world");
    EXPECT_EQ(reader.data_bytes(), 11u);
  }
}

TEST(H1, ChunkedReaderTakesWellFormedTrailersAndExtensions) {
  for (const std::string& good : std::vector<std::string>{
           "0\r\n\r\n", "0\r\nX-Checksum: abc\r\nX-Empty:\r\n\r\n",
           "5 ;a=1 ; b\r\nhello\r\n0\r\nTrailer-Name:  spaced value \r\n\r\n"}) {
    ChunkedReader reader;
    auto step = reader.feed(good, [](std::string_view) {});
    EXPECT_EQ(step.error, nullptr) << good;
    EXPECT_TRUE(step.done) << good;
  }
}

TEST(H1, ChunkedReaderRefusesBadFraming) {
  for (const std::string& bad : std::vector<std::string>{
           "zz\r\n", "5\r\nhelloX\r\n", "5\nhello", "11111111111111111\r\n", "\r\n",
           "3\r\nabc\r\n0\r\nx\x01\r\n\r\n",
           // Trailer lines each under the limit, together over it.
           "0\r\n" + std::string(5000, 'a') + "\r\n" + std::string(5000, 'b') + "\r\n",
           // Trailer lines that are not field lines: a smuggled request, no colon, an empty
           // name, a name with a space, a folded line.
           "0\r\nGET /other HTTP/1.1\r\nHost: x\r\n\r\n", "0\r\nno-colon\r\n\r\n",
           "0\r\n: empty\r\n\r\n", "0\r\nbad name: v\r\n\r\n", "0\r\nA: b\r\n folded\r\n\r\n",
           // A chunk size followed by something other than an extension.
           "5 x\r\nhello\r\n0\r\n\r\n"}) {
    ChunkedReader reader;
    auto step = reader.feed(bad, [](std::string_view) {});
    EXPECT_NE(step.error, nullptr) << bad;
  }
}

}  // namespace
}  // namespace keel::http::h1

// The heads the proxy writes, from heads parsed by h1: what goes upstream, what the client
// gets, and the local replies.
#include "keel/proxy/messages.h"

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace keel::proxy {
namespace {

namespace h1 = http::h1;

// Heads point into the bytes they were parsed from: those live as long as the test binary.
std::string_view keep(std::string_view text) {
  static std::vector<std::unique_ptr<std::string>> kept;
  return *kept.emplace_back(std::make_unique<std::string>(text));
}

h1::Head request(std::string_view text) {
  h1::Head head;
  EXPECT_EQ(h1::parse_request(keep(text), head).state, h1::Parsed::kDone);
  return head;
}

h1::Head response(std::string_view text) {
  h1::Head head;
  EXPECT_EQ(h1::parse_response(keep(text), false, head).state, h1::Parsed::kDone);
  return head;
}

TEST(UpstreamRequestHead, DropsHopByHopFieldsAndAddsForwarding) {
  ForwardedHeaders forwarded;
  auto head = request(
      "POST /p?q HTTP/1.1\r\nHost: shop\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
      "Keep-Alive: 5\r\nExpect: 100-continue\r\nX-Forwarded-For: 1.1.1.1\r\n"
      "X-Forwarded-For: 2.2.2.2\r\nX-Forwarded-Proto: https\r\nX-Request-Id: old\r\n"
      "Content-Length: 3\r\nAccept: */*\r\n\r\n");
  std::string out, scratch;
  upstream_request_head(head, {&forwarded, "9.9.9.9", "rid"}, out, scratch);
  EXPECT_EQ(out,
            "POST /p?q HTTP/1.1\r\nHost: shop\r\nAccept: */*\r\n"
            "x-forwarded-for: 1.1.1.1, 2.2.2.2, 9.9.9.9\r\nx-forwarded-proto: http\r\n"
            "x-request-id: rid\r\ncontent-length: 3\r\n\r\n");
}

TEST(UpstreamRequestHead, KeepsWhatForwardingLeavesAloneWhenTurnedOff) {
  ForwardedHeaders forwarded{
      .x_forwarded_for = false, .x_forwarded_proto = false, .generate_request_id = false};
  auto head = request(
      "GET http://api:81/x HTTP/1.1\r\nHost: other\r\nX-Forwarded-For: 1.1.1.1\r\n"
      "X-Forwarded-Proto: https\r\nTransfer-Encoding: chunked\r\n\r\n");
  std::string out, scratch;
  upstream_request_head(head, {&forwarded, "9.9.9.9", ""}, out, scratch);
  EXPECT_EQ(out,
            "GET /x HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n"
            "host: api:81\r\ntransfer-encoding: chunked\r\n\r\n");
}

TEST(ClientResponseHead, RestatesFramingForTheClientsVersion) {
  auto chunked = response(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n"
      "X-Request-Id: theirs\r\nETag: \"e\"\r\n\r\n");
  std::string out;
  client_response_head(chunked, 11, true, false, "rid", out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nETag: \"e\"\r\ntransfer-encoding: gzip, chunked\r\n"
            "x-request-id: rid\r\n\r\n");
  client_response_head(chunked, 10, false, true, "", out);
  EXPECT_EQ(out, "HTTP/1.0 200 OK\r\nETag: \"e\"\r\nconnection: close\r\n\r\n");
  auto sized = response("HTTP/1.1 404 Nope\r\nContent-Length: 4\r\n\r\n");
  client_response_head(sized, 10, true, false, "", out);
  EXPECT_EQ(out, "HTTP/1.0 404 Nope\r\ncontent-length: 4\r\nconnection: keep-alive\r\n\r\n");
}

TEST(LocalReplyFor, MapsEveryFlagToEnvoysStatus) {
  EXPECT_EQ(local_reply_for(Flag::kConnectFailure).status, 502u);
  EXPECT_EQ(local_reply_for(Flag::kReset).status, 502u);
  EXPECT_EQ(local_reply_for(Flag::kTimeout).status, 504u);
  EXPECT_EQ(local_reply_for(Flag::kOverflow).reason, "overflow");
  EXPECT_EQ(local_reply_for(Flag::kBreakerOpen).status, 503u);
  EXPECT_EQ(local_reply_for(Flag::kNoHealthy).reason, "no_healthy_endpoint");
  EXPECT_EQ(local_reply_for(Flag::kBadRequest).status, 400u);
  EXPECT_STREQ(flag_code(Flag::kTimeout), "UT");
  EXPECT_STREQ(flag_code(Flag::kNone), "-");
}

}  // namespace
}  // namespace keel::proxy

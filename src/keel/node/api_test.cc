#include "keel/node/api.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "keel/eventlog/errc.h"

namespace keel::node {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kJson = "application/json";

// Decodes with ids from a seeded generator, so tests know which ids were made up.
class Decode : public ::testing::Test {
 protected:
  Result<Command> decode(std::string_view method, std::string_view target,
                         std::string_view body = "", std::string_view content_type = kJson,
                         std::string_view last_event_id = "") {
    return decode_request({.method = method,
                           .target = target,
                           .body = body,
                           .content_type = content_type,
                           .last_event_id = last_event_id},
                          [this] { return Uuid::random_v4(random_); });
  }

  template <typename T>
  T command(std::string_view method, std::string_view target, std::string_view body = "",
            std::string_view content_type = kJson, std::string_view last_event_id = "") {
    auto decoded = decode(method, target, body, content_type, last_event_id);
    EXPECT_TRUE(decoded.ok()) << method << " " << target << " " << body << ": "
                              << decoded.error().to_string();
    if (!decoded.ok()) return T{};
    EXPECT_TRUE(std::holds_alternative<T>(*decoded))
        << method << " " << target << " decoded to " << command_name(*decoded);
    if (!std::holds_alternative<T>(*decoded)) return T{};
    return std::get<T>(std::move(*decoded));
  }

  // The request fails with this status and code, and the message holds `words`.
  void fails(std::string_view method, std::string_view target, int status, std::string_view code,
             std::string_view words = "", std::string_view body = "",
             std::string_view content_type = kJson, std::string_view last_event_id = "") {
    auto decoded = decode(method, target, body, content_type, last_event_id);
    ASSERT_FALSE(decoded.ok()) << method << " " << target << " " << body << " decoded to "
                               << command_name(*decoded);
    const ApiError error = api_error(decoded.error());
    EXPECT_EQ(error.status, status)
        << method << " " << target << " " << body << ": " << error.message;
    EXPECT_EQ(error.code, code) << method << " " << target << " " << body << ": " << error.message;
    EXPECT_NE(error.message.find(words), std::string::npos)
        << method << " " << target << " " << body << ": \"" << error.message << "\" does not say \""
        << words << "\"";
  }
  // A body on POST /v1/streams/s that fails.
  void append_fails(std::string_view body, int status, std::string_view code,
                    std::string_view words = "") {
    fails("POST", "/v1/streams/s", status, code, words, body);
  }

  Random random_{7};
};

// ---- Routes ----

TEST_F(Decode, EveryRouteGivesItsCommand) {
  struct Case {
    std::string_view method, target, body, name;
  };
  const Case cases[] = {
      {"POST", "/v1/streams/order-1", R"({"type":"T","data":{}})", "append"},
      {"GET", "/v1/streams/order-1", "", "read_stream"},
      {"DELETE", "/v1/streams/order-1", "", "delete_stream"},
      {"GET", "/v1/streams/order-1/metadata", "", "get_metadata"},
      {"PUT", "/v1/streams/order-1/metadata", "{}", "set_metadata"},
      {"GET", "/v1/streams/order-1/subscribe", "", "subscribe_stream"},
      {"GET", "/v1/all", "", "read_all"},
      {"GET", "/v1/all/subscribe", "", "subscribe_all"},
      {"GET", "/v1/groups", "", "list_groups"},
      {"PUT", "/v1/groups/billing", "{}", "create_group"},
      {"GET", "/v1/groups/billing", "", "get_group"},
      {"DELETE", "/v1/groups/billing", "", "delete_group"},
      {"POST", "/v1/groups/billing/poll", R"({"member":"w1"})", "poll"},
      {"POST", "/v1/groups/billing/ack", R"({"member":"w1","ids":[1]})", "ack"},
      {"POST", "/v1/groups/billing/nack", R"({"member":"w1","ids":[1],"action":"skip"})", "nack"},
      {"GET", "/v1/groups/billing/parked", "", "list_parked"},
      {"POST", "/v1/groups/billing/parked/replay", "", "replay_parked"},
      {"PUT", "/v1/projections/orders", R"({"position":0})", "report_projection"},
      {"GET", "/v1/projections", "", "list_projections"},
      {"GET", "/v1/projections/orders", "", "get_projection"},
      {"DELETE", "/v1/projections/orders", "", "delete_projection"},
      {"GET", "/metrics", "", "metrics"},
      {"GET", "/healthz", "", "healthz"},
      {"GET", "/ready", "", "ready"},
  };
  for (const Case& c : cases) {
    auto decoded = decode(c.method, c.target, c.body);
    ASSERT_TRUE(decoded.ok()) << c.method << " " << c.target << ": " << decoded.error().to_string();
    EXPECT_EQ(command_name(*decoded), c.name) << c.method << " " << c.target;
  }
}

TEST_F(Decode, UnknownPathsAreNotFound) {
  for (std::string_view target : {"",
                                  "*",
                                  "x",
                                  "/",
                                  "//",
                                  "/v1",
                                  "/v2/streams/s",
                                  "/v1/streams",
                                  "/v1/streams/",
                                  "/v1/streams/s/",
                                  "//v1/streams/s",
                                  "/v1//streams/s",
                                  "/v1/streams/s/events",
                                  "/v1/streams/s/metadata/x",
                                  "/v1/all/x",
                                  "/v1/all/subscribe/x",
                                  "/v1/groups/",
                                  "/v1/groups/g/parked/x",
                                  "/v1/groups/g/parked/replay/x",
                                  "/v1/groups/g/x",
                                  "/metrics/x",
                                  "/V1/streams/s",
                                  "/v1/%73treams/s",
                                  "/a/b/c/d/e/f/g/h"}) {
    fails("GET", target, 404, "not_found", "no route");
  }
  fails("GET", "/nowhere?x=1", 404, "not_found", "\"/nowhere\"");
}

TEST_F(Decode, WrongMethodsNameTheAllowedOnes) {
  struct Case {
    std::string_view method, target, allow;
  };
  const Case cases[] = {
      {"PUT", "/v1/streams/s", "GET, POST, DELETE"},
      {"PATCH", "/v1/streams/s", "GET, POST, DELETE"},
      {"get", "/v1/streams/s", "GET, POST, DELETE"},  // methods are case-sensitive
      {"HEAD", "/v1/all", "GET"},
      {"POST", "/v1/streams/s/metadata", "GET, PUT"},
      {"POST", "/v1/streams/s/subscribe", "GET"},
      {"DELETE", "/v1/all", "GET"},
      {"POST", "/v1/groups", "GET"},
      {"POST", "/v1/groups/g", "GET, PUT, DELETE"},
      {"GET", "/v1/groups/g/poll", "POST"},
      {"PUT", "/v1/groups/g/ack", "POST"},
      {"GET", "/v1/groups/g/nack", "POST"},
      {"POST", "/v1/groups/g/parked", "GET"},
      {"GET", "/v1/groups/g/parked/replay", "POST"},
      {"POST", "/metrics", "GET"},
      {"OPTIONS", "/healthz", "GET"},
      {"DELETE", "/ready", "GET"},
  };
  for (const Case& c : cases) {
    auto decoded = decode(c.method, c.target);
    ASSERT_FALSE(decoded.ok()) << c.method << " " << c.target;
    const ApiError error = api_error(decoded.error());
    EXPECT_EQ(error.status, 405) << c.method << " " << c.target;
    EXPECT_EQ(error.code, "method_not_allowed");
    EXPECT_EQ(error.allow, c.allow) << c.method << " " << c.target;
  }
}

TEST_F(Decode, OperationalRoutesIgnoreTheirQuery) {
  EXPECT_EQ(command_name(*decode("GET", "/metrics?name[]=x&%zz")), "metrics");
  EXPECT_EQ(command_name(*decode("GET", "/healthz?probe=1")), "healthz");
  EXPECT_EQ(command_name(*decode("GET", "/ready?")), "ready");
}

TEST_F(Decode, OtherRoutesRefuseUnknownAndRepeatedParameters) {
  fails("GET", "/v1/streams/s?form=5", 400, "invalid_argument",
        "unknown query parameter \"form\"; this route takes from, direction, limit");
  fails("GET", "/v1/streams/s?from=1&from=2", 400, "invalid_argument", "?from is given twice");
  fails("GET", "/v1/groups?x", 400, "invalid_argument", "this route takes none");
  fails("GET", "/v1/groups/g?verbose=1", 400, "invalid_argument", "\"verbose\"");
  fails("DELETE", "/v1/groups/g?x=1", 400, "invalid_argument", "\"x\"");
  fails("POST", "/v1/groups/g/parked/replay?all=true", 400, "invalid_argument", "\"all\"");
  fails("GET", "/v1/streams/s/metadata?x=1", 400, "invalid_argument", "\"x\"");
  // Empty pieces are nothing.
  auto read = command<ReadStreamCommand>("GET", "/v1/streams/s?&&limit=5&");
  EXPECT_EQ(read.limit, 5u);
}

// ---- Names in the path ----

TEST_F(Decode, StreamNamesArePercentDecoded) {
  struct Case {
    std::string_view segment, name;
  };
  const Case cases[] = {
      {"order-1", "order-1"},
      {"order%2D1", "order-1"},
      {"a%2Fb", "a/b"},
      {"a%2fb", "a/b"},
      {"with%20space", "with space"},
      {"a+b", "a+b"},
      {"%C3%A9t%C3%A9", "été"},
      {"%c3%a9", "é"},
      {"%E2%82%AC", "€"},
      {"%F0%9F%98%80", "😀"},
      {"caf\xc3\xa9", "café"},
      {"%25", "%"},
      {"a%3Fb", "a?b"},
      {"%24ok", "$ok"},
      {"~!*'();:@&=,", "~!*'();:@&=,"},
  };
  for (const Case& c : cases) {
    auto read = command<ReadStreamCommand>("GET", "/v1/streams/" + std::string(c.segment));
    EXPECT_EQ(read.stream, c.name) << c.segment;
    auto metadata =
        command<GetMetadataCommand>("GET", "/v1/streams/" + std::string(c.segment) + "/metadata");
    EXPECT_EQ(metadata.stream, c.name) << c.segment;
  }
}

TEST_F(Decode, BadEscapesAndBadNamesAreRefused) {
  for (std::string_view segment : {"%", "a%", "a%4", "%zz", "%G0", "%4g", "ab%%20"}) {
    fails("GET", "/v1/streams/" + std::string(segment), 400, "invalid_stream_name",
          "bad percent escape at byte");
  }
  fails("GET", "/v1/streams/abc%4", 400, "invalid_stream_name", "at byte 3");
  fails("GET", "/v1/streams/a%00b", 400, "invalid_stream_name", "control character (U+0000)");
  fails("GET", "/v1/streams/a%0Ab", 400, "invalid_stream_name", "control character (U+000A)");
  fails("GET", "/v1/streams/a%7F", 400, "invalid_stream_name", "U+007F");
  fails("GET", "/v1/streams/a%C2%85", 400, "invalid_stream_name", "U+0085");  // C1 NEL
  fails("GET", "/v1/streams/a%FF", 400, "invalid_stream_name", "not UTF-8 at byte 1");
  fails("GET", "/v1/streams/%C0%AF", 400, "invalid_stream_name", "not UTF-8");        // overlong
  fails("GET", "/v1/streams/%ED%A0%80", 400, "invalid_stream_name", "not UTF-8");     // surrogate
  fails("GET", "/v1/streams/%F4%90%80%80", 400, "invalid_stream_name", "not UTF-8");  // > U+10FFFF
  fails("GET", "/v1/streams/%E2%82", 400, "invalid_stream_name", "not UTF-8");        // cut short
  fails("POST", "/v1/streams/%zz", 400, "invalid_stream_name", "bad percent escape",
        R"({"type":"T","data":1})");
}

TEST_F(Decode, StreamNamesHaveALengthLimit) {
  const std::string longest(kMaxStreamNameBytes, 'a');
  EXPECT_EQ(command<ReadStreamCommand>("GET", "/v1/streams/" + longest).stream, longest);
  fails("GET", "/v1/streams/" + longest + "a", 400, "invalid_stream_name",
        "1025 bytes; the limit is 1024");
  // Counted after decoding: 1024 escaped bytes are 1024 bytes.
  std::string escaped;
  for (std::size_t i = 0; i < kMaxStreamNameBytes; ++i) escaped += "%41";
  EXPECT_EQ(command<ReadStreamCommand>("GET", "/v1/streams/" + escaped).stream,
            std::string(kMaxStreamNameBytes, 'A'));
}

TEST_F(Decode, SystemStreamsAreReadOnly) {
  const std::string event = R"({"type":"T","data":1})";
  fails("POST", "/v1/streams/$keel-group-g-parked", 403, "system_stream", "'$'", event);
  fails("POST", "/v1/streams/%24x", 403, "system_stream", "\"$x\"", event);
  fails("DELETE", "/v1/streams/$x", 403, "system_stream");
  fails("PUT", "/v1/streams/$x/metadata", 403, "system_stream", "", "{}");
  // The check comes before the body's: no point fixing a body for a stream that is refused.
  fails("POST", "/v1/streams/$x", 403, "system_stream", "", "not json");
  EXPECT_EQ(command<ReadStreamCommand>("GET", "/v1/streams/$x").stream, "$x");
  EXPECT_EQ(command<GetMetadataCommand>("GET", "/v1/streams/$x/metadata").stream, "$x");
  EXPECT_EQ(command<SubscribeStreamCommand>("GET", "/v1/streams/$x/subscribe").stream, "$x");
  // '$' elsewhere is an ordinary character.
  EXPECT_EQ(command<AppendCommand>("POST", "/v1/streams/a$", event).stream, "a$");
}

TEST_F(Decode, GroupNamesFollowPubsubRules) {
  EXPECT_EQ(command<GetGroupCommand>("GET", "/v1/groups/billing.v2_x-1").group, "billing.v2_x-1");
  EXPECT_EQ(command<GetGroupCommand>("GET", "/v1/groups/%62illing").group, "billing");
  fails("GET", "/v1/groups/a%20b", 400, "invalid_argument", "not a valid name");
  fails("GET", "/v1/groups/caf%C3%A9", 400, "invalid_argument", "not a valid name");
  fails("GET", "/v1/groups/" + std::string(201, 'g'), 400, "invalid_argument", "1 to 200 letters");
  fails("DELETE", "/v1/groups/a%2", 400, "invalid_argument", "bad percent escape");
  fails("POST", "/v1/groups/$g/poll", 400, "invalid_argument", "not a valid name",
        R"({"member":"m"})");
}

// ---- Appends ----

TEST_F(Decode, OneEventAppends) {
  auto append = command<AppendCommand>(
      "POST", "/v1/streams/order-1",
      R"({"type": "OrderPlaced", "data": { "total" : 4200, "lines" : [1, 2] }, "metadata": {"by": "web"}})");
  EXPECT_EQ(append.stream, "order-1");
  EXPECT_FALSE(append.batch);
  EXPECT_EQ(append.expected.kind(), ExpectedVersion::Kind::kAny);
  ASSERT_EQ(append.events.size(), 1u);
  const EventData& event = append.events[0];
  EXPECT_EQ(event.type, "OrderPlaced");
  // Compact, and in the client's key order (not sorted).
  EXPECT_EQ(event.data, R"({"total":4200,"lines":[1,2]})");
  EXPECT_EQ(event.metadata, R"({"by":"web"})");
  // No id: the next one from the generator.
  Random expected(7);
  EXPECT_EQ(event.id, Uuid::random_v4(expected));
}

TEST_F(Decode, DataIsAnyJsonValue) {
  struct Case {
    std::string_view data, stored;
  };
  const Case cases[] = {
      {"null", "null"},
      {"true", "true"},
      {"-0", "0"},
      {"12", "12"},
      {"-9223372036854775808", "-9223372036854775808"},
      {"18446744073709551615", "18446744073709551615"},
      {"1.5", "1.5"},
      {"1.5e3", "1500.0"},
      {R"("text")", R"("text")"},
      {R"("\u00e9\n")", R"("é\n")"},
      {"[ ]", "[]"},
      {R"({"b":1,"a":{"d":[true,null],"c":"x"}})", R"({"b":1,"a":{"d":[true,null],"c":"x"}})"},
  };
  for (const Case& c : cases) {
    auto append = command<AppendCommand>("POST", "/v1/streams/s",
                                         R"({"type":"T","data":)" + std::string(c.data) + "}");
    ASSERT_EQ(append.events.size(), 1u) << c.data;
    EXPECT_EQ(append.events[0].data, c.stored) << c.data;
    EXPECT_EQ(append.events[0].metadata, "") << c.data;
  }
}

TEST_F(Decode, EventIdsAreUuids) {
  auto append = command<AppendCommand>(
      "POST", "/v1/streams/s",
      R"({"id":"123E4567-e89b-12d3-a456-426614174000","type":"T","data":1})");
  ASSERT_EQ(append.events.size(), 1u);
  EXPECT_EQ(append.events[0].id.to_string(), "123e4567-e89b-12d3-a456-426614174000");
  // null is absent: an id is made.
  auto made = command<AppendCommand>("POST", "/v1/streams/s", R"({"id":null,"type":"T","data":1})");
  ASSERT_EQ(made.events.size(), 1u);
  EXPECT_FALSE(made.events[0].id.is_nil());

  append_fails(R"({"id":"123","type":"T","data":1})", 400, "invalid_argument", "id: uuid \"123\"");
  append_fails(R"({"id":"{123e4567-e89b-12d3-a456-426614174000}","type":"T","data":1})", 400,
               "invalid_argument", "id: uuid");
  append_fails(R"({"id":"00000000-0000-0000-0000-000000000000","type":"T","data":1})", 400,
               "invalid_argument", "nil UUID");
  append_fails(R"({"id":42,"type":"T","data":1})", 400, "invalid_argument",
               "id must be a string, not 42");
}

TEST_F(Decode, EventFieldsAreChecked) {
  append_fails(R"({"data":1})", 400, "invalid_argument", "type is required");
  append_fails(R"({"type":null,"data":1})", 400, "invalid_argument", "type is required");
  append_fails(R"({"type":"","data":1})", 400, "invalid_argument", "type is empty");
  append_fails(R"({"type":7,"data":1})", 400, "invalid_argument", "type must be a string, not 7");
  append_fails(R"({"type":"a\nb","data":1})", 400, "invalid_argument",
               "type \"a\\nb\" has a control character (U+000A)");
  append_fails(R"({"type":")" + std::string(kMaxEventTypeBytes + 1, 't') + R"(","data":1})", 400,
               "invalid_argument", "type is 1025 bytes; the limit is 1024");
  append_fails(R"({"type":"T"})", 400, "invalid_argument", "data is required");
  append_fails(R"({"type":"T","data":1,"metadata":[1]})", 400, "invalid_argument",
               "metadata must be a JSON object, not [1]");
  append_fails(R"({"type":"T","data":1,"metadata":"x"})", 400, "invalid_argument",
               "metadata must be a JSON object");
  append_fails(R"({"type":"T","data":1,"extra":1})", 400, "invalid_argument",
               "unknown field \"extra\" in the event; it takes id, type, data, metadata");
  append_fails(R"({"type":"T","data":1,"expected_version":"any"})", 400, "invalid_argument",
               "unknown field \"expected_version\"");
  // metadata null is none.
  auto append =
      command<AppendCommand>("POST", "/v1/streams/s", R"({"type":"T","data":1,"metadata":null})");
  ASSERT_EQ(append.events.size(), 1u);
  EXPECT_EQ(append.events[0].metadata, "");
}

TEST_F(Decode, BodiesMustBeObjects) {
  for (std::string_view body :
       {"[]", "[{\"type\":\"T\",\"data\":1}]", "\"x\"", "1", "null", "true"}) {
    append_fails(body, 400, "invalid_argument", "the body must be a JSON object");
  }
  fails("PUT", "/v1/streams/s/metadata", 400, "invalid_argument",
        "the metadata must be a JSON object, not []", "[]");
  fails("PUT", "/v1/groups/g", 400, "invalid_argument", "the group must be a JSON object", "7");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "the poll must be a JSON object",
        "\"m\"");
}

TEST_F(Decode, BatchesAppend) {
  auto append = command<AppendCommand>("POST", "/v1/streams/s", R"({
    "expected_version": 4,
    "events": [
      {"type": "A", "data": {"n": 1}},
      {"id": "123e4567-e89b-12d3-a456-426614174000", "type": "B", "data": [2], "metadata": {}}
    ]})");
  EXPECT_TRUE(append.batch);
  EXPECT_EQ(append.expected.kind(), ExpectedVersion::Kind::kExact);
  EXPECT_EQ(append.expected.version(), 4u);
  ASSERT_EQ(append.events.size(), 2u);
  EXPECT_EQ(append.events[0].type, "A");
  EXPECT_EQ(append.events[0].data, R"({"n":1})");
  EXPECT_EQ(append.events[1].id.to_string(), "123e4567-e89b-12d3-a456-426614174000");
  EXPECT_EQ(append.events[1].metadata, "{}");

  struct Case {
    std::string_view value;
    ExpectedVersion::Kind kind;
    std::uint64_t version;
  };
  const Case cases[] = {
      {R"("any")", ExpectedVersion::Kind::kAny, 0},
      {R"("no_stream")", ExpectedVersion::Kind::kNoStream, 0},
      {R"("stream_exists")", ExpectedVersion::Kind::kStreamExists, 0},
      {"0", ExpectedVersion::Kind::kExact, 0},
      {"18446744073709551615", ExpectedVersion::Kind::kExact, UINT64_MAX},
      {"null", ExpectedVersion::Kind::kAny, 0},
  };
  for (const Case& c : cases) {
    auto batch = command<AppendCommand>(
        "POST", "/v1/streams/s",
        R"({"expected_version":)" + std::string(c.value) + R"(,"events":[{"type":"T","data":1}]})");
    EXPECT_EQ(batch.expected.kind(), c.kind) << c.value;
    EXPECT_EQ(batch.expected.version(), c.version) << c.value;
  }
}

TEST_F(Decode, ExpectedVersionMayComeInTheQuery) {
  const std::string event = R"({"type":"T","data":1})";
  struct Case {
    std::string_view query;
    ExpectedVersion::Kind kind;
    std::uint64_t version;
  };
  const Case cases[] = {
      {"any", ExpectedVersion::Kind::kAny, 0},
      {"no_stream", ExpectedVersion::Kind::kNoStream, 0},
      {"stream_exists", ExpectedVersion::Kind::kStreamExists, 0},
      {"17", ExpectedVersion::Kind::kExact, 17},
      {"007", ExpectedVersion::Kind::kExact, 7},
  };
  for (const Case& c : cases) {
    auto append = command<AppendCommand>(
        "POST", "/v1/streams/s?expected_version=" + std::string(c.query), event);
    EXPECT_EQ(append.expected.kind(), c.kind) << c.query;
    EXPECT_EQ(append.expected.version(), c.version) << c.query;
  }
  auto batch = command<AppendCommand>("POST", "/v1/streams/s?expected_version=no_stream",
                                      R"({"events":[)" + event + "]}");
  EXPECT_EQ(batch.expected.kind(), ExpectedVersion::Kind::kNoStream);

  fails("POST", "/v1/streams/s?expected_version=3", 400, "invalid_argument",
        "given both in the query and in the body",
        R"({"expected_version":3,"events":[)" + event + "]}");
  for (std::string_view bad : {"-1", "-2", "", "+1", "1.0", "1e3", "Any", "no-stream", " 1"}) {
    fails("POST", "/v1/streams/s?expected_version=" + std::string(bad), 400, "invalid_argument",
          "?expected_version", event);
  }
  fails("POST", "/v1/streams/s?expected_version=18446744073709551616", 400, "invalid_argument",
        "out of range", event);
}

TEST_F(Decode, BatchFieldsAreChecked) {
  const std::string event = R"({"type":"T","data":1})";
  append_fails(R"({"events":[]})", 400, "invalid_argument", "events must be an array of 1 to");
  append_fails(R"({"events":{}})", 400, "invalid_argument", "events must be an array");
  append_fails(R"({"events":null})", 400, "invalid_argument", "not null");
  append_fails(R"({"events":[)" + event + R"(,7]})", 400, "invalid_argument",
               "events[1] must be a JSON object, not 7");
  append_fails(R"({"events":[)" + event + R"(,{"type":"T"}]})", 400, "invalid_argument",
               "events[1].data is required");
  append_fails(R"({"events":[{"type":"T","data":1,"x":0}]})", 400, "invalid_argument",
               "unknown field \"x\" in events[0]");
  append_fails(R"({"type":"T","events":[)" + event + "]}", 400, "invalid_argument",
               "unknown field \"type\" in the batch body; it takes expected_version, events");
  for (std::string_view bad : {"-1", "1.0", "1e2", R"("Any")", R"("3")", "true", "[]"}) {
    append_fails(R"({"expected_version":)" + std::string(bad) + R"(,"events":[)" + event + "]}",
                 400, "invalid_argument", "expected_version must be");
  }
  std::string many = R"({"events":[)";
  for (std::size_t i = 0; i <= kMaxEventsPerAppend; ++i) many += (i ? ",0" : "0");
  append_fails(many + "]}", 400, "invalid_argument", "1 to 10000 events");
}

TEST_F(Decode, OneIdTwiceInABatchIsRefused) {
  const std::string id = R"("id":"123e4567-e89b-12d3-a456-426614174000")";
  append_fails(R"({"events":[{"type":"A","data":1},{)" + id + R"(,"type":"B","data":2},{)" + id +
                   R"(,"type":"C","data":3}]})",
               400, "invalid_argument", "events[2].id repeats events[1].id");
}

// ---- JSON ----

TEST_F(Decode, BadJsonSaysWhere) {
  append_fails(R"({"type":)", 400, "bad_json", "at byte 8");
  append_fails(R"({"type":"T","data":1,})", 400, "bad_json", "at byte 21");
  append_fails(R"({"type":"T","data":1} x)", 400, "bad_json", "expected end of input");
  append_fails(R"({"type":'T',"data":1})", 400, "bad_json", "at byte 8");
  append_fails(R"({"type":"T","data":NaN})", 400, "bad_json", "at byte");
  append_fails(R"({"type":"T","data":1e400})", 400, "bad_json", "number overflow");
  append_fails("{\"type\":\"T\",\"data\":\"\xff\"}", 400, "bad_json", "UTF-8");
  append_fails(R"({"type":"T","data":"\ud800"})", 400, "bad_json", "surrogate");
  append_fails("{\"type\":\"T\",\"data\":\"a\nb\"}", 400, "bad_json", "control character");
  append_fails(R"({"type":"T","data":1} // note)", 400, "bad_json", "at byte");
  append_fails("", 400, "bad_json", "the body is empty");
  // nlohmann alone would stop at the NUL and take the rest for the end of the input.
  append_fails(std::string(R"({"type":"T","data":1})") + '\0' + "junk", 400, "bad_json",
               "at byte 21: a NUL byte");
  append_fails("   ", 400, "bad_json", "unexpected end of input");
  // The token nlohmann stopped on is not repeated: it may be the whole body.
  const std::string huge = R"({"type":"T","data":")" + std::string(100000, 'x') + "\xff\"}";
  auto decoded = decode("POST", "/v1/streams/s", huge);
  ASSERT_FALSE(decoded.ok());
  EXPECT_LT(decoded.error().message().size(), 400u) << decoded.error().message();
}

TEST_F(Decode, DuplicateKeysAreRefusedAnywhere) {
  append_fails(R"({"type":"a","type":"b","data":1})", 400, "bad_json",
               "the key \"type\" appears twice in the body");
  append_fails(R"({"type":"T","data":{"x":1,"y":{"k":1,"k":2}}})", 400, "bad_json",
               "the key \"k\" appears twice in data.y");
  append_fails(R"({"events":[{"type":"T","data":1},{"type":"T","data":[{"a":1,"a":1}]}]})", 400,
               "bad_json", "appears twice in events[1].data[0]");
  // Same keys in different objects are fine.
  EXPECT_TRUE(decode("POST", "/v1/streams/s", R"({"type":"T","data":{"a":{"a":{"a":1}}}})").ok());
}

TEST_F(Decode, IntegersOutside64BitsAreRefused) {
  append_fails(R"({"type":"T","data":{"n":18446744073709551616}})", 400, "invalid_argument",
               "the integer \"18446744073709551616\" at data.n is out of range");
  append_fails(R"({"type":"T","data":[-9223372036854775809]})", 400, "invalid_argument",
               "at data[0] is out of range");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "at max is out of range",
        R"({"member":"m","max":99999999999999999999999})");
}

TEST_F(Decode, NestingIsBounded) {
  auto nested = [](std::size_t depth) {  // the body's object is level 1
    return R"({"type":"T","data":)" + std::string(depth - 1, '[') + std::string(depth - 1, ']') +
           "}";
  };
  auto deepest = command<AppendCommand>("POST", "/v1/streams/s", nested(kMaxJsonDepth));
  ASSERT_EQ(deepest.events.size(), 1u);
  EXPECT_EQ(deepest.events[0].data.size(), 2 * (kMaxJsonDepth - 1));
  append_fails(nested(kMaxJsonDepth + 1), 400, "bad_json", "deeper than 64 levels, at data");
  // Far deeper than any stack could recurse: refused at level 65, never built.
  append_fails(R"({"type":"T","data":)" + std::string(1000000, '['), 400, "bad_json",
               "deeper than 64");
  append_fails(std::string(1000000, '{'), 400, "bad_json", "at byte 1");
}

TEST_F(Decode, LargeObjectsDecodeInLinearTime) {
  // 200 000 keys in one object: quadratic key handling would take minutes.
  std::string body = R"({"type":"T","data":{)";
  for (int i = 0; i < 200000; ++i) body += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":0";
  body += "}}";
  auto append = command<AppendCommand>("POST", "/v1/streams/s", body);
  ASSERT_EQ(append.events.size(), 1u);
  EXPECT_TRUE(append.events[0].data.starts_with(R"({"k0":0,"k1":0,)"));
  // The duplicate is found however far apart the two are.
  body.insert(body.size() - 2, ",\"k0\":1");
  append_fails(body, 400, "bad_json", "the key \"k0\" appears twice in data");
}

TEST_F(Decode, JsonBodiesNeedAJsonContentType) {
  const std::string event = R"({"type":"T","data":1})";
  for (std::string_view type :
       {"application/json", "application/json; charset=utf-8", "Application/JSON;Charset=\"UTF-8\"",
        " application/json ", "application/vnd.keel+json", "application/json; boundary=x"}) {
    auto decoded = decode("POST", "/v1/streams/s", event, type);
    EXPECT_TRUE(decoded.ok()) << type << ": " << decoded.error().to_string();
  }
  for (std::string_view type :
       {"", "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "json",
        "application/json; charset=latin1", "text/json"}) {
    fails("POST", "/v1/streams/s", 415, "unsupported_media_type", "Content-Type", event, type);
  }
  fails("POST", "/v1/groups/g/poll", 415, "unsupported_media_type", "", R"({"member":"m"})",
        "text/plain");
  fails("PUT", "/v1/streams/s/metadata", 415, "unsupported_media_type", "", "{}", "");
  fails("PUT", "/v1/groups/g", 415, "unsupported_media_type", "", "{}", "text/plain");
  // Routes without a body do not look at it.
  EXPECT_TRUE(decode("GET", "/v1/streams/s", "junk", "text/plain").ok());
  EXPECT_TRUE(decode("POST", "/v1/groups/g/parked/replay", "junk", "").ok());
}

// ---- Reads ----

TEST_F(Decode, StreamReadsHaveDefaults) {
  auto forwards = command<ReadStreamCommand>("GET", "/v1/streams/s");
  EXPECT_EQ(forwards.from, 0u);
  EXPECT_EQ(forwards.direction, Direction::kForward);
  EXPECT_EQ(forwards.limit, kDefaultReadLimit);
  auto backwards = command<ReadStreamCommand>("GET", "/v1/streams/s?direction=backwards");
  EXPECT_EQ(backwards.from, kEnd);
  EXPECT_EQ(backwards.direction, Direction::kBackward);

  auto page = command<ReadStreamCommand>("GET", "/v1/streams/s?from=42&limit=1000");
  EXPECT_EQ(page.from, 42u);
  EXPECT_EQ(page.limit, 1000u);
  EXPECT_EQ(command<ReadStreamCommand>("GET", "/v1/streams/s?direction=backwards&from=end").from,
            kEnd);
  EXPECT_EQ(command<ReadStreamCommand>("GET", "/v1/streams/s?from=start").from, 0u);
  EXPECT_EQ(command<ReadStreamCommand>("GET", "/v1/streams/s?from=18446744073709551614").from,
            UINT64_MAX - 1);
}

TEST_F(Decode, ReadParametersAreChecked) {
  fails("GET", "/v1/streams/s?from=end", 400, "invalid_argument", "reads nothing forwards");
  fails("GET", "/v1/all?from=end&direction=forwards", 400, "invalid_argument", "forwards");
  fails("GET", "/v1/streams/s?from=-1", 400, "invalid_argument", "?from must be start, end");
  fails("GET", "/v1/streams/s?from=1.5", 400, "invalid_argument", "?from must be a decimal");
  fails("GET", "/v1/streams/s?from=18446744073709551616", 400, "invalid_argument",
        "?from is out of range");
  fails("GET", "/v1/streams/s?from=", 400, "invalid_argument", "?from");
  fails("GET", "/v1/streams/s?direction=sideways", 400, "invalid_argument",
        "?direction must be forwards or backwards, not \"sideways\"");
  fails("GET", "/v1/streams/s?direction=forward", 400, "invalid_argument", "?direction");
  for (std::string_view limit : {"0", "1001", "18446744073709551615"}) {
    fails("GET", "/v1/streams/s?limit=" + std::string(limit), 400, "invalid_argument",
          "?limit must be from 1 to 1000");
  }
  for (std::string_view limit : {"-1", "1.5", "1e2", "ten", "", "%2B5"}) {
    fails("GET", "/v1/streams/s?limit=" + std::string(limit), 400, "invalid_argument",
          "?limit must be a decimal number");
  }
  fails("GET", "/v1/streams/s?limit=99999999999999999999999", 400, "invalid_argument",
        "?limit is out of range");
  fails("GET", "/v1/streams/s?limit=%zz", 400, "invalid_argument", "bad percent escape");
  fails("GET", "/v1/streams/s?li%mit=1", 400, "invalid_argument", "bad percent escape");
}

TEST_F(Decode, AllReadsTakeFilters) {
  auto all = command<ReadAllCommand>("GET", "/v1/all");
  EXPECT_EQ(all.from, 0u);
  EXPECT_EQ(all.limit, kDefaultReadLimit);
  EXPECT_TRUE(all.filter.categories.empty());
  EXPECT_FALSE(all.filter.include_system);

  auto filtered = command<ReadAllCommand>(
      "GET",
      "/v1/all?category=order&category=pay+ment&type=Order%2BPlaced&prefix=order-4&system=true&"
      "from=7&direction=backwards&limit=10");
  EXPECT_EQ(filtered.filter.categories, (std::vector<std::string>{"order", "pay ment"}));
  EXPECT_EQ(filtered.filter.event_types, (std::vector<std::string>{"Order+Placed"}));
  EXPECT_EQ(filtered.filter.stream_prefixes, (std::vector<std::string>{"order-4"}));
  EXPECT_TRUE(filtered.filter.include_system);
  EXPECT_EQ(filtered.from, 7u);
  EXPECT_EQ(filtered.direction, Direction::kBackward);
  EXPECT_EQ(filtered.limit, 10u);

  fails("GET", "/v1/all?category=", 400, "invalid_argument", "?category is empty");
  fails("GET", "/v1/all?type=a%0Ab", 400, "invalid_argument", "control character");
  fails("GET", "/v1/all?prefix=%FF", 400, "invalid_argument", "not UTF-8");
  fails("GET", "/v1/all?system=yes", 400, "invalid_argument", "?system must be true or false");
  fails("GET", "/v1/all?system=true&system=false", 400, "invalid_argument", "given twice");
  fails("GET", "/v1/all?stream=x", 400, "invalid_argument", "unknown query parameter \"stream\"");
  std::string many = "/v1/all?";
  for (std::size_t i = 0; i <= kMaxFilterEntries; ++i) many += "type=t" + std::to_string(i) + "&";
  fails("GET", many, 400, "invalid_argument", "?type is given 101 times; the limit is 100");
}

// ---- Metadata and deletes ----

TEST_F(Decode, MetadataIsSetWhole) {
  auto set = command<SetMetadataCommand>(
      "PUT", "/v1/streams/s/metadata",
      R"({"max_count": 10, "max_age_ms": 60000, "truncate_before": 3})");
  EXPECT_EQ(set.stream, "s");
  EXPECT_EQ(set.metadata.max_count, 10u);
  EXPECT_EQ(set.metadata.max_age, std::chrono::milliseconds(60000));
  EXPECT_EQ(set.metadata.truncate_before, 3u);

  auto cleared =
      command<SetMetadataCommand>("PUT", "/v1/streams/s/metadata", R"({"max_count": null})");
  EXPECT_FALSE(cleared.metadata.max_count);
  EXPECT_FALSE(cleared.metadata.max_age);
  EXPECT_FALSE(cleared.metadata.truncate_before);

  // What GET returns, PUT takes back.
  const std::string encoded = metadata_json(set.metadata);
  EXPECT_EQ(encoded, R"({"max_count":10,"max_age_ms":60000,"truncate_before":3})");
  auto again = command<SetMetadataCommand>("PUT", "/v1/streams/s/metadata", encoded);
  EXPECT_EQ(again.metadata.max_count, set.metadata.max_count);
  EXPECT_EQ(again.metadata.max_age, set.metadata.max_age);
  EXPECT_EQ(again.metadata.truncate_before, set.metadata.truncate_before);
  EXPECT_EQ(metadata_json({}), R"({"max_count":null,"max_age_ms":null,"truncate_before":null})");

  fails("PUT", "/v1/streams/s/metadata", 400, "invalid_argument",
        "max_count must be an integer from 0 to 18446744073709551615, not -1",
        R"({"max_count":-1})");
  fails("PUT", "/v1/streams/s/metadata", 400, "invalid_argument", "not 2.5",
        R"({"truncate_before":2.5})");
  fails("PUT", "/v1/streams/s/metadata", 400, "invalid_argument", "not \"10\"",
        R"({"max_count":"10"})");
  fails("PUT", "/v1/streams/s/metadata", 400, "invalid_argument", "max_age_ms must be",
        R"({"max_age_ms":18446744073709551615})");
  fails("PUT", "/v1/streams/s/metadata", 400, "invalid_argument",
        "unknown field \"max_age\" in the metadata", R"({"max_age":5})");
  fails("PUT", "/v1/streams/s/metadata", 400, "bad_json", "", "");
}

TEST_F(Decode, DeletesAreSoftUnlessHard) {
  auto soft = command<DeleteStreamCommand>("DELETE", "/v1/streams/s");
  EXPECT_EQ(soft.stream, "s");
  EXPECT_FALSE(soft.hard);
  EXPECT_EQ(soft.expected.kind(), ExpectedVersion::Kind::kAny);
  auto hard = command<DeleteStreamCommand>("DELETE", "/v1/streams/s?hard=true&expected_version=9");
  EXPECT_TRUE(hard.hard);
  EXPECT_EQ(hard.expected.kind(), ExpectedVersion::Kind::kExact);
  EXPECT_EQ(hard.expected.version(), 9u);
  EXPECT_FALSE(command<DeleteStreamCommand>("DELETE", "/v1/streams/s?hard=false").hard);
  fails("DELETE", "/v1/streams/s?hard=1", 400, "invalid_argument", "?hard must be true or false");
  fails("DELETE", "/v1/streams/s?expected_version=x", 400, "invalid_argument",
        "?expected_version must be any");
}

// ---- Subscriptions ----

TEST_F(Decode, SubscriptionsStartWhereAsked) {
  auto start = command<SubscribeStreamCommand>("GET", "/v1/streams/s/subscribe");
  EXPECT_EQ(start.from.kind, pubsub::StartFrom::Kind::kStart);
  EXPECT_FALSE(start.resumed);
  EXPECT_EQ(command<SubscribeStreamCommand>("GET", "/v1/streams/s/subscribe?from=end").from.kind,
            pubsub::StartFrom::Kind::kEnd);
  auto at = command<SubscribeStreamCommand>("GET", "/v1/streams/s/subscribe?from=5");
  EXPECT_EQ(at.from.kind, pubsub::StartFrom::Kind::kPosition);
  EXPECT_EQ(at.from.position, 5u);

  auto all = command<SubscribeAllCommand>("GET", "/v1/all/subscribe?from=end&category=order");
  EXPECT_EQ(all.from.kind, pubsub::StartFrom::Kind::kEnd);
  EXPECT_EQ(all.filter.categories, (std::vector<std::string>{"order"}));

  fails("GET", "/v1/streams/s/subscribe?from=later", 400, "invalid_argument",
        "?from must be start, end or a number");
  fails("GET", "/v1/streams/s/subscribe?category=x", 400, "invalid_argument",
        "unknown query parameter \"category\"");
  fails("GET", "/v1/all/subscribe?limit=5", 400, "invalid_argument", "\"limit\"");
}

TEST_F(Decode, LastEventIdResumesAfterItAndWinsOverFrom) {
  auto resumed = command<SubscribeAllCommand>("GET", "/v1/all/subscribe?from=end", "", kJson, "41");
  EXPECT_EQ(resumed.from.kind, pubsub::StartFrom::Kind::kPosition);
  EXPECT_EQ(resumed.from.position, 42u);
  EXPECT_TRUE(resumed.resumed);
  auto stream = command<SubscribeStreamCommand>("GET", "/v1/streams/s/subscribe", "", kJson, "0");
  EXPECT_EQ(stream.from.position, 1u);
  EXPECT_TRUE(stream.resumed);

  fails("GET", "/v1/all/subscribe", 400, "invalid_argument", "the Last-Event-ID header", "", kJson,
        "abc");
  fails("GET", "/v1/all/subscribe", 400, "invalid_argument", "Last-Event-ID", "", kJson, "-1");
  fails("GET", "/v1/streams/s/subscribe", 400, "invalid_argument", "nothing follows", "", kJson,
        "18446744073709551615");
  fails("GET", "/v1/streams/s/subscribe", 400, "invalid_argument", "out of range", "", kJson,
        "18446744073709551616");
}

// ---- Consumer groups ----

TEST_F(Decode, GroupsWithoutABodyTakeTheDefaults) {
  auto created = command<CreateGroupCommand>("PUT", "/v1/groups/billing", "", "");
  const pubsub::GroupOptions defaults;
  EXPECT_EQ(created.options.name, "billing");
  EXPECT_TRUE(created.options.filter.categories.empty());
  EXPECT_EQ(created.options.strategy, defaults.strategy);
  EXPECT_EQ(created.options.start.kind, pubsub::StartFrom::Kind::kStart);
  EXPECT_EQ(created.options.max_in_flight, defaults.max_in_flight);
  EXPECT_EQ(created.options.ack_timeout, defaults.ack_timeout);
  auto empty = command<CreateGroupCommand>("PUT", "/v1/groups/billing", "{}");
  EXPECT_EQ(empty.options.max_deliveries, defaults.max_deliveries);
}

TEST_F(Decode, GroupSettingsMapToGroupOptions) {
  auto created = command<CreateGroupCommand>("PUT", "/v1/groups/shipping", R"({
    "categories": ["order", "payment"], "event_types": ["OrderPlaced"],
    "stream_prefixes": ["order-4"], "strategy": "pinned", "start": 1200,
    "max_in_flight": 4, "ack_timeout_ms": 5000, "max_deliveries": 3, "retry_backoff_ms": 0,
    "max_retry_backoff_ms": 2000, "buffer_events": 500, "checkpoint_after_acks": 50,
    "checkpoint_interval_ms": 250})");
  const pubsub::GroupOptions& o = created.options;
  EXPECT_EQ(o.name, "shipping");
  EXPECT_EQ(o.filter.categories, (std::vector<std::string>{"order", "payment"}));
  EXPECT_EQ(o.filter.event_types, (std::vector<std::string>{"OrderPlaced"}));
  EXPECT_EQ(o.filter.stream_prefixes, (std::vector<std::string>{"order-4"}));
  EXPECT_EQ(o.strategy, pubsub::Strategy::kPinned);
  EXPECT_EQ(o.start.kind, pubsub::StartFrom::Kind::kPosition);
  EXPECT_EQ(o.start.position, 1200u);
  EXPECT_EQ(o.max_in_flight, 4u);
  EXPECT_EQ(o.ack_timeout, std::chrono::milliseconds(5000));
  EXPECT_EQ(o.max_deliveries, 3u);
  EXPECT_EQ(o.retry_backoff, Duration::zero());
  EXPECT_EQ(o.max_retry_backoff, std::chrono::milliseconds(2000));
  EXPECT_EQ(o.buffer_events, 500u);
  EXPECT_EQ(o.checkpoint_after_acks, 50u);
  EXPECT_EQ(o.checkpoint_interval, std::chrono::milliseconds(250));

  // GET gives the same fields back, and PUT takes them.
  pubsub::GroupStats stats;
  stats.lag = 7;
  stats.members.push_back({.name = "w1", .in_flight = 2, .acked = 5});
  Json got = Json::parse(group_json(o, stats));
  EXPECT_EQ(got["name"], "shipping");
  EXPECT_EQ(got["stats"]["lag"], 7);
  EXPECT_EQ(got["members"][0]["name"], "w1");
  EXPECT_EQ(got["members"][0]["in_flight"], 2);
  got.erase("name");
  got.erase("stats");
  got.erase("members");
  auto again = command<CreateGroupCommand>("PUT", "/v1/groups/shipping", got.dump());
  EXPECT_EQ(group_json(again.options, stats), group_json(o, stats));

  EXPECT_EQ(
      command<CreateGroupCommand>("PUT", "/v1/groups/g", R"({"start":"end"})").options.start.kind,
      pubsub::StartFrom::Kind::kEnd);
  EXPECT_EQ(
      command<CreateGroupCommand>("PUT", "/v1/groups/g", R"({"strategy":"dispatch_to_single"})")
          .options.strategy,
      pubsub::Strategy::kDispatchToSingle);
}

TEST_F(Decode, GroupSettingsAreChecked) {
  struct Case {
    std::string_view body, words;
  };
  const Case cases[] = {
      {R"({"stream":"order-1"})", "a group reads $all through a filter"},
      {R"({"strategy":"single"})",
       "strategy must be \"round_robin\", \"pinned\" or \"dispatch_to_single\""},
      {R"({"strategy":1})", "strategy must be"},
      {R"({"start":"middle"})", "start must be \"start\", \"end\" or a position"},
      {R"({"start":-1})", "start must be"},
      {R"({"max_in_flight":0})", "max_in_flight must be an integer from 1 to 10000, not 0"},
      {R"({"max_in_flight":10001})", "max_in_flight must be"},
      {R"({"max_in_flight":1.0})", "not 1.0"},
      {R"({"max_deliveries":0})", "max_deliveries must be an integer from 1 to 1000"},
      {R"({"buffer_events":100001})", "buffer_events must be an integer from 1 to 100000"},
      {R"({"checkpoint_after_acks":0})", "checkpoint_after_acks must be"},
      {R"({"ack_timeout_ms":0})", "ack_timeout_ms must be an integer from 1 to 86400000"},
      {R"({"ack_timeout_ms":86400001})", "ack_timeout_ms must be"},
      {R"({"retry_backoff_ms":-5})", "retry_backoff_ms must be an integer from 0"},
      {R"({"checkpoint_interval_ms":"1s"})", "checkpoint_interval_ms must be"},
      {R"({"categories":"order"})", "categories must be an array of strings"},
      {R"({"categories":[""]})", "categories[0] is empty"},
      {R"({"event_types":["a",3]})", "event_types[1] must be a string, not 3"},
      {R"({"stream_prefixes":["a\u0000"]})", "stream_prefixes[0]"},
      {R"({"max_retries":3})", "unknown field \"max_retries\" in the group"},
  };
  for (const Case& c : cases) {
    fails("PUT", "/v1/groups/g", 400, "invalid_argument", c.words, c.body);
  }
  std::string many = R"({"categories":[)";
  for (std::size_t i = 0; i <= kMaxFilterEntries; ++i) many += (i ? ",\"c\"" : "\"c\"");
  fails("PUT", "/v1/groups/g", 400, "invalid_argument", "101 entries; the limit is 100",
        many + "]}");
  fails("PUT", "/v1/groups/g?x=1", 400, "invalid_argument", "unknown query parameter");
}

TEST_F(Decode, MembersPoll) {
  auto poll = command<PollCommand>("POST", "/v1/groups/g/poll", R"({"member":"w-1"})");
  EXPECT_EQ(poll.group, "g");
  EXPECT_EQ(poll.member, "w-1");
  EXPECT_EQ(poll.max, kDefaultPollMax);
  EXPECT_EQ(poll.wait, Duration::zero());
  auto waiting = command<PollCommand>("POST", "/v1/groups/g/poll",
                                      R"({"member":"w-1","max":1000,"wait_ms":60000})");
  EXPECT_EQ(waiting.max, 1000u);
  EXPECT_EQ(waiting.wait, std::chrono::milliseconds(60000));

  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "member is required", "{}");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "member must be a string",
        R"({"member":1})");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "the member name \"w 1\"",
        R"({"member":"w 1"})");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument",
        "max must be an integer from 1 to 1000", R"({"member":"m","max":0})");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "not -3",
        R"({"member":"m","max":-3})");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument",
        "wait_ms must be an integer from 0 to 60000, not 60001",
        R"({"member":"m","wait_ms":60001})");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "not 0.5",
        R"({"member":"m","wait_ms":0.5})");
  fails("POST", "/v1/groups/g/poll", 400, "invalid_argument", "unknown field \"timeout\"",
        R"({"member":"m","timeout":5})");
  fails("POST", "/v1/groups/g/poll", 400, "bad_json", "the body is empty", "");
}

TEST_F(Decode, MembersAckAndNack) {
  auto ack = command<AckCommand>("POST", "/v1/groups/g/ack",
                                 R"({"member":"m","ids":[1,2,18446744073709551615]})");
  EXPECT_EQ(ack.group, "g");
  EXPECT_EQ(ack.member, "m");
  EXPECT_EQ(ack.ids, (std::vector<std::uint64_t>{1, 2, UINT64_MAX}));

  auto nack = command<NackCommand>("POST", "/v1/groups/g/nack",
                                   R"({"member":"m","ids":[3],"action":"park","reason":"bad"})");
  EXPECT_EQ(nack.ids, (std::vector<std::uint64_t>{3}));
  EXPECT_EQ(nack.action, pubsub::NackAction::kPark);
  EXPECT_EQ(nack.reason, "bad");
  EXPECT_EQ(command<NackCommand>("POST", "/v1/groups/g/nack",
                                 R"({"member":"m","ids":[3],"action":"retry"})")
                .action,
            pubsub::NackAction::kRetry);
  EXPECT_EQ(command<NackCommand>("POST", "/v1/groups/g/nack",
                                 R"({"member":"m","ids":[3],"action":"skip"})")
                .action,
            pubsub::NackAction::kSkip);

  struct Case {
    std::string_view target, body, words;
  };
  const Case cases[] = {
      {"/v1/groups/g/ack", R"({"member":"m"})", "ids is required"},
      {"/v1/groups/g/ack", R"({"member":"m","ids":[]})", "ids must be an array of 1 to 1000"},
      {"/v1/groups/g/ack", R"({"member":"m","ids":3})", "ids must be an array"},
      {"/v1/groups/g/ack", R"({"member":"m","ids":[1,-2]})", "ids[1] must be a delivery id"},
      {"/v1/groups/g/ack", R"({"member":"m","ids":[1.5]})", "not 1.5"},
      {"/v1/groups/g/ack", R"({"member":"m","ids":["1"]})", "not \"1\""},
      {"/v1/groups/g/ack", R"({"ids":[1]})", "member is required"},
      {"/v1/groups/g/ack", R"({"member":"m","ids":[1],"action":"skip"})",
       "unknown field \"action\" in the ack"},
      {"/v1/groups/g/nack", R"({"member":"m","ids":[1]})", "action is required"},
      {"/v1/groups/g/nack", R"({"member":"m","ids":[1],"action":"drop"})",
       "action must be \"retry\", \"park\" or \"skip\", not \"drop\""},
      {"/v1/groups/g/nack", R"({"member":"m","ids":[1],"action":"park","reason":5})",
       "reason must be a string"},
  };
  for (const Case& c : cases) fails("POST", c.target, 400, "invalid_argument", c.words, c.body);
  std::string ids;
  for (std::size_t i = 0; i <= kMaxSettleIds; ++i) ids += (i ? ",1" : "1");
  fails("POST", "/v1/groups/g/ack", 400, "invalid_argument", "1 to 1000 delivery ids",
        R"({"member":"m","ids":[)" + ids + "]}");
  fails("POST", "/v1/groups/g/nack", 400, "invalid_argument", "reason is 1025 bytes",
        R"({"member":"m","ids":[1],"action":"park","reason":")" + std::string(1025, 'r') + "\"}");
}

TEST_F(Decode, ParkedEventsArePaged) {
  auto parked = command<ListParkedCommand>("GET", "/v1/groups/g/parked");
  EXPECT_EQ(parked.group, "g");
  EXPECT_EQ(parked.from, 0u);
  EXPECT_EQ(parked.limit, kDefaultReadLimit);
  auto page = command<ListParkedCommand>("GET", "/v1/groups/g/parked?from=10&limit=5");
  EXPECT_EQ(page.from, 10u);
  EXPECT_EQ(page.limit, 5u);
  fails("GET", "/v1/groups/g/parked?limit=0", 400, "invalid_argument", "?limit");
  fails("GET", "/v1/groups/g/parked?from=end", 400, "invalid_argument", "?from");
  EXPECT_EQ(command<ReplayParkedCommand>("POST", "/v1/groups/g/parked/replay").group, "g");
}

TEST_F(Decode, ProjectionsReportTheirProgress) {
  auto full = command<ReportProjectionCommand>(
      "PUT", "/v1/projections/orders.v2",
      R"({"position":1200,"applied":900,"skipped":2,"parked":1,"live":true,"paused":false,)"
      R"("error":"apply failed at 1201","state":{ "placed" : {"orders": 3} },"interval_ms":500})");
  const ProjectionReport& r = full.report;
  EXPECT_EQ(r.name, "orders.v2");
  EXPECT_EQ(r.position, 1200u);
  EXPECT_EQ(r.applied, 900u);
  EXPECT_EQ(r.skipped, 2u);
  EXPECT_EQ(r.parked, 1u);
  EXPECT_TRUE(r.live);
  EXPECT_FALSE(r.paused);
  EXPECT_EQ(r.error, "apply failed at 1201");
  EXPECT_EQ(r.state, R"({"placed":{"orders":3}})");  // compact
  EXPECT_EQ(r.interval, 500ms);

  auto least = command<ReportProjectionCommand>("PUT", "/v1/projections/p",
                                                R"({"position":0,)"
                                                R"("error":null,"state":null})");
  EXPECT_EQ(least.report.position, 0u);
  EXPECT_TRUE(least.report.error.empty());
  EXPECT_TRUE(least.report.state.empty());
  EXPECT_EQ(least.report.interval, Duration::zero());

  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "position is required", "{}");
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "position", R"({"position":-1})");
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "live must be true or false",
        R"({"position":1,"live":1})");
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "state must be a JSON object",
        R"({"position":1,"state":"x"})");
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "unknown field",
        R"({"position":1,"checkpoint":1})");
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "interval_ms",
        R"({"position":1,"interval_ms":0})");
  const std::string big = R"({"position":1,"state":{"x":")" + std::string(5000, 'a') + "\"}}";
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "the limit is 4096", big);
  const std::string long_error =
      R"({"position":1,"error":")" + std::string(kMaxProjectionErrorBytes + 1, 'e') + "\"}";
  fails("PUT", "/v1/projections/p", 400, "invalid_argument", "error is", long_error);
  fails("PUT", "/v1/projections/p", 400, "bad_json", "", "{");
  fails("PUT", "/v1/projections/p", 415, "unsupported_media_type", "", R"({"position":1})",
        "text/plain");
  fails("PUT", "/v1/projections/a%20b", 400, "invalid_argument", "the projection name");
  fails("GET", "/v1/projections/p?x=1", 400, "invalid_argument", "x");
  fails("POST", "/v1/projections/p", 405, "method_not_allowed", "GET, PUT, DELETE");
  fails("GET", "/v1/projections/p/q", 404, "not_found");
}

TEST_F(Decode, NothingThrowsOnOddInput) {
  // A sample of hostile shapes; the fuzz target does the rest.
  const std::string_view bodies[] = {"{\"type\":\"T\",\"data\":\"\\u0000\"}",
                                     "{\"\":1}",
                                     "{\"type\":\"T\",\"data\":{\"\":{}}}",
                                     "[[[[[[[[[[",
                                     "\"\\uDFFF\"",
                                     "{\"events\":[[]]}",
                                     "\x00",
                                     "{\"type\":\"\\u0085\",\"data\":1}"};
  for (std::string_view body : bodies) {
    for (std::string_view target :
         {"/v1/streams/s", "/v1/groups/g", "/v1/groups/g/poll", "/v1/groups/g/ack",
          "/v1/groups/g/nack", "/v1/streams/s/metadata"}) {
      for (std::string_view method : {"POST", "PUT"}) {
        auto decoded = decode(method, target, body);
        if (!decoded.ok()) {
          EXPECT_NE(api_error(decoded.error()).code, "internal")
              << method << " " << target << " " << body << ": " << decoded.error().message();
        }
      }
    }
  }
}

// ---- Errors ----

TEST(ApiError, LibraryErrorsMapToStatuses) {
  auto mapped = [](const Error& error) { return api_error(error); };
  Error conflict(eventlog::errc::wrong_expected_version, "order-1 is at version 4, not 3");
  conflict.with_detail(4);
  ApiError e = mapped(conflict);
  EXPECT_EQ(e.status, 409);
  EXPECT_EQ(e.code, "wrong_expected_version");
  EXPECT_EQ(e.actual_version, 4);
  EXPECT_EQ(error_json(e),
            R"({"error":"wrong_expected_version","message":"order-1 is at version 4, not 3",)"
            R"("actual_version":4})");
  Error none(eventlog::errc::wrong_expected_version, "no stream");
  none.with_detail(-1);
  EXPECT_EQ(mapped(none).actual_version, -1);

  struct Case {
    std::error_code code;
    int status;
    std::string_view name;
  };
  const Case cases[] = {
      {eventlog::errc::duplicate_event_id, 409, "duplicate_event_id"},
      {eventlog::errc::stream_deleted, 410, "stream_deleted"},
      {eventlog::errc::invalid_argument, 400, "invalid_argument"},
      {eventlog::errc::disk_full, 507, "disk_full"},
      {eventlog::errc::io_error, 503, "unavailable"},
      {eventlog::errc::closed, 503, "unavailable"},
      {eventlog::errc::corrupt, 500, "corrupt"},
      {keel::errc::invalid_argument, 400, "invalid_argument"},
      {keel::errc::io_error, 500, "internal"},
      {errc::bad_json, 400, "bad_json"},
      {errc::invalid_stream_name, 400, "invalid_stream_name"},
      {errc::system_stream, 403, "system_stream"},
      {errc::not_found, 404, "not_found"},
      {errc::conflict, 409, "conflict"},
      {errc::payload_too_large, 413, "payload_too_large"},
      {errc::unsupported_media_type, 415, "unsupported_media_type"},
      {errc::unavailable, 503, "unavailable"},
      {errc::internal, 500, "internal"},
  };
  for (const Case& c : cases) {
    ApiError error = mapped(Error(c.code, "why"));
    EXPECT_EQ(error.status, c.status) << c.name;
    EXPECT_EQ(error.code, c.name);
    EXPECT_EQ(error.message, "why");
    EXPECT_FALSE(error.actual_version);
  }
}

TEST(ApiError, BodiesAreJsonWhateverTheMessage) {
  ApiError error{.status = 400, .code = "invalid_argument", .message = "a \"b\"\n\x01\xff\\ c"};
  const std::string body = error_json(error);
  EXPECT_EQ(body,
            "{\"error\":\"invalid_argument\",\"message\":\"a \\\"b\\\"\\n\\u0001\xef\xbf\xbd"
            "\\\\ c\"}");
  EXPECT_EQ(Json::parse(body)["message"], "a \"b\"\n\x01\xef\xbf\xbd\\ c");

  const ApiError too_large = payload_too_large(1 << 20);
  EXPECT_EQ(too_large.status, 413);
  EXPECT_EQ(too_large.code, "payload_too_large");
  EXPECT_EQ(
      error_json(too_large),
      R"({"error":"payload_too_large","message":"the body is over the limit of 1048576 bytes"})");
  EXPECT_EQ(allow_header(kMethodGet | kMethodPut | kMethodDelete), "GET, PUT, DELETE");
  EXPECT_EQ(code_string(errc::method_not_allowed), "method_not_allowed");
  EXPECT_EQ(http_status(errc::method_not_allowed), 405);
}

// ---- Encoders ----

RecordedEvent sample_event() {
  RecordedEvent event;
  event.id = *Uuid::parse("123e4567-e89b-12d3-a456-426614174000");
  event.stream = "order-42";
  event.type = "OrderPlaced";
  event.data = R"({"total":4200})";
  event.metadata = R"({"by":"web"})";
  event.version = 3;
  event.position = 1017;
  event.timestamp_ns = 1700000000123456789;
  return event;
}

TEST(Encode, EventsAreJson) {
  EXPECT_EQ(event_json(sample_event()),
            R"({"id":"123e4567-e89b-12d3-a456-426614174000","stream":"order-42",)"
            R"("type":"OrderPlaced","version":3,"position":1017,)"
            R"("timestamp":"2023-11-14T22:13:20.123456789Z","data_format":"json",)"
            R"("data":{"total":4200},"metadata":{"by":"web"}})");
}

TEST(Encode, TimestampsAreRfc3339InUtc) {
  auto timestamp = [](std::int64_t ns) {
    RecordedEvent event = sample_event();
    event.timestamp_ns = ns;
    return Json::parse(event_json(event))["timestamp"].get<std::string>();
  };
  EXPECT_EQ(timestamp(0), "1970-01-01T00:00:00.000000000Z");
  EXPECT_EQ(timestamp(1), "1970-01-01T00:00:00.000000001Z");
  EXPECT_EQ(timestamp(-1), "1969-12-31T23:59:59.999999999Z");
  EXPECT_EQ(timestamp(951782400000000000), "2000-02-29T00:00:00.000000000Z");
  EXPECT_EQ(timestamp(INT64_MAX), "2262-04-11T23:47:16.854775807Z");
  EXPECT_EQ(timestamp(INT64_MIN), "1677-09-21T00:12:43.145224192Z");
}

TEST(Encode, DataThatIsNotJsonIsTextOrBase64) {
  struct Case {
    std::string_view data, format, json;
  };
  const Case cases[] = {
      {R"( [1, 2] )", "json", R"( [1, 2] )"},
      {R"("s")", "json", R"("s")"},
      {"", "text", R"("")"},
      {"plain text", "text", R"("plain text")"},
      {"{\"a\":1", "text", R"("{\"a\":1")"},
      {"caf\xc3\xa9 \x01", "text", "\"caf\xc3\xa9 \\u0001\""},
      {std::string_view("\xff\x00\x01", 3), "base64", R"("/wAB")"},
      {std::string_view("5\0x", 3), "text", R"("5\u0000x")"},  // JSON up to the NUL only
      {"\xc3", "base64", R"("ww==")"},
      {"ab\xc3", "base64", R"("YWLD")"},
      {"a\xc3", "base64", R"("YcM=")"},
  };
  for (const Case& c : cases) {
    RecordedEvent event = sample_event();
    event.data = std::string(c.data);
    const std::string json = event_json(event);
    EXPECT_NE(json.find("\"data_format\":\"" + std::string(c.format) +
                        "\",\"data\":" + std::string(c.json) + ","),
              std::string::npos)
        << json;
    EXPECT_TRUE(Json::accept(json)) << json;
  }
  RecordedEvent event = sample_event();
  event.metadata = "";
  EXPECT_TRUE(event_json(event).ends_with(R"("metadata":null})"));
  event.metadata = "not json";
  EXPECT_TRUE(event_json(event).ends_with(R"("metadata":"not json"})"));
  event.stream = "bad\xff\n";  // an embedded user's stream name need not be UTF-8
  EXPECT_TRUE(Json::accept(event_json(event)));
}

TEST(Encode, AppendedEventsComeBackAsSent) {
  Random random(3);
  const std::string body =
      R"({"type":"T","data":{"z":[1,{"y":"\u00e9"}],"a":null,"n":-5},"metadata":{"k":"v"}})";
  auto decoded = decode_request(
      {.method = "POST", .target = "/v1/streams/s", .body = body, .content_type = kJson},
      [&] { return Uuid::random_v4(random); });
  ASSERT_TRUE(decoded.ok()) << decoded.error().to_string();
  const EventData& data = std::get<AppendCommand>(*decoded).events[0];
  const RecordedEvent recorded = eventlog::recorded(data, "s", 0, 0, 0);
  const auto sent = nlohmann::ordered_json::parse(body);
  const auto got = nlohmann::ordered_json::parse(event_json(recorded));
  EXPECT_EQ(got["data"], sent["data"]);
  EXPECT_EQ(got["data"].dump(), sent["data"].dump());  // key order too
  EXPECT_EQ(got["metadata"], sent["metadata"]);
  EXPECT_EQ(got["type"], "T");
  EXPECT_EQ(got["id"], data.id.to_string());
}

TEST(Encode, ReadPagesCarryTheirContinuation) {
  const std::vector<RecordedEvent> events{sample_event(), sample_event()};
  const Json page = Json::parse(read_page_json(events, 1019));
  EXPECT_EQ(page["events"].size(), 2u);
  EXPECT_EQ(page["next"], Json({{"from", 1019}}));
  EXPECT_EQ(read_page_json({}, std::nullopt), R"({"events":[],"next":null})");
  std::string out = "prefix";
  append_read_page_json(out, {}, 5);
  EXPECT_EQ(out, R"(prefix{"events":[],"next":{"from":5}})");
}

TEST(Encode, NextFromFollowsTheDirection) {
  std::vector<RecordedEvent> page(3, sample_event());
  page[2].version = 9;
  page[2].position = 100;
  EXPECT_EQ(next_from(page, 3, Direction::kForward, Cursor::kVersion), 10u);
  EXPECT_EQ(next_from(page, 3, Direction::kForward, Cursor::kPosition), 101u);
  EXPECT_EQ(next_from(page, 3, Direction::kBackward, Cursor::kVersion), 8u);
  EXPECT_EQ(next_from(page, 4, Direction::kForward, Cursor::kVersion), std::nullopt);  // short
  EXPECT_EQ(next_from({}, 1, Direction::kForward, Cursor::kVersion), std::nullopt);
  page[2].version = 0;
  EXPECT_EQ(next_from(page, 3, Direction::kBackward, Cursor::kVersion), std::nullopt);
  page[2].position = UINT64_MAX;
  EXPECT_EQ(next_from(page, 3, Direction::kForward, Cursor::kPosition), std::nullopt);
}

// What an EventSource makes of a frame (the SSE spec's parsing, enough of it for these tests).
struct SseEvent {
  std::string id, event, data;
};
std::vector<SseEvent> parse_sse(std::string_view stream, std::string& last_id) {
  std::vector<SseEvent> out;
  SseEvent current;
  bool has_data = false;
  while (!stream.empty()) {
    std::size_t end = stream.find_first_of("\r\n");
    const std::string_view line = stream.substr(0, end);
    stream.remove_prefix(end == std::string_view::npos ? stream.size() : end);
    if (stream.starts_with("\r\n")) {
      stream.remove_prefix(2);
    } else if (!stream.empty()) {
      stream.remove_prefix(1);
    }
    if (line.empty()) {
      last_id = current.id;
      if (has_data) out.push_back(current);
      current.event.clear();
      current.data.clear();
      has_data = false;
      continue;
    }
    if (line.starts_with(':')) continue;
    const std::size_t colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (value.starts_with(' ')) value.remove_prefix(1);
    if (field == "id") current.id = value;
    if (field == "event") current.event = value;
    if (field == "data") {
      if (has_data) current.data += '\n';
      current.data += value;
      has_data = true;
    }
  }
  return out;
}

TEST(Encode, SseFramesCarryTheEvent) {
  std::string out;
  append_sse_event(out, sample_event(), Cursor::kPosition);
  EXPECT_EQ(out, "id: 1017\nevent: OrderPlaced\ndata: " + event_json(sample_event()) + "\n\n");
  out.clear();
  append_sse_event(out, sample_event(), Cursor::kVersion);
  EXPECT_TRUE(out.starts_with("id: 3\n"));

  // Stored data with line ends: split into data lines, and the client joins them back.
  RecordedEvent multiline = sample_event();
  multiline.data = "{\n\"a\":\r\n1\r}";
  multiline.type = "Bad\r\nType";
  out.clear();
  append_sse_event(out, multiline, Cursor::kPosition);
  append_sse_comment(out, "keep-alive\nx");
  append_sse_checkpoint(out, 2000);
  append_sse_checkpoint(out, 0);  // nothing
  EXPECT_NE(out.find("event: Bad  Type\n"), std::string::npos) << out;
  EXPECT_NE(out.find(": keep-alive x\n\n"), std::string::npos) << out;
  EXPECT_TRUE(out.ends_with("id: 1999\n\n")) << out;
  std::string last_id;
  const auto events = parse_sse(out, last_id);
  ASSERT_EQ(events.size(), 1u) << out;
  EXPECT_EQ(events[0].id, "1017");
  EXPECT_EQ(events[0].event, "Bad  Type");
  const Json parsed = Json::parse(events[0].data);
  EXPECT_EQ(parsed["data"], Json::parse("{\"a\":1}"));
  EXPECT_EQ(parsed["type"], "Bad\r\nType");
  EXPECT_EQ(last_id, "1999");  // the checkpoint moved the id on without an event
}

TEST(Encode, ResultsOfTheOtherRoutes) {
  EXPECT_EQ(append_result_json({.first_version = 0,
                                .last_version = 1,
                                .first_position = 10,
                                .last_position = 11,
                                .duplicate = true}),
            R"({"first_version":0,"last_version":1,"first_position":10,"last_position":11,)"
            R"("duplicate":true})");
  EXPECT_EQ(replay_json(12), R"({"replayed":12})");

  pubsub::Delivery delivery{.id = 5, .event = sample_event(), .attempt = 2, .replayed = true};
  const Json deliveries = Json::parse(deliveries_json(std::span(&delivery, 1)));
  EXPECT_EQ(deliveries["deliveries"][0]["id"], 5);
  EXPECT_EQ(deliveries["deliveries"][0]["attempt"], 2);
  EXPECT_EQ(deliveries["deliveries"][0]["replayed"], true);
  EXPECT_EQ(deliveries["deliveries"][0]["event"]["position"], 1017);
  EXPECT_EQ(deliveries_json({}), R"({"deliveries":[]})");

  const std::vector<Settled> settled{
      {.id = 1, .status = {}},
      {.id = 2, .status = Error(keel::errc::invalid_argument, "delivery 2 is not yours")},
      {.id = 3, .status = {}}};
  EXPECT_EQ(settle_json(settled),
            R"({"settled":[1,3],"failed":[{"id":2,"error":"invalid_argument",)"
            R"("message":"delivery 2 is not yours"}]})");

  pubsub::GroupOptions options{.name = "g", .start = pubsub::StartFrom::end()};
  const std::vector<GroupSummary> groups{{options, {}}};
  const Json list = Json::parse(group_list_json(groups));
  EXPECT_EQ(list["groups"][0]["name"], "g");
  EXPECT_EQ(list["groups"][0]["start"], "end");
  EXPECT_EQ(list["groups"][0]["strategy"], "round_robin");
  EXPECT_EQ(list["groups"][0]["ack_timeout_ms"], 30000);
  EXPECT_EQ(list["groups"][0]["members"], Json::array());
  EXPECT_EQ(group_list_json({}), R"({"groups":[]})");
}

TEST(Encode, ProjectionsCarryTheirLagAndAge) {
  ProjectionView view{.report = {.name = "orders",
                                 .position = 90,
                                 .applied = 80,
                                 .skipped = 1,
                                 .live = true,
                                 .state = R"({"placed":3})",
                                 .interval = 1s},
                      .reported_at_ms = 1700000000000,
                      .age = 2500ms};
  const Json one = Json::parse(projection_json(view, 100));
  EXPECT_EQ(one["name"], "orders");
  EXPECT_EQ(one["position"], 90);
  EXPECT_EQ(one["head"], 100);
  EXPECT_EQ(one["lag"], 10);
  EXPECT_EQ(one["applied"], 80);
  EXPECT_EQ(one["skipped"], 1);
  EXPECT_EQ(one["parked"], 0);
  EXPECT_EQ(one["live"], true);
  EXPECT_EQ(one["paused"], false);
  EXPECT_EQ(one["error"], nullptr);
  EXPECT_EQ(one["state"], Json::parse(R"({"placed":3})"));
  EXPECT_EQ(one["interval_ms"], 1000);
  EXPECT_EQ(one["reported_at"], 1700000000000);
  EXPECT_EQ(one["age_ms"], 2500);
  EXPECT_EQ(one["stale"], false);

  // Stale after three intervals without a report, or 30 s when the interval is not known; a
  // projection ahead of this node's head (another node's) has no lag.
  view.age = 3001ms;
  view.report.error = "stopped \"here\"";
  view.report.state.clear();
  const Json late = Json::parse(projection_json(view, 50));
  EXPECT_EQ(late["stale"], true);
  EXPECT_EQ(late["lag"], 0);
  EXPECT_EQ(late["error"], "stopped \"here\"");
  EXPECT_EQ(late["state"], nullptr);
  view.report.interval = Duration::zero();
  EXPECT_FALSE(projection_stale(view));
  view.age = 31s;
  EXPECT_TRUE(projection_stale(view));

  EXPECT_EQ(projection_list_json({}, 7), R"({"projections":[]})");
  const std::vector<ProjectionView> views{view, view};
  EXPECT_EQ(Json::parse(projection_list_json(views, 7))["projections"].size(), 2u);
}

}  // namespace
}  // namespace keel::node

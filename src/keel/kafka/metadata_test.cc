#include "keel/kafka/metadata.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace keel::kafka {
namespace {

TEST(Metadata, EveryRecordShapeRoundTrips) {
  const std::string binary("\xff\x00\x01", 3);
  const Header headers[] = {{"plain", std::string_view("v")},
                            {"quote\"and\\slash", std::string_view("line\nbreak \xe2\x82\xac")},
                            {"bytes", std::string_view(binary)},
                            {"null", std::nullopt},
                            {"", std::string_view("")}};
  for (int shape = 0; shape < 8; ++shape) {
    Record r;
    r.timestamp = shape == 0 ? -5 : 1700000000123;
    if (shape & 1) r.key = shape & 4 ? std::string_view(binary) : std::string_view("k\u00e9y");
    r.value = shape & 2 ? std::optional<std::string_view>() : std::string_view("x");
    if (shape & 4) r.headers.assign(std::begin(headers), std::end(headers));
    const std::string metadata = record_metadata(r);
    ASSERT_TRUE(nlohmann::json::accept(metadata)) << metadata;
    auto fields = kafka_fields(metadata);
    ASSERT_TRUE(fields) << metadata;
    EXPECT_EQ(fields->timestamp, r.timestamp);
    EXPECT_EQ(fields->key, r.key ? std::optional<std::string>(*r.key) : std::nullopt);
    EXPECT_EQ(fields->null_value, !r.value);
    ASSERT_EQ(fields->headers.size(), r.headers.size()) << metadata;
    for (std::size_t i = 0; i < r.headers.size(); ++i) {
      EXPECT_EQ(fields->headers[i].first, r.headers[i].key);
      EXPECT_EQ(fields->headers[i].second, r.headers[i].value
                                               ? std::optional<std::string>(*r.headers[i].value)
                                               : std::nullopt);
    }
  }
}

TEST(Metadata, WhatAnHttpWriterPutsThereIsReadAsJson) {
  // Another member order, spaces, a unicode escape: not the writer's form, read all the same.
  auto fields = kafka_fields(
      R"({"by": "web", "kafka": {"headers": [{"value": "\u00e9", "key": "h"}], "key": "k"}})");
  ASSERT_TRUE(fields);
  EXPECT_EQ(fields->key, "k");
  EXPECT_EQ(fields->timestamp, -1);
  ASSERT_EQ(fields->headers.size(), 1u);
  EXPECT_EQ(fields->headers[0].second, "\xc3\xa9");
  EXPECT_FALSE(kafka_fields(R"({"by": "web"})"));
  EXPECT_FALSE(kafka_fields(""));
  EXPECT_FALSE(kafka_fields(R"({"kafka": 5})"));
  EXPECT_FALSE(kafka_fields(R"({"kafka":{"timestamp":1,"key":"unterminated)"));
}

}  // namespace
}  // namespace keel::kafka

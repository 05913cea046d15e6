#include "keel/core/text.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

TEST(TextTest, LowersAsciiOnly) {
  EXPECT_EQ(ascii_lower("X-Request-ID"), "x-request-id");
  EXPECT_EQ(ascii_lower("\xC3\x84"), "\xC3\x84");  // not ASCII: left alone
}

TEST(TextTest, LowersInPlaceAndByCharacter) {
  std::string name = "Content-Type\xC3\x89";
  ascii_lower_in_place(name);
  EXPECT_EQ(name, "content-type\xC3\x89");
  static_assert(ascii_lower('Q') == 'q' && ascii_lower('-') == '-');
}

TEST(TextTest, SplitsCommaListsTrimmingSpaces) {
  EXPECT_EQ(split_list(" 5xx, gateway-error,,reset "),
            (std::vector<std::string>{"5xx", "gateway-error", "reset"}));
  EXPECT_TRUE(split_list("").empty());
  EXPECT_TRUE(split_list(" , ").empty());
}

TEST(TextTest, DecodesUtf8StrictlyAsRfc3629Says) {
  EXPECT_EQ(decode_utf8("\xC3\xA9", 0)->value, U'\u00e9');
  EXPECT_EQ(decode_utf8("\xF0\x9F\x98\x80", 0)->length, 4u);
  EXPECT_FALSE(decode_utf8("\xC0\xAF", 0)) << "overlong";
  EXPECT_FALSE(decode_utf8("\xED\xA0\x80", 0)) << "a surrogate";
  EXPECT_FALSE(decode_utf8("\xF4\x90\x80\x80", 0)) << "above U+10FFFF";
  EXPECT_FALSE(decode_utf8("\xE2\x82", 0)) << "cut short";
  EXPECT_EQ(invalid_utf8_at("ok \xC3\xA9 \xFF"), 6u);
  EXPECT_EQ(invalid_utf8_at("caf\xC3\xA9"), std::nullopt);
}

TEST(TextTest, PercentDecodesAndSaysWhereAnEscapeIsBroken) {
  std::string out;
  EXPECT_EQ(percent_decode("order%2F1+x", false, out), std::nullopt);
  EXPECT_EQ(out, "order/1+x");
  EXPECT_EQ(percent_decode("a+b%20c", true, out), std::nullopt);
  EXPECT_EQ(out, "a b c");
  EXPECT_EQ(percent_decode("ab%2", false, out), 2u);
  EXPECT_EQ(percent_decode("%zz", false, out), 0u);
}

TEST(TextTest, EscapesAnyBytesIntoAJsonStringsInside) {
  std::string out;
  append_json_escaped(out, "q\"b\\n\n\x01 caf\xC3\xA9 \xFF");
  EXPECT_EQ(out, "q\\\"b\\\\n\\n\\u0001 caf\xC3\xA9 \xEF\xBF\xBD");
}

}  // namespace
}  // namespace keel

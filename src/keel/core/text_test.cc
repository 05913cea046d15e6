#include "keel/core/text.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "keel/core/random.h"

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

namespace keel {
namespace {

TEST(TextTest, JsonValuesAreRecognisedAsRfc8259Says) {
  for (const char* valid :
       {"0", "-0", "1.5e-3", "-12E+4", "1e-400", "true", "false", "null", "\"\"", " \t\n\r{}\n",
        "[]", "[1, [2, {\"a\": [null]}]]", "{\"a\":1,\"b\":{\"c\":\"d\"}}", "\"\\u00e9\\n\\/\"",
        "\"\\ud83d\\ude00\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
        "123456789012345678901234567890"}) {
    EXPECT_TRUE(is_json_value(valid)) << valid;
  }
  for (const char* invalid : {"",
                              " ",
                              "01",
                              "1.",
                              ".5",
                              "1e",
                              "+1",
                              "-",
                              "1e400",
                              "tru",
                              "nul",
                              "[1,]",
                              "{\"a\":1,}",
                              "{\"a\"}",
                              "{1:2}",
                              "[1 2]",
                              "{} {}",
                              "\"\\x\"",
                              "\"\\ud83d\"",
                              "\"\\ude00\"",
                              "\"\\ud83d\\u0041\"",
                              "\"tab\there\"",
                              "\"\xc3\"",
                              "\"\xed\xa0\x80\"",
                              "\"\xc0\xaf\"",
                              "[",
                              "]",
                              "{",
                              "\"open",
                              "\xef\xbb\xbf{}",
                              "NaN",
                              "Infinity",
                              "[1]]"}) {
    EXPECT_FALSE(is_json_value(invalid)) << invalid;
  }
  EXPECT_TRUE(is_json_value(std::string(100000, '[') + std::string(100000, ']')));  // no recursion
  EXPECT_FALSE(is_json_value(std::string(400, '9')));  // 1e400 as an integer
  EXPECT_FALSE(is_json_value(std::string_view("[1,\0]", 5)));
}

// The same answers as nlohmann's acceptor (the reference the node used before) on inputs made by
// mutating valid documents: insertions, deletions and replacements of bytes that matter to JSON.
TEST(TextTest, JsonValuesAgreeWithNlohmannOnMutatedDocuments) {
  const std::vector<std::string> seeds = {
      R"({"a":[1,2.5,-3e2,true,false,null],"b":{"c":"d\u00e9\n"},"e":""})",
      R"([[],{},"x",0,-0.0,1E+2,"\ud83d\ude00"])", "\"caf\xc3\xa9\"", "12345", "null"};
  const std::string alphabet = "{}[]:,\"\\/ubfnrt0123456789+-.eE \t\nxaZ\xc3\xa9\xed\xa0\xf0\x9f";
  Random random(42);
  int valid = 0;
  for (int round = 0; round < 200000; ++round) {
    std::string text = seeds[random.uniform(seeds.size())];
    const int edits = 1 + static_cast<int>(random.uniform(3));
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const std::size_t at = random.uniform(text.size() + 1);
      const char c = alphabet[random.uniform(alphabet.size())];
      switch (random.uniform(3)) {
        case 0:
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at), c);
          break;
        case 1:
          if (at < text.size()) text.erase(at, 1);
          break;
        default:
          if (at < text.size()) text[at] = c;
      }
    }
    const bool ours = is_json_value(text);
    ASSERT_EQ(ours, nlohmann::json::accept(text)) << text;
    valid += ours ? 1 : 0;
  }
  EXPECT_GT(valid, 1000);  // the mutations kept some documents valid, so both sides were tried
}

}  // namespace
}  // namespace keel

TEST(Base64, RoundTripsEveryLengthAndRefusesGarbage) {
  std::string bytes;
  for (int n = 0; n < 40; ++n) {
    EXPECT_EQ(keel::base64_decode(keel::base64_encode(bytes)), bytes) << n;
    bytes.push_back(static_cast<char>(n * 37));
  }
  EXPECT_EQ(keel::base64_encode("foob"), "Zm9vYg==");
  EXPECT_EQ(keel::base64_decode("Zm9vYg"), "foob");    // padding optional
  EXPECT_EQ(keel::base64_decode("-_8="), "\xfb\xff");  // URL-safe alphabet
  EXPECT_EQ(keel::base64_decode("Zm9v*g=="), std::nullopt);
  EXPECT_EQ(keel::base64_decode("Zm9vY"), std::nullopt);  // no encoding ends with 1 char
}

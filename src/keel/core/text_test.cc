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

}  // namespace
}  // namespace keel

#include "keel/core/text.h"

#include <gtest/gtest.h>

namespace keel {
namespace {

TEST(TextTest, LowersAsciiOnly) {
  EXPECT_EQ(ascii_lower("X-Request-ID"), "x-request-id");
  EXPECT_EQ(ascii_lower("\xC3\x84"), "\xC3\x84");  // not ASCII: left alone
}

TEST(TextTest, SplitsCommaListsTrimmingSpaces) {
  EXPECT_EQ(split_list(" 5xx, gateway-error,,reset "),
            (std::vector<std::string>{"5xx", "gateway-error", "reset"}));
  EXPECT_TRUE(split_list("").empty());
  EXPECT_TRUE(split_list(" , ").empty());
}

}  // namespace
}  // namespace keel

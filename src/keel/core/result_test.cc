#include "keel/core/result.h"

#include <gtest/gtest.h>

#include <memory>

namespace keel {
namespace {

Result<int> parse_port(int value) {
  if (value <= 0 || value > 65535) {
    return Error(errc::invalid_argument, "port " + std::to_string(value) + " is out of range");
  }
  return value;
}

TEST(Result, CarriesValueOrError) {
  Result<int> good = parse_port(8080);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(*good, 8080);

  Result<int> bad = parse_port(70000);
  ASSERT_FALSE(bad);
  EXPECT_TRUE(bad.error().is(errc::invalid_argument));
  EXPECT_EQ(bad.error().message(), "port 70000 is out of range");
  EXPECT_EQ(bad.error().to_string(), "keel: port 70000 is out of range");
}

TEST(Result, HoldsMoveOnlyValues) {
  Result<std::unique_ptr<int>> result(std::make_unique<int>(5));
  std::unique_ptr<int> taken = std::move(result).value();
  EXPECT_EQ(*taken, 5);
}

TEST(Status, DefaultsToOk) {
  Status ok;
  EXPECT_TRUE(ok);
  Status failed = Error(errc::io_error, "disk gone");
  EXPECT_FALSE(failed);
  EXPECT_EQ(failed.error().code().message(), "input/output error");
}

}  // namespace
}  // namespace keel

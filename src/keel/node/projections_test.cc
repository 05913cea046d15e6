#include "keel/node/projections.h"

#include <gtest/gtest.h>

namespace keel::node {
namespace {

ProjectionReport report(std::string name, std::uint64_t position) {
  return {.name = std::move(name), .position = position, .interval = 1s};
}

TEST(ProjectionTable, KeepsTheLatestReportOfEach) {
  ManualClock clock;
  ProjectionTable table(clock);
  ASSERT_TRUE(table.report(report("orders", 10)).ok());
  ASSERT_TRUE(table.report(report("billing", 4)).ok());
  clock.advance(400ms);
  ASSERT_TRUE(table.report(report("orders", 25)).ok());
  clock.advance(100ms);

  const auto list = table.list();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].report.name, "billing");  // by name
  EXPECT_EQ(list[0].report.position, 4u);
  EXPECT_EQ(list[0].age, 500ms);
  EXPECT_EQ(list[1].report.position, 25u);
  EXPECT_EQ(list[1].age, 100ms);

  auto orders = table.get("orders");
  ASSERT_TRUE(orders.ok());
  EXPECT_EQ(orders->report.position, 25u);
  EXPECT_TRUE(table.get("nope").error().is(errc::not_found));

  ASSERT_TRUE(table.remove("orders").ok());
  EXPECT_TRUE(table.remove("orders").error().is(errc::not_found));
  EXPECT_EQ(table.list().size(), 1u);
}

TEST(ProjectionTable, IsBoundedAndMakesRoomOnlyFromStaleOnes) {
  ManualClock clock;
  ProjectionTable table(clock);
  for (std::size_t i = 0; i < kMaxProjections; ++i)
    ASSERT_TRUE(table.report(report("p" + std::to_string(i), i)).ok());
  // Every one reported within its interval: a new name is refused, a known one still reports.
  auto refused = table.report(report("new", 0));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(refused.error().is(errc::conflict)) << refused.error().to_string();
  EXPECT_NE(refused.error().message().find("DELETE"), std::string::npos);
  EXPECT_TRUE(table.report(report("p7", 70)).ok());

  // After three intervals of silence every one is stale except those that reported since; the
  // new name takes the place of the one silent longest.
  clock.advance(2s);
  ASSERT_TRUE(table.report(report("p0", 1)).ok());
  clock.advance(2s);
  ASSERT_TRUE(table.report(report("new", 0)).ok());
  EXPECT_EQ(table.list().size(), kMaxProjections);
  EXPECT_TRUE(table.get("p0").ok());
  EXPECT_TRUE(table.get("p7").ok());
  EXPECT_TRUE(table.get("new").ok());
  EXPECT_FALSE(table.get("p1").ok());  // among the oldest: the first of them went
}

}  // namespace
}  // namespace keel::node

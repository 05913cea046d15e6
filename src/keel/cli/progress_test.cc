#include "keel/cli/progress.h"

#include <gtest/gtest.h>

namespace keel::cli {
namespace {

cqrs::Progress at(std::uint64_t position, std::uint64_t head) {
  cqrs::Progress progress;
  progress.position = position;
  progress.head = head;
  return progress;
}

TEST(ProgressBar, FillsInProportionToThePositionAndPrintsTheNumbers) {
  EXPECT_EQ(progress_bar(at(0, 50), 10), "[----------]   0%  0/50");
  EXPECT_EQ(progress_bar(at(7, 50), 10), "[#---------]  14%  7/50");
  EXPECT_EQ(progress_bar(at(50, 50), 10), "[##########] 100%  50/50");
}

TEST(ProgressBar, AnEmptyLogIsComplete) {
  EXPECT_EQ(progress_bar(at(0, 0), 4), "[####] 100%  0/0");
}

}  // namespace
}  // namespace keel::cli

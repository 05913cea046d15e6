#include "keel/testing/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <mutex>

namespace keel::testing {
namespace {

struct Collected {
  std::mutex mutex;
  std::vector<std::string> lines;
  Subprocess::LineHandler handler() {
    return [this](std::string_view line) {
      std::lock_guard lock(mutex);
      lines.emplace_back(line);
    };
  }
};

TEST(SubprocessTest, PassesEveryLineOfStdoutAndStderrAndTheExitCode) {
  Collected out;
  auto child = Subprocess::spawn({"sh", "-c", "echo one; echo two >&2; printf three; exit 3"},
                                 out.handler());
  ASSERT_TRUE(child) << child.error().to_string();
  EXPECT_EQ((*child)->wait(30s), 3);
  child->reset();  // joins the reader: every line is in
  EXPECT_EQ(out.lines, (std::vector<std::string>{"one", "two", "three"}));
}

TEST(SubprocessTest, ASignalledChildReportsOneHundredTwentyEightPlusTheSignal) {
  auto child = Subprocess::spawn({"sleep", "60"}, nullptr);
  ASSERT_TRUE(child);
  EXPECT_TRUE((*child)->running());
  (*child)->signal(SIGKILL);
  EXPECT_EQ((*child)->wait(30s), 128 + SIGKILL);
  EXPECT_FALSE((*child)->running());
}

TEST(SubprocessTest, AMissingProgramIsAClearError) {
  auto child = Subprocess::spawn({"keel-no-such-program"}, nullptr);
  ASSERT_FALSE(child);
  EXPECT_NE(child.error().message().find("keel-no-such-program"), std::string::npos);
}

}  // namespace
}  // namespace keel::testing

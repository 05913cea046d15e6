// `keel --version` and `keel version` print the one version: project(keel VERSION ...) in the
// top-level CMakeLists.txt (KEEL_EXPECTED_VERSION here, keel/core/version.h in the binary).
#include "keel/core/version.h"

#include <gtest/gtest.h>

#include <mutex>
#include <string>
#include <vector>

#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using keel::testing::Subprocess;

struct KeelRun {
  int exit_code = -1;
  std::vector<std::string> lines;
};

KeelRun run_keel(std::vector<std::string> args) {
  args.insert(args.begin(), KEEL_BINARY);
  KeelRun run;
  std::mutex mutex;
  auto process = Subprocess::spawn(args, [&](std::string_view line) {
    std::lock_guard lock(mutex);
    run.lines.emplace_back(line);
  });
  if (!process) {
    ADD_FAILURE() << process.error().message();
    return run;
  }
  auto code = (*process)->wait(10s);
  run.exit_code = code.value_or(-1);
  process->reset();  // joins the reader: every line is in
  return run;
}

TEST(VersionTest, DashDashVersionPrintsTheProjectVersion) {
  KeelRun run = run_keel({"--version"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(run.lines, std::vector<std::string>{"keel " KEEL_EXPECTED_VERSION});
}

TEST(VersionTest, TheVersionSubcommandPrintsTheSame) {
  KeelRun run = run_keel({"version"});
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_EQ(run.lines, std::vector<std::string>{"keel " KEEL_EXPECTED_VERSION});
}

TEST(VersionTest, TheHeaderCarriesTheProjectVersion) {
  EXPECT_STREQ(kVersion, KEEL_EXPECTED_VERSION);
  EXPECT_EQ(std::to_string(kVersionMajor) + "." + std::to_string(kVersionMinor) + "." +
                std::to_string(kVersionPatch),
            KEEL_EXPECTED_VERSION);
}

}  // namespace
}  // namespace keel

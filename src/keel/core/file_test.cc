#include "keel/core/file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

namespace keel {
namespace {

std::string read(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("keel-file-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::filesystem::path dir;
};

TEST_F(FileTest, AnAtomicWriteReplacesTheFileAndLeavesNoTemporary) {
  const auto path = dir / "state.json";
  ASSERT_FALSE(write_file_atomically(path.string(), "old"));
  ASSERT_FALSE(write_file_atomically(path.string(), std::string(100000, 'n')));
  EXPECT_EQ(read(path), std::string(100000, 'n'));
  EXPECT_FALSE(std::filesystem::exists(dir / "state.json.tmp"));
}

TEST_F(FileTest, AFailedAtomicWriteSaysWhereAndKeepsTheOldFile) {
  const auto path = dir / "state.json";
  ASSERT_FALSE(write_file_atomically(path.string(), "old"));
  std::filesystem::create_directories(dir / "blocked");  // a directory in the file's place
  auto failed = write_file_atomically((dir / "blocked").string(), "new");
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->what, "cannot rename");
  EXPECT_NE(failed->message().find("blocked.tmp"), std::string::npos) << failed->message();
  EXPECT_FALSE(std::filesystem::exists(dir / "blocked.tmp")) << "the temporary is removed";
  auto missing = write_file_atomically((dir / "no-such-dir" / "x").string(), "new");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->what, "cannot create");
  EXPECT_EQ(read(path), "old");
}

}  // namespace
}  // namespace keel

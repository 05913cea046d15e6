// `keel demo --config FILE` refuses a typo in any section of its config with file:line and the
// field, before it runs anything: every mapping of examples/demo/resilience.yaml gets an
// unknown key in turn.
#include <gtest/gtest.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using keel::testing::Subprocess;

TEST(DemoConfigTest, ATypoInAnySectionIsRefusedWithItsPlace) {
  const std::string example = KEEL_SOURCE_DIR "/examples/demo/resilience.yaml";
  const std::filesystem::path file = std::filesystem::temp_directory_path() /
                                     ("keel-demo-typo-" + std::to_string(::getpid()) + ".yaml");
  std::vector<std::string> paths;  // every mapping of the example, by its path
  std::function<void(const YAML::Node&, const std::string&)> walk = [&](const YAML::Node& node,
                                                                        const std::string& path) {
    if (!node.IsMap()) return;
    paths.push_back(path);
    for (const auto& entry : node) walk(entry.second, path + "." + entry.first.as<std::string>());
  };
  walk(YAML::LoadFile(example), "");
  ASSERT_GE(paths.size(), 5u);
  for (std::size_t target = 0; target < paths.size(); ++target) {
    YAML::Node document = YAML::LoadFile(example);
    std::size_t seen = 0;
    std::function<void(YAML::Node)> add_typo = [&](YAML::Node node) {
      if (!node.IsMap()) return;
      if (seen++ == target) {
        node["zzz_typo"] = 1;
        return;
      }
      for (auto entry : node) add_typo(entry.second);
    };
    add_typo(document);
    YAML::Emitter out;
    out << document;
    std::ofstream(file) << out.c_str() << "\n";
    std::mutex mutex;
    std::string output;
    auto process =
        Subprocess::spawn({KEEL_BINARY, "demo", "--only", "resilience", "--config", file.string()},
                          [&](std::string_view line) {
                            std::lock_guard lock(mutex);
                            output.append(line).push_back('\n');
                          });
    ASSERT_TRUE(process) << process.error().message();
    auto code = (*process)->wait(30s);
    process->reset();
    const std::string where = paths[target].empty() ? "the top level" : paths[target];
    EXPECT_NE(code.value_or(0), 0) << "a typo in " << where << " was accepted";
    EXPECT_NE(output.find("zzz_typo: unknown field"), std::string::npos) << where << ":\n"
                                                                         << output;
    EXPECT_NE(output.find(file.filename().string() + ":"), std::string::npos) << output;
  }
  std::filesystem::remove(file);
}

}  // namespace
}  // namespace keel

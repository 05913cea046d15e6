// `keel proxy` as a process: --check, the listening lines, SIGHUP reloads (a good file takes
// over, a bad one is refused and the old config keeps serving), SIGTERM drains and exits 0.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <regex>

#include "keel/testing/scripted_server.h"
#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using keel::testing::Subprocess;

class ProxyCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() / ("keel-proxy-cli-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    config = (dir / "proxy.yaml").string();
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  void write_config(const std::string& upstream, const std::string& extra = "") {
    std::ofstream(config) << "access_log: false\n"
                             "listeners:\n"
                             "  - address: 127.0.0.1:0\n"
                             "    routes: [{match: {prefix: /}, cluster: app}]\n"
                             "clusters:\n"
                             "  - name: app\n"
                             "    endpoints: [{address: "
                          << upstream << "}]\n"
                          << extra;
  }

  // Starts `keel ARGS...`, collecting its output lines.
  void run(std::vector<std::string> args) {
    args.insert(args.begin(), KEEL_BINARY);
    auto started = Subprocess::spawn(args, [this](std::string_view line) {
      std::lock_guard lock(mutex);
      lines.emplace_back(line);
      changed.notify_all();
    });
    ASSERT_TRUE(started) << started.error().message();
    process = std::move(*started);
  }
  // Waits for a line matching `pattern`; the first match.
  std::string wait_line(const std::string& pattern, std::size_t from = 0) {
    const std::regex re(pattern);
    std::unique_lock lock(mutex);
    std::string found;
    changed.wait_for(lock, 10s, [&] {
      for (std::size_t i = from; i < lines.size(); ++i) {
        if (std::regex_search(lines[i], re)) {
          found = lines[i];
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::size_t line_count() {
    std::lock_guard lock(mutex);
    return lines.size();
  }
  std::string all() {
    std::lock_guard lock(mutex);
    std::string text;
    for (const auto& line : lines) text += line + "\n";
    return text;
  }

  std::filesystem::path dir;
  std::string config;
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::string> lines;
  std::unique_ptr<Subprocess> process;
};

std::string get(std::uint16_t port) {
  int fd = keel::testing::connect_to(port);
  if (fd < 0) return "no connection";
  keel::testing::send_all(fd, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
  std::string buffer;
  auto response = keel::testing::read_message(fd, buffer, true);
  ::close(fd);
  return response.body;
}

TEST_F(ProxyCliTest, CheckSaysWhatIsWrongWithFileAndLine) {
  keel::testing::ScriptedServer app("app");
  write_config(app.address());
  run({"proxy", "-c", config, "--check"});
  EXPECT_EQ(process->wait(10s), 0);
  process.reset();
  EXPECT_NE(all().find(": ok (1 listeners, 1 clusters)"), std::string::npos) << all();
  write_config(app.address(), "    load_balancer: {policy: fastest}\n");
  lines.clear();
  run({"proxy", "-c", config, "--check"});
  EXPECT_EQ(process->wait(10s), 1);
  process.reset();
  EXPECT_NE(all().find(config + ":8:"), std::string::npos) << all();
  EXPECT_NE(all().find("fastest"), std::string::npos) << all();
}

TEST_F(ProxyCliTest, SighupReloadsAGoodFileRefusesABadOneAndSigtermDrains) {
  keel::testing::ScriptedServer blue("blue"), green("green");
  write_config(blue.address());
  run({"proxy", "-c", config});
  const std::string listening = wait_line("listening on 127\\.0\\.0\\.1:[0-9]+");
  ASSERT_FALSE(listening.empty()) << all();
  const auto port =
      static_cast<std::uint16_t>(std::stoi(listening.substr(listening.rfind(':') + 1)));
  EXPECT_EQ(get(port), "blue");

  write_config(green.address());
  std::size_t from = line_count();
  process->signal(SIGHUP);
  ASSERT_FALSE(wait_line("reloaded", from).empty()) << all();
  EXPECT_EQ(get(port), "green");

  write_config(blue.address(), "    retry: {retry_on: \"sometimes\"}\n");
  from = line_count();
  process->signal(SIGHUP);
  ASSERT_FALSE(wait_line("reload refused", from).empty()) << all();
  EXPECT_FALSE(wait_line("unknown condition \"sometimes\"", from).empty()) << all();
  EXPECT_EQ(get(port), "green");  // still the last good config

  process->signal(SIGTERM);
  EXPECT_EQ(process->wait(10s), 0) << all();
  EXPECT_FALSE(wait_line("stopping").empty()) << all();
}

}  // namespace
}  // namespace keel

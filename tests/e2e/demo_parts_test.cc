// `keel demo`'s network parts run to the end and show what they promise: the node part (keel
// ctl and curl against a node process), the cluster part (a fourth node joins under load) and the CQRS part's second half (a node process and the
// projection in another). Each part's exit status is 0 only when every child it started was
// stopped.
#include <gtest/gtest.h>
#include <signal.h>

#include <mutex>
#include <regex>
#include <string>
#include <thread>

#include "keel/testing/scripted_server.h"
#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using keel::testing::Subprocess;

std::string run_part(const std::string& part, int* code) {
  std::mutex mutex;
  std::string output;
  auto process = Subprocess::spawn({KEEL_BINARY, "demo", "--only", part}, [&](auto line) {
    std::lock_guard lock(mutex);
    output.append(line).push_back('\n');
  });
  EXPECT_TRUE(process) << process.error().message();
  if (!process) return "";
  *code = (*process)->wait(60s).value_or(-1);
  process->reset();  // joins the reader
  return output;
}

TEST(DemoPartsTest, TheNodePartDrivesANodeWithCtlAndCurl) {
  int code = -1;
  const std::string output = run_part("node", &code);
  EXPECT_EQ(code, 0) << output;
  for (const char* expected : {
           "order-1 version 0, position 0",  // keel ctl append
           "\"duplicate\":true",             // the retried id, answered with the first result
           "(HTTP 409)",                     // the stale expected_version
           "\"actual_version\":1",           //
           "order-4 ",                       // the tail saw the orders appended while it ran
           "\"settled\":[1]",                // the ack over curl
           "keel_eventlog_syncs_total",      // /metrics
           "keel node exited with 0",        // the SIGTERM drain
       }) {
    EXPECT_NE(output.find(expected), std::string::npos) << "no \"" << expected << "\" in\n"
                                                        << output;
  }
  // The tail prints what arrived while it ran: both orders, each once.
  const auto tail = output.find("(the tail, stopped with SIGTERM, had printed:)");
  ASSERT_NE(tail, std::string::npos) << output;
  const std::string tailed = output.substr(tail, output.find("$ keel ctl groups", tail) - tail);
  EXPECT_NE(tailed.find("order-3"), std::string::npos) << tailed;
  EXPECT_NE(tailed.find("order-4"), std::string::npos) << tailed;
}

TEST(DemoPartsTest, TheClusterPartMovesSlotsToAJoiningNodeUnderLoad) {
  int code = -1;
  const std::string output = run_part("cluster", &code);
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("n3 0   <- n3 joined"), std::string::npos) << output;
  EXPECT_NE(output.find("n3 64"), std::string::npos) << "n3 got its share:\n" << output;
  EXPECT_NE(output.find(", 0 failed;"), std::string::npos) << output;
  EXPECT_NE(output.find(", 0 streams wrong"), std::string::npos) << output;
}

TEST(DemoPartsTest, TheCqrsPartProjectsANodeInASeparateProcess) {
  int code = -1;
  const std::string output = run_part("cqrs", &code);
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("projection process has it after"), std::string::npos) << output;
  EXPECT_NE(output.find("B-3 for linus"), std::string::npos) << output;
  // keel ctl projections: the projection process's report, caught up.
  const std::regex reported(R"(orders\s+live\s+\d+\s+0\s)");
  EXPECT_TRUE(std::regex_search(output, reported)) << output;
}

// `keel demo --only console`: a proxy and a node that keep running with their consoles until
// SIGTERM, which stops them and exits 0.
TEST(DemoPartsTest, TheConsolePartServesBothConsolesUntilStopped) {
  std::mutex mutex;
  std::string output;
  auto process = Subprocess::spawn({KEEL_BINARY, "demo", "--only", "console"}, [&](auto line) {
    std::lock_guard lock(mutex);
    output.append(line).push_back('\n');
  });
  ASSERT_TRUE(process) << process.error().message();
  std::smatch proxy, node;
  const std::regex proxy_url("proxy console  http://127\\.0\\.0\\.1:(\\d+)/");
  const std::regex node_url("node console   http://127\\.0\\.0\\.1:(\\d+)/");
  std::string seen;
  for (int i = 0; i < 600; ++i) {
    {
      std::lock_guard lock(mutex);
      seen = output;
    }
    if (std::regex_search(seen, node, node_url) && std::regex_search(seen, proxy, proxy_url)) break;
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(std::regex_search(seen, proxy, proxy_url) && std::regex_search(seen, node, node_url))
      << seen;
  auto page = [](const std::string& port) {
    int fd = testing::connect_to(static_cast<std::uint16_t>(std::stoi(port)));
    testing::send_all(fd, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    std::string buffer;
    auto answer = testing::read_message(fd, buffer, true);
    ::close(fd);
    return answer.body;
  };
  EXPECT_NE(page(proxy[1]).find("data-cluster=\"app\""), std::string::npos);
  EXPECT_NE(page(node[1]).find("data-kind=\"node\""), std::string::npos);
  (*process)->signal(SIGTERM);
  EXPECT_EQ((*process)->wait(30s).value_or(-1), 0);
  process->reset();
  EXPECT_NE(output.find("stopped"), std::string::npos) << output;
}

}  // namespace
}  // namespace keel

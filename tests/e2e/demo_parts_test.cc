// `keel demo`'s network parts run to the end and show what they promise: the node part (keel
// ctl and curl against a node process) and the CQRS part's second half (a node process and the
// projection in another). Each part's exit status is 0 only when every child it started was
// stopped.
#include <gtest/gtest.h>

#include <mutex>
#include <string>

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

TEST(DemoPartsTest, TheCqrsPartProjectsANodeInASeparateProcess) {
  int code = -1;
  const std::string output = run_part("cqrs", &code);
  EXPECT_EQ(code, 0) << output;
  EXPECT_NE(output.find("projection process has it after"), std::string::npos) << output;
  EXPECT_NE(output.find("B-3 for linus"), std::string::npos) << output;
}

}  // namespace
}  // namespace keel

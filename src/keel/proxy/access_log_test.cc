#include "keel/proxy/access_log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "keel/core/text.h"

namespace keel::proxy {
namespace {

TEST(AccessLogTest, LinesAreWrittenOnTheIntervalNotWhenAppended) {
  ManualClock clock;
  std::ostringstream out;
  AccessLog log(out, 2, clock, {.buffer_bytes_per_worker = 1024, .flush_interval = 100ms});
  log.append(0, "{\"a\":1}");
  log.append(1, "{\"b\":2}");
  log.flush();
  EXPECT_EQ(out.str(), "{\"a\":1}\n{\"b\":2}\n");
  log.append(0, "{\"c\":3}");
  clock.advance(100ms);  // the writer's timer
  log.stop();            // and whatever is left
  EXPECT_EQ(out.str(), "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
  EXPECT_EQ(log.written(), 3u);
  EXPECT_EQ(log.dropped(), 0u);
}

TEST(AccessLogTest, AFullBufferDropsAndCountsInsteadOfWaiting) {
  ManualClock clock;
  std::ostringstream out;
  metrics::Registry registry;
  auto& dropped = registry.counter("dropped_total", "test", {});
  AccessLog log(out, 1, clock,
                {.buffer_bytes_per_worker = 20, .flush_interval = 1h, .dropped_lines = &dropped});
  log.append(0, "0123456789");  // 11 bytes with its newline
  log.append(0, "0123456789");  // would make 22: dropped
  log.append(0, "short");       // fits
  EXPECT_EQ(log.dropped(), 1u);
  EXPECT_EQ(dropped.value(), 1u);
  log.stop();
  EXPECT_EQ(out.str(), "0123456789\nshort\n");
}

TEST(AccessLogTest, WorkersAppendingAtOnceLoseNothingThatFits) {
  ManualClock clock;
  std::ostringstream out;
  AccessLog log(out, 4, clock, {.buffer_bytes_per_worker = 1 << 20, .flush_interval = 10ms});
  std::vector<std::thread> workers;
  for (std::size_t w = 0; w < 4; ++w) {
    workers.emplace_back([&, w] {
      for (int i = 0; i < 2000; ++i) {
        log.append(w, std::to_string(w) + ":" + std::to_string(i));
        if (i % 500 == 0) log.flush();
      }
    });
  }
  for (auto& worker : workers) worker.join();
  log.stop();
  EXPECT_EQ(log.written(), 8000u);
  std::istringstream lines(out.str());
  std::vector<int> next(4, 0);
  for (std::string line; std::getline(lines, line);) {
    const auto colon = line.find(':');
    const int worker = std::stoi(line.substr(0, colon));
    EXPECT_EQ(std::stoi(line.substr(colon + 1)), next[worker]++) << "a worker's lines keep order";
  }
  EXPECT_EQ(next, (std::vector<int>{2000, 2000, 2000, 2000}));
}

TEST(AccessLogTest, AnyBytesMakeAValidJsonString) {
  std::string out = "\"";
  append_json_escaped(out, std::string("a\"b\\c\nd\x01\x7f caf\xc3\xa9 \xff\xc3 \xed\xa0\x80 end"));
  out += "\"";
  auto parsed = nlohmann::json::parse(out, nullptr, false);
  ASSERT_FALSE(parsed.is_discarded()) << out;
  EXPECT_EQ(parsed.get<std::string>(),
            "a\"b\\c\nd\x01\x7f caf\xc3\xa9 \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd\xef"
            "\xbf\xbd end");
}

}  // namespace
}  // namespace keel::proxy

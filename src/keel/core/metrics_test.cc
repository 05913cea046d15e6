#include "keel/core/metrics.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace keel::metrics {
namespace {

TEST(Metrics, CounterSumsIncrementsFromManyThreads) {
  Registry registry;
  Counter& counter = registry.counter("keel_calls_total", "Calls made.");
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) counter.inc();
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.value(), 40000u);
}

TEST(Metrics, SameNameAndLabelsGiveTheSameMetric) {
  Registry registry;
  Counter& a = registry.counter("x_total", "x", {{"cluster", "a"}});
  Counter& b = registry.counter("x_total", "x", {{"cluster", "b"}});
  EXPECT_EQ(&a, &registry.counter("x_total", "x", {{"cluster", "a"}}));
  EXPECT_NE(&a, &b);
}

TEST(Metrics, RendersPrometheusTextFormat) {
  Registry registry;
  registry.counter("keel_requests_total", "Requests.", {{"route", "a\"b\\c\n"}}).inc(3);
  registry.gauge("keel_inflight", "In flight.").set(2.5);
  Histogram& histogram = registry.histogram("keel_latency_seconds", "Latency.", {0.1, 1});
  histogram.observe(0.05);
  histogram.observe(0.5);
  histogram.observe(5);
  auto registration = registry.gauge_callback("keel_limit", "Limit.", {}, [] { return 7.0; });

  std::string text = registry.render_prometheus();
  EXPECT_NE(text.find("# HELP keel_requests_total Requests.\n# TYPE keel_requests_total counter\n"
                      "keel_requests_total{route=\"a\\\"b\\\\c\\n\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("keel_inflight 2.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("# TYPE keel_latency_seconds histogram\n"
                      "keel_latency_seconds_bucket{le=\"0.1\"} 1\n"
                      "keel_latency_seconds_bucket{le=\"1\"} 2\n"
                      "keel_latency_seconds_bucket{le=\"+Inf\"} 3\n"
                      "keel_latency_seconds_sum 5.55\n"
                      "keel_latency_seconds_count 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("keel_limit 7\n"), std::string::npos) << text;

  registration.reset();
  EXPECT_EQ(registry.render_prometheus().find("keel_limit"), std::string::npos)
      << "an unregistered callback gauge disappears";
}

TEST(Metrics, CallbackCounterRendersAsCounter) {
  Registry registry;
  std::uint64_t calls = 41;
  auto registration =
      registry.counter_callback("keel_x_total", "X.", {{"k", "v"}}, [&] { return calls + 1.0; });
  std::string text = registry.render_prometheus();
  EXPECT_NE(text.find("# TYPE keel_x_total counter\nkeel_x_total{k=\"v\"} 42\n"), std::string::npos)
      << text;
}

TEST(MetricsDeathTest, InvalidNameIsAProgrammingError) {
  Registry registry;
  EXPECT_DEATH(registry.counter("9bad", "x"), "check failed");
  EXPECT_DEATH(registry.counter("ok_total", "x", {{"bad-label", "v"}}), "check failed");
}

}  // namespace
}  // namespace keel::metrics

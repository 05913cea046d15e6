// The console's parts that do not need a browser: the page shell and its escaping, the
// compiled-in assets, quantiles over an interval of a histogram, and the Feed on a real
// http::Server read with raw sockets, its samples driven by the manual clock.
#include "keel/console/console.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <future>

#include "keel/testing/scripted_server.h"

namespace keel::console {
namespace {

TEST(ConsolePage, EscapesWhatItIsGivenAndNamesItsKind) {
  EXPECT_EQ(escape_html("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;");
  const std::string html = page("keel <proxy>", "proxy", "<table id=t></table>");
  EXPECT_NE(html.find("<title>keel &lt;proxy&gt;</title>"), std::string::npos);
  EXPECT_NE(html.find("data-kind=\"proxy\""), std::string::npos);
  EXPECT_NE(html.find("<table id=t></table>"), std::string::npos) << "the body as rendered";
  EXPECT_NE(html.find("/console/console.js"), std::string::npos);
}

TEST(ConsoleAssets, AreCompiledInWithTheirTypes) {
  auto js = asset("/console/console.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->content_type, "text/javascript; charset=utf-8");
  EXPECT_NE(js->body.find("EventSource('/console/events')"), std::string::npos);
  auto css = asset("/console/console.css");
  ASSERT_TRUE(css);
  EXPECT_EQ(css->content_type, "text/css; charset=utf-8");
  EXPECT_FALSE(asset("/console/../etc/passwd"));
  EXPECT_FALSE(asset("/console/"));
}

metrics::Histogram::Snapshot histogram(std::vector<std::uint64_t> per_bucket) {
  metrics::Histogram::Snapshot s;
  s.upper_bounds = {0.001, 0.01, 0.1, 1};
  std::uint64_t total = 0;
  for (auto n : per_bucket) {
    total += n;
    s.cumulative_counts.push_back(total);
  }
  s.count = total;
  return s;
}

TEST(IntervalQuantile, InterpolatesInsideTheBucketOfTheInterval) {
  const auto before = histogram({100, 0, 0, 0, 0});
  // 100 more observations in the interval, all in (0.01, 0.1]: the p50 is halfway through it.
  const auto now = histogram({100, 0, 100, 0, 0});
  EXPECT_NEAR(*interval_quantile(before, now, 0.5), 0.055, 1e-9);
  EXPECT_NEAR(*interval_quantile(before, now, 0.99), 0.01 + 0.09 * 0.99, 1e-9);
  // Without the earlier snapshot, the first bucket's 100 count too.
  EXPECT_NEAR(*interval_quantile({}, now, 0.25), 0.0005, 1e-9);
}

TEST(IntervalQuantile, IsEmptyWithoutObservationsAndCappedAtTheLastBound) {
  const auto same = histogram({3, 0, 0, 0, 0});
  EXPECT_FALSE(interval_quantile(same, same, 0.99));
  const auto slow = histogram({3, 0, 0, 0, 7});
  EXPECT_EQ(*interval_quantile(same, slow, 0.99), 1.0);
}

class FeedTest : public ::testing::Test {
 protected:
  void serve(Feed& feed) {
    auto bound = http::Server::bind(
        {},
        [&feed](http::Request&, http::Responder responder) {
          feed.subscribe(std::move(responder));
        },
        server_clock_);
    ASSERT_TRUE(bound) << bound.error().message();
    server_ = std::move(*bound);
    server_->start();
  }
  int open_stream() {
    int fd = testing::connect_to(server_->bound().port);
    EXPECT_TRUE(testing::send_all(fd, "GET /console/events HTTP/1.1\r\nHost: h\r\n\r\n"));
    return fd;
  }
  // Waits until the feed has `n` live subscribers (the request reaches it on a server thread).
  static void wait_for_subscribers(const Feed& feed, std::size_t n) {
    for (int i = 0; i < 1000 && feed.subscribers() < n; ++i) std::this_thread::sleep_for(5ms);
    ASSERT_EQ(feed.subscribers(), n);
  }

  ManualClock clock_;
  SteadyClock server_clock_;
  std::unique_ptr<http::Server> server_;
  int counter_ = 0;
  std::function<std::string()> counting = [this] {
    return "{\"n\":" + std::to_string(++counter_) + "}";
  };
};

TEST_F(FeedTest, SendsTheHistoryThenEachSampleAndEndsOnStop) {
  Feed feed(clock_, {.interval = 1s, .history = 2}, counting);
  serve(feed);
  feed.start();  // sample 1
  clock_.advance(1s);
  clock_.advance(1s);  // samples 2 and 3; the history keeps 2 and 3
  EXPECT_EQ(feed.samples(), 2u);
  int fd = open_stream();
  wait_for_subscribers(feed, 1);
  clock_.advance(1s);  // sample 4 reaches the subscriber
  feed.stop();
  EXPECT_EQ(clock_.pending_timers(), 0u) << "stop() cancels the next sample";
  std::string buffer;
  auto message = testing::read_message(fd, buffer, true);
  ::close(fd);
  ASSERT_TRUE(message.complete);
  EXPECT_EQ(message.status(), 200);
  EXPECT_EQ(message.header("content-type"), "text/event-stream");
  EXPECT_EQ(message.header("cache-control"), "no-cache");
  EXPECT_EQ(message.body,
            "retry: 2000\n\nevent: history\ndata: [{\"n\":2},{\"n\":3}]\n\n"
            "event: sample\ndata: {\"n\":4}\n\n");
  server_->stop();
}

TEST_F(FeedTest, RefusesSubscribersPastItsLimit) {
  Feed feed(clock_, {.max_subscribers = 1}, counting);
  serve(feed);
  feed.start();
  int first = open_stream();
  wait_for_subscribers(feed, 1);
  int second = open_stream();
  std::string buffer;
  auto refused = testing::read_message(second, buffer, true);
  EXPECT_EQ(refused.status(), 503);
  EXPECT_EQ(refused.header("retry-after"), "5");
  EXPECT_NE(refused.body.find("too many console feeds"), std::string::npos);
  ::close(second);
  ::close(first);
  feed.stop();
  server_->stop();
}

TEST_F(FeedTest, DropsASubscriberThatStopsReading) {
  // 64 KiB may wait for a subscriber; each sample is 16 KiB and the client never reads.
  Feed feed(clock_, {.max_queued_bytes = 64 * 1024},
            [] { return "{\"pad\":\"" + std::string(16 * 1024, 'x') + "\"}"; });
  serve(feed);
  feed.start();
  int fd = open_stream();
  wait_for_subscribers(feed, 1);
  for (int i = 0; i < 4000 && feed.subscribers() == 1; ++i) clock_.advance(1s);
  EXPECT_EQ(feed.subscribers(), 0u) << "a subscriber that reads nothing is dropped, not buffered";
  ::close(fd);
  feed.stop();
  server_->stop();
}

}  // namespace
}  // namespace keel::console

// The console: the live web page that the admin listener of `keel proxy` and of `keel node`
// serves. The process renders the first paint itself (plain HTML tables of its current
// numbers, so the page works without JavaScript); the script compiled in here then follows a
// Feed of samples over Server-Sent Events and redraws the views and their charts.
//
// Thread-safety: Feed's methods may be called from any thread; the sampling function runs on
// the clock's timer thread, one call at a time.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/http/server.h"

namespace keel::console {

// A file compiled into the binary (console.js, console.css) by its path under /console/, or
// nullopt. Answers with a content type and a cache header.
std::optional<http::Response> asset(std::string_view path);

// The whole page around `body` (HTML the process rendered from its current state): the
// stylesheet, the script, a header naming the process. `kind` ("proxy", "node") tells the
// script which views to draw.
std::string page(std::string_view title, std::string_view kind, std::string_view body);

// `text` with & < > " ' escaped for HTML text and attribute values.
std::string escape_html(std::string_view text);

// The q-quantile (0 < q < 1) of what a histogram observed between two snapshots of it, by
// linear interpolation inside the bucket (as Prometheus' histogram_quantile does); nullopt when
// nothing was observed in between. A value past the last finite bound is reported as that bound.
std::optional<double> interval_quantile(const metrics::Histogram::Snapshot& before,
                                        const metrics::Histogram::Snapshot& now, double q);

// Samples of a process's state, taken every `interval` and sent to every subscriber as
// Server-Sent Events: first `event: history` with the samples kept (a JSON array, oldest first),
// then `event: sample` with each new one. Bounded: `history` samples, `max_subscribers`
// streams (one more is answered 503), `max_queued_bytes` waiting for a slow subscriber (it is
// then dropped; its EventSource reconnects and starts from the history).
class Feed {
 public:
  struct Options {
    Duration interval = 1s;
    std::size_t history = 300;  // five minutes at 1 s
    std::size_t max_subscribers = 16;
    std::size_t max_queued_bytes = 1 << 20;
  };
  // `sample` returns one JSON object; it is called on the clock's timer thread.
  Feed(Clock& clock, Options options, std::function<std::string()> sample);
  ~Feed();
  Feed(const Feed&) = delete;
  Feed& operator=(const Feed&) = delete;

  // Takes the first sample and schedules the next ones.
  void start();
  // Cancels the timer (waiting for a sample under way) and ends every stream. Idempotent.
  void stop();
  // Answers a GET of the feed: the stream, or 503 when the feed is full or stopped.
  void subscribe(http::Responder responder);
  // Takes one sample now and sends it (the timer calls it; tests call it directly).
  void tick();

  std::size_t subscribers() const;
  std::size_t samples() const;

 private:
  struct Subscriber;
  void schedule_locked();

  Clock& clock_;
  const Options options_;
  const std::function<std::string()> sample_;
  mutable std::mutex mutex_;
  std::deque<std::string> history_;
  std::vector<std::shared_ptr<Subscriber>> subscribers_;
  TimerId timer_ = 0;
  bool running_ = false;
  bool stopped_ = false;
  std::mutex tick_mutex_;  // one sample at a time, in order
};

}  // namespace keel::console

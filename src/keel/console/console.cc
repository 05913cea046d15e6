#include "keel/console/console.h"

#include <algorithm>
#include <utility>

#include "keel/console/assets.h"

namespace keel::console {

std::optional<http::Response> asset(std::string_view path) {
  http::Response response;
  if (path == "/console/console.js") {
    response.content_type = "text/javascript; charset=utf-8";
    response.body = std::string(assets::kConsoleJs);
  } else if (path == "/console/console.css") {
    response.content_type = "text/css; charset=utf-8";
    response.body = std::string(assets::kConsoleCss);
  } else {
    return std::nullopt;
  }
  // The same binary always serves the same bytes; a new binary is a new process, and the
  // page asks for the assets again when it is reloaded.
  response.headers.emplace_back("cache-control", "no-cache");
  return response;
}

std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string page(std::string_view title, std::string_view kind, std::string_view body) {
  std::string html;
  html.reserve(body.size() + 1024);
  html +=
      "<!doctype html><html lang=en><head><meta charset=utf-8>"
      "<meta name=viewport content=\"width=device-width, initial-scale=1\"><title>";
  html += escape_html(title);
  html +=
      "</title><link rel=stylesheet href=/console/console.css>"
      "<script src=/console/console.js defer></script></head><body><header><h1>";
  html += escape_html(title);
  html += "</h1><span id=live class=stale>static page (live updates need JavaScript)</span>";
  html += "</header><main id=console data-kind=\"";
  html += escape_html(kind);
  html += "\">";
  html += body;
  html += "</main></body></html>\n";
  return html;
}

std::optional<double> interval_quantile(const metrics::Histogram::Snapshot& before,
                                        const metrics::Histogram::Snapshot& now, double q) {
  const std::size_t buckets = now.cumulative_counts.size();
  if (buckets == 0 || now.upper_bounds.size() + 1 != buckets) return std::nullopt;
  const bool comparable = before.cumulative_counts.size() == buckets;
  auto delta = [&](std::size_t i) -> double {
    const std::uint64_t earlier = comparable ? before.cumulative_counts[i] : 0;
    return now.cumulative_counts[i] >= earlier
               ? static_cast<double>(now.cumulative_counts[i] - earlier)
               : 0.0;
  };
  const double total = delta(buckets - 1);
  if (total <= 0) return std::nullopt;
  const double rank = std::clamp(q, 0.0, 1.0) * total;
  for (std::size_t i = 0; i < buckets; ++i) {
    const double at = delta(i);
    if (at < rank) continue;
    if (i == now.upper_bounds.size()) return now.upper_bounds.empty() ? 0 : now.upper_bounds.back();
    const double below = i == 0 ? 0.0 : delta(i - 1);
    const double lower = i == 0 ? 0.0 : now.upper_bounds[i - 1];
    const double upper = now.upper_bounds[i];
    const double in_bucket = at - below;
    if (in_bucket <= 0) return upper;
    return lower + (upper - lower) * (rank - below) / in_bucket;
  }
  return now.upper_bounds.empty() ? 0 : now.upper_bounds.back();
}

struct Feed::Subscriber {
  explicit Subscriber(http::Responder r) : responder(std::move(r)) {}
  http::Responder responder;
};

Feed::Feed(Clock& clock, Options options, std::function<std::string()> sample)
    : clock_(clock), options_(options), sample_(std::move(sample)) {}

Feed::~Feed() { stop(); }

void Feed::start() {
  {
    std::lock_guard lock(mutex_);
    if (running_ || stopped_) return;
    running_ = true;
  }
  tick();
}

void Feed::schedule_locked() {
  if (!running_) return;
  timer_ = clock_.schedule_after(options_.interval, [this] { tick(); });
}

void Feed::stop() {
  TimerId timer = 0;
  std::vector<std::shared_ptr<Subscriber>> subscribers;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    running_ = false;
    timer = std::exchange(timer_, 0);
    subscribers.swap(subscribers_);
  }
  if (timer != 0) clock_.cancel(timer);
  // A tick under way holds tick_mutex_ until it has written; after this no tick starts.
  std::lock_guard tick_lock(tick_mutex_);
  for (auto& subscriber : subscribers) subscriber->responder.end();
}

void Feed::subscribe(http::Responder responder) {
  std::string first = "retry: 2000\n\nevent: history\ndata: [";
  auto subscriber = std::make_shared<Subscriber>(std::move(responder));
  {
    std::lock_guard lock(mutex_);
    std::erase_if(subscribers_, [](const auto& s) { return s->responder.closed(); });
    if (stopped_ || subscribers_.size() >= options_.max_subscribers) {
      http::Response busy = http::Response::text(
          503, stopped_ ? "the console feed is stopped\n"
                        : "too many console feeds open (" +
                              std::to_string(options_.max_subscribers) + ")\n");
      busy.headers.emplace_back("retry-after", "5");
      subscriber->responder.respond(std::move(busy));
      return;
    }
    for (std::size_t i = 0; i < history_.size(); ++i) {
      if (i != 0) first += ',';
      first += history_[i];
    }
    first += "]\n\n";
    subscriber->responder.start_stream(
        200, "text/event-stream", {{"cache-control", "no-cache"}, {"x-accel-buffering", "no"}});
    // The history may be larger than what a subscriber may have waiting later on.
    if (!subscriber->responder.write(first, first.size() + options_.max_queued_bytes)) return;
    subscribers_.push_back(std::move(subscriber));
  }
}

void Feed::tick() {
  std::lock_guard tick_lock(tick_mutex_);
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
  }
  std::string sample = sample_();
  const std::string event = "event: sample\ndata: " + sample + "\n\n";
  std::vector<std::shared_ptr<Subscriber>> subscribers;
  {
    std::lock_guard lock(mutex_);
    history_.push_back(std::move(sample));
    while (history_.size() > options_.history) history_.pop_front();
    subscribers = subscribers_;
  }
  std::vector<std::shared_ptr<Subscriber>> gone;
  for (auto& subscriber : subscribers) {
    if (!subscriber->responder.write(event, options_.max_queued_bytes)) {
      subscriber->responder.end();
      gone.push_back(subscriber);
    }
  }
  std::lock_guard lock(mutex_);
  if (!gone.empty()) {
    std::erase_if(subscribers_, [&](const auto& s) {
      return std::find(gone.begin(), gone.end(), s) != gone.end();
    });
  }
  schedule_locked();
}

std::size_t Feed::subscribers() const {
  std::lock_guard lock(mutex_);
  return static_cast<std::size_t>(
      std::count_if(subscribers_.begin(), subscribers_.end(),
                    [](const auto& s) { return !s->responder.closed(); }));
}

std::size_t Feed::samples() const {
  std::lock_guard lock(mutex_);
  return history_.size();
}

}  // namespace keel::console

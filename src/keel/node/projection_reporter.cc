#include "keel/node/projection_reporter.h"

#include "keel/core/log.h"

namespace keel {

Result<std::unique_ptr<ProjectionReporter>> ProjectionReporter::start(NodeClientOptions options,
                                                                      Source source, Clock& clock,
                                                                      Duration interval) {
  if (!source) return Error(errc::invalid_argument, "a projection reporter needs a source");
  if (interval <= Duration::zero()) {
    return Error(errc::invalid_argument, "a projection reporter's interval must be positive");
  }
  // A report is small and the next one is due soon: never wait on a node longer than a tick.
  options.timeout = std::min(options.timeout, std::max<Duration>(interval, 1s));
  auto client = NodeClient::connect(std::move(options));
  if (!client) return client.error();
  return std::unique_ptr<ProjectionReporter>(
      new ProjectionReporter(std::move(*client), std::move(source), clock, interval));
}

ProjectionReporter::ProjectionReporter(std::unique_ptr<NodeClient> client, Source source,
                                       Clock& clock, Duration interval)
    : client_(std::move(client)),
      source_(std::move(source)),
      clock_(clock),
      interval_(interval),
      thread_([this] { run(); }) {}

void ProjectionReporter::report_now() {
  std::lock_guard lock(mutex_);
  now_ = true;
  wake_.notify_all();
}

void ProjectionReporter::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
    wake_.notify_all();
  }
  client_->cancel();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t ProjectionReporter::sent() const {
  std::lock_guard lock(mutex_);
  return sent_;
}

std::uint64_t ProjectionReporter::failed() const {
  std::lock_guard lock(mutex_);
  return failed_;
}

void ProjectionReporter::run() {
  bool down = false;
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    now_ = false;
    lock.unlock();
    node::ProjectionReport report = source_();
    report.interval = interval_;
    const Status status = client_->report_projection(report);
    lock.lock();
    if (stopping_) break;
    if (status) {
      ++sent_;
      if (down)
        log::get("node")->info("projection {}: reporting to {} again", report.name, client_->url());
      down = false;
    } else {
      ++failed_;
      if (!down) {
        log::get("node")->warn("projection {}: its report to {} failed: {}", report.name,
                               client_->url(), status.error().to_string());
      }
      down = true;
    }
    wait_until(clock_, wake_, lock, clock_.now() + interval_, [&] { return stopping_ || now_; });
  }
}

}  // namespace keel

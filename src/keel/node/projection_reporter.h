// keel::ProjectionReporter: tells a `keel node` how a projection in this process is doing, so
// that GET /v1/projections and the node's console show it (position, lag, counts, state). Every
// `interval` it asks `source` for a report and PUTs it; a node that is down is tried again at
// the next tick (a warning is logged once per outage, not once per tick).
//
//   auto reporter = keel::ProjectionReporter::start({.url = node_url}, [&] {
//     const auto p = runner->progress();
//     return node::ProjectionReport{.name = "orders", .position = p.position, .live = p.live};
//   }, clock);
//   ...
//   reporter->stop();
//
// The source is a function so that this library need not know the CQRS runner.
//
// Thread-safety: report_now() from any thread; stop() from the owner's.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "keel/core/clock.h"
#include "keel/node/client.h"

namespace keel {

class ProjectionReporter {
 public:
  using Source = std::function<node::ProjectionReport()>;

  static Result<std::unique_ptr<ProjectionReporter>> start(NodeClientOptions options, Source source,
                                                           Clock& clock, Duration interval = 1s);
  ~ProjectionReporter() { stop(); }
  ProjectionReporter(const ProjectionReporter&) = delete;
  ProjectionReporter& operator=(const ProjectionReporter&) = delete;

  // Reports at once rather than at the next tick (after a batch, a stop on an error).
  void report_now();
  // Ends the thread, cutting short a report in flight. Idempotent.
  void stop();
  // Reports sent and refused (or not delivered) so far.
  std::uint64_t sent() const;
  std::uint64_t failed() const;

 private:
  ProjectionReporter(std::unique_ptr<NodeClient> client, Source source, Clock& clock,
                     Duration interval);
  void run();

  std::unique_ptr<NodeClient> client_;
  Source source_;
  Clock& clock_;
  const Duration interval_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  bool now_ = false;
  bool stopping_ = false;
  std::uint64_t sent_ = 0, failed_ = 0;
  std::thread thread_;  // last: started once the rest is set
};

}  // namespace keel

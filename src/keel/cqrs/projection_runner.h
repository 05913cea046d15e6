// The query side of CQRS: a projection turns events into read-model changes, and a
// ProjectionRunner applies them in batches, each batch one database transaction that also
// stores the projection's checkpoint. A crash between batches loses nothing and a crash inside
// one rolls all of it back, so an event is applied exactly once and none is skipped.
//
//   Projection orders{.name = "orders", .filter = {.categories = {"order"}},
//                     .setup = create_tables, .reset = delete_rows, .apply = apply_order_event};
//   auto runner = ProjectionRunner::open(store, read_model, orders, clock);
//   (*runner)->start();
//   auto placed = commands.handle(place_order);            // appended at placed->position
//   (*runner)->wait_for(placed->position, 2s);             // read-your-writes
//   read_model.query("SELECT status FROM orders WHERE id = $1", {id});
//
// The log is the embedded EventStore or any pubsub::LogSource — keel::RemoteStore follows a
// `keel node` over HTTP, so that the read model is kept by a process of its own. A remote log's
// errors (the node down, a timeout) are retried after `retry_after` like the database's.
//
// Thread-safety: every method may be called from any thread; apply() runs on the runner's
// thread (or the caller of step()).
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"
#include "keel/cqrs/read_model.h"
#include "keel/eventlog/event_store.h"
#include "keel/pubsub/follower.h"
#include "keel/pubsub/log_source.h"
#include "keel/pubsub/reader.h"

namespace keel::cqrs {

using eventlog::EventStore;
using eventlog::RecordedEvent;

// What happens to an event whose apply() fails (the events before it in the batch are kept).
enum class OnError {
  kStop,  // the runner stops before it, with the error; fix and restart to go on
  kSkip,  // logged, counted and passed over
  kPark,  // recorded in $keel-projection-NAME-parked (stream, version, position, error), then
          // passed over
};

struct Projection {
  std::string name;  // letters, digits, '_', '-', '.'; the checkpoint's key
  pubsub::Filter filter;
  std::function<Status(Transaction&)> setup;  // CREATE TABLE IF NOT EXISTS …; run at open
  std::function<Status(Transaction&)> reset;  // empties the read model, for rebuild()
  std::function<Status(const RecordedEvent&, Transaction&)> apply;
  OnError on_error = OnError::kStop;
};

struct RunnerOptions {
  std::size_t batch = 1000;  // events per transaction
  // Positions passed without a matching event before the checkpoint is written anyway.
  std::uint64_t idle_checkpoint_every = 10000;
  Duration retry_after = 1s;  // after a database error, or the log's (a node that is down)
};

struct Progress {
  std::uint64_t position = 0;  // every event below it is in the read model (or not for it)
  std::uint64_t head = 0;      // the log's next position
  std::uint64_t applied = 0, skipped = 0, parked = 0;
  bool paused = false;
  bool live = false;  // caught up with the head at the last look
  std::optional<Error> error;
};

class ProjectionRunner {
 public:
  static Result<std::unique_ptr<ProjectionRunner>> open(EventStore& store, ReadModel& model,
                                                        Projection projection, Clock& clock,
                                                        RunnerOptions options = {});
  // The same over any log, such as a remote node's. A log that cannot park (a node refuses
  // appends to $ streams) refuses OnError::kPark here.
  static Result<std::unique_ptr<ProjectionRunner>> open(pubsub::LogSource& log, ReadModel& model,
                                                        Projection projection, Clock& clock,
                                                        RunnerOptions options = {});
  ~ProjectionRunner() { stop(); }
  ProjectionRunner(const ProjectionRunner&) = delete;
  ProjectionRunner& operator=(const ProjectionRunner&) = delete;

  // Call start() and stop() from one thread. start() after a stop on a failed event (kStop)
  // tries that event again.
  void start();
  void stop();  // waits for the batch in progress

  // One batch, on the caller's thread. Ok(false) when there was nothing to do.
  Result<bool> step();
  // Steps until the position reaches the head as it was at the call.
  Status catch_up();

  void pause();
  void resume();
  // Empties the read model and sets the checkpoint to zero in one transaction; the runner
  // (or catch_up()) then applies the whole log again.
  Status rebuild();

  // Read-your-writes: waits until the event at `position` (an append's last_position) is in
  // the read model; false on timeout, or if the runner stopped on an error.
  bool wait_for(std::uint64_t position, Duration timeout);

  Progress progress() const;
  // Prometheus series labelled projection="NAME": keel_projection_position,
  // keel_projection_lag_events, keel_projection_{applied,skipped,parked}_total. Keep the
  // registrations no longer than the runner.
  std::vector<metrics::CallbackRegistration> export_metrics(metrics::Registry& registry);
  const Projection& projection() const { return projection_; }
  std::string parked_stream() const { return "$keel-projection-" + projection_.name + "-parked"; }

 private:
  static Result<std::unique_ptr<ProjectionRunner>> open_on(
      std::unique_ptr<pubsub::LogSource> embedded, pubsub::LogSource* log, ReadModel& model,
      Projection projection, Clock& clock, RunnerOptions options);
  ProjectionRunner(std::unique_ptr<pubsub::LogSource> embedded, pubsub::LogSource& log,
                   ReadModel& model, Projection projection, Clock& clock, RunnerOptions options,
                   std::uint64_t position);
  Status save_checkpoint(Transaction& tx, std::uint64_t position);
  Status commit_checkpoint(std::uint64_t position);
  Status handle_failure(const std::vector<RecordedEvent>& events, std::size_t failed,
                        const Error& error);
  void advanced(std::uint64_t position, std::uint64_t applied);

  std::unique_ptr<pubsub::LogSource> embedded_;  // the EventStore's adapter, when given one
  pubsub::LogSource& log_;
  ReadModel& model_;
  const Projection projection_;
  Clock& clock_;
  const RunnerOptions options_;

  std::mutex step_mutex_;    // one batch at a time; rebuild() waits for it
  std::uint64_t read_ = 0;   // where the next read starts; guarded by step_mutex_
  std::uint64_t saved_ = 0;  // the checkpoint in the database; guarded by step_mutex_

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  Progress progress_;
  bool stopping_ = false;
  bool work_ = true;
  pubsub::Follower follower_{log_, mutex_, changed_, work_, stopping_};  // last: stopped first
};

}  // namespace keel::cqrs

#include "keel/cqrs/projection_runner.h"

#include <algorithm>

#include "keel/core/log.h"
#include "keel/cqrs/errc.h"
#include "keel/pubsub/parking.h"

namespace keel::cqrs {

namespace {

constexpr const char* kCreateCheckpoints =
    "CREATE TABLE IF NOT EXISTS keel_projections (name TEXT PRIMARY KEY, position BIGINT NOT NULL)";
constexpr const char* kSaveCheckpoint =
    "INSERT INTO keel_projections (name, position) VALUES ($1, $2) "
    "ON CONFLICT (name) DO UPDATE SET position = excluded.position";

std::string describe(const RecordedEvent& event) {
  return "event " + std::to_string(event.position) + " (" + std::to_string(event.version) + "@" +
         event.stream + ", " + event.type + ")";
}

// apply() as a Status even when it throws (a JSON field missing, say): a projection's bug must
// stop or skip one event, never the process.
Status apply_safely(const Projection& projection, const RecordedEvent& event, Transaction& tx) {
  try {
    return projection.apply(event, tx);
  } catch (const std::exception& e) {
    return Error(errc::projection_failed, std::string("apply() threw: ") + e.what());
  }
}

// The event a database error names through its statement's tag, if any.
std::optional<std::size_t> failed_event(const Error& error, std::size_t events) {
  if (!error.detail() || *error.detail() < 0 || static_cast<std::size_t>(*error.detail()) >= events)
    return std::nullopt;
  return static_cast<std::size_t>(*error.detail());
}

}  // namespace

Result<std::unique_ptr<ProjectionRunner>> ProjectionRunner::open(EventStore& store,
                                                                 ReadModel& model,
                                                                 Projection projection,
                                                                 Clock& clock,
                                                                 RunnerOptions options) {
  return open_on(std::make_unique<pubsub::EmbeddedLog>(store), nullptr, model,
                 std::move(projection), clock, options);
}

Result<std::unique_ptr<ProjectionRunner>> ProjectionRunner::open(pubsub::LogSource& log,
                                                                 ReadModel& model,
                                                                 Projection projection,
                                                                 Clock& clock,
                                                                 RunnerOptions options) {
  if (projection.on_error == OnError::kPark && !log.can_park()) {
    return Error(errc::invalid_argument,
                 "projection '" + projection.name + "': OnError::kPark needs a log that keeps " +
                     "$keel-projection-" + projection.name + "-parked, and " + log.describe() +
                     " cannot append to $ streams; use kStop or kSkip");
  }
  return open_on(nullptr, &log, model, std::move(projection), clock, options);
}

Result<std::unique_ptr<ProjectionRunner>> ProjectionRunner::open_on(
    std::unique_ptr<pubsub::LogSource> embedded, pubsub::LogSource* log, ReadModel& model,
    Projection projection, Clock& clock, RunnerOptions options) {
  if (!pubsub::valid_name(projection.name)) {
    return Error(errc::invalid_argument, "projection name '" + projection.name +
                                             "': use 1 to 200 letters, digits, '_', '-' or '.'");
  }
  if (!projection.apply) {
    return Error(errc::invalid_argument, "projection '" + projection.name + "' has no apply()");
  }
  if (options.batch == 0) options.batch = 1;
  std::uint64_t position = 0;
  auto set_up = model.transact([&](Transaction& tx) -> Status {
    if (auto ok = tx.exec(kCreateCheckpoints); !ok) return ok;
    if (projection.setup) {
      if (auto ok = projection.setup(tx); !ok) return ok;
    }
    auto saved =
        tx.query("SELECT position FROM keel_projections WHERE name = $1", {projection.name});
    if (!saved) return saved.error();
    if (!saved->empty()) position = static_cast<std::uint64_t>(as_int(saved->front().at(0)));
    return {};
  });
  if (!set_up) {
    return Error(errc::database, "projection '" + projection.name + "': setting up " +
                                     model.describe() + ": " + set_up.error().message());
  }
  pubsub::LogSource& source = log ? *log : *embedded;
  return std::unique_ptr<ProjectionRunner>(new ProjectionRunner(
      std::move(embedded), source, model, std::move(projection), clock, options, position));
}

ProjectionRunner::ProjectionRunner(std::unique_ptr<pubsub::LogSource> embedded,
                                   pubsub::LogSource& log, ReadModel& model, Projection projection,
                                   Clock& clock, RunnerOptions options, std::uint64_t position)
    : embedded_(std::move(embedded)),
      log_(log),
      model_(model),
      projection_(std::move(projection)),
      clock_(clock),
      options_(options),
      read_(position),
      saved_(position) {
  progress_.position = position;
}

void ProjectionRunner::start() {
  {
    std::lock_guard guard(mutex_);
    // Restarted after stopping on a failed event (the projection was fixed): try it again.
    progress_.error.reset();
  }
  follower_.start([this] {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      const bool stopped_on_error = progress_.error && projection_.on_error == OnError::kStop &&
                                    progress_.error->is(errc::projection_failed);
      if (progress_.paused || stopped_on_error || !work_) {
        changed_.wait(lock);
        continue;
      }
      work_ = false;  // before step(): a commit during it sets it again and is not lost
      lock.unlock();
      auto stepped = step();
      lock.lock();
      if (!stepped) {
        log::get("cqrs")->error("projection '{}': {}", projection_.name, stepped.error().message());
        if (!stepped.error().is(errc::projection_failed)) {
          // The database failed: try again after retry_after (or when stopped).
          const TimePoint retry_at = clock_.now() + options_.retry_after;
          keel::wait_until(clock_, changed_, lock, retry_at, [&] { return stopping_; });
        }
        work_ = true;
        continue;
      }
      if (*stepped) work_ = true;  // more may be waiting; otherwise sleep until a commit
    }
  });
}

void ProjectionRunner::stop() { follower_.stop(); }

void ProjectionRunner::pause() {
  std::lock_guard lock(mutex_);
  progress_.paused = true;
}

void ProjectionRunner::resume() {
  std::lock_guard lock(mutex_);
  progress_.paused = false;
  work_ = true;
  changed_.notify_all();
}

Status ProjectionRunner::save_checkpoint(Transaction& tx, std::uint64_t position) {
  tx.set_tag(-1);
  return tx.exec(kSaveCheckpoint, {projection_.name, static_cast<std::int64_t>(position)});
}

Status ProjectionRunner::commit_checkpoint(std::uint64_t position) {
  return model_.transact([&](Transaction& tx) { return save_checkpoint(tx, position); });
}

void ProjectionRunner::advanced(std::uint64_t position, std::uint64_t applied) {
  std::lock_guard lock(mutex_);
  progress_.position = position;
  progress_.applied += applied;
  progress_.error.reset();
  changed_.notify_all();
}

Result<bool> ProjectionRunner::step() {
  std::lock_guard step_lock(step_mutex_);
  auto head = log_.head();
  if (!head) {
    std::lock_guard lock(mutex_);
    progress_.error = head.error();
    return head.error();
  }
  {
    std::lock_guard lock(mutex_);
    progress_.head = *head;
    progress_.live = read_ >= *head;
    if (progress_.live) {
      // The log answers again (a node back up): its error is over.
      if (progress_.error && !progress_.error->is(errc::projection_failed)) progress_.error.reset();
      return false;
    }
  }
  const std::uint64_t from = read_;
  auto page = log_.read(from, projection_.filter, options_.batch);
  if (!page) {
    std::lock_guard lock(mutex_);
    progress_.error = page.error();
    return page.error();
  }
  const std::vector<RecordedEvent>& events = page->events;
  const std::uint64_t to = page->next;
  read_ = to;
  if (events.empty()) {
    // Nothing for this projection: the read model is current up to `to` without a write.
    if (to - saved_ >= options_.idle_checkpoint_every) {
      if (auto ok = commit_checkpoint(to); !ok) {
        read_ = from;
        return ok.error();
      }
      saved_ = to;
    }
    advanced(to, 0);
    return true;
  }
  std::optional<std::size_t> failed;
  auto committed = model_.transact([&](Transaction& tx) -> Status {
    for (std::size_t i = 0; i < events.size(); ++i) {
      tx.set_tag(static_cast<std::int64_t>(i));
      if (auto ok = apply_safely(projection_, events[i], tx); !ok) {
        failed = i;
        return ok;
      }
    }
    return save_checkpoint(tx, to);
  });
  if (committed) {
    saved_ = to;
    advanced(to, events.size());
    return true;
  }
  // Which event failed: the one apply() was running, or the one whose pipelined statement
  // the database refused.
  // A pipelined statement can fail while a later event is being applied: its tag names the
  // event that caused it, which comes first.
  if (auto tag = failed_event(committed.error(), events.size())) {
    failed = failed ? std::min(*failed, *tag) : *tag;
  }
  read_ = from;
  if (!failed) {  // the database itself failed (connection, disk): try the batch again later
    std::lock_guard lock(mutex_);
    progress_.error = committed.error();
    return committed.error();
  }
  if (auto handled = handle_failure(events, *failed, committed.error()); !handled) {
    return handled.error();
  }
  return true;
}

Status ProjectionRunner::handle_failure(const std::vector<RecordedEvent>& events,
                                        std::size_t failed, const Error& error) {
  // Keep what came before the failing event. If one of those fails now (a statement that
  // depends on data, say), it is the failing one instead: the index only goes down.
  Error cause = error;
  while (failed > 0) {
    std::optional<std::size_t> earlier;
    auto kept = model_.transact([&](Transaction& tx) -> Status {
      for (std::size_t i = 0; i < failed; ++i) {
        tx.set_tag(static_cast<std::int64_t>(i));
        if (auto ok = apply_safely(projection_, events[i], tx); !ok) {
          earlier = i;
          return ok;
        }
      }
      return save_checkpoint(tx, events[failed].position);
    });
    if (kept) {
      saved_ = events[failed].position;
      advanced(events[failed].position, failed);
      break;
    }
    if (auto tag = failed_event(kept.error(), failed))
      earlier = earlier ? std::min(*earlier, *tag) : *tag;
    if (!earlier) {  // the database itself failed: the whole batch again later
      std::lock_guard lock(mutex_);
      progress_.error = kept.error();
      return kept.error();
    }
    failed = *earlier;
    cause = kept.error();
  }
  const RecordedEvent& bad = events[failed];
  read_ = bad.position;
  const std::string what =
      "projection '" + projection_.name + "': " + describe(bad) + ": " + cause.message();
  if (projection_.on_error == OnError::kStop) {
    Error stopped(errc::projection_failed, what + "; stopped before it");
    std::lock_guard lock(mutex_);
    progress_.error = stopped;
    return stopped;
  }
  if (projection_.on_error == OnError::kPark) {
    if (auto parked = log_.park(parked_stream(), bad, cause.message()); !parked) {
      return parked.error();
    }
  }
  if (auto ok = commit_checkpoint(bad.position + 1); !ok) return ok;
  saved_ = bad.position + 1;
  read_ = bad.position + 1;
  log::get("cqrs")->warn("{}; {}", what,
                         projection_.on_error == OnError::kPark ? "parked" : "skipped");
  std::lock_guard lock(mutex_);
  ++(projection_.on_error == OnError::kPark ? progress_.parked : progress_.skipped);
  progress_.position = bad.position + 1;
  changed_.notify_all();
  return {};
}

Status ProjectionRunner::catch_up() {
  auto head = log_.head();
  if (!head) return head.error();
  while (progress().position < *head) {
    auto stepped = step();
    if (!stepped) return stepped.error();
    if (!*stepped) break;
  }
  return {};
}

Status ProjectionRunner::rebuild() {
  std::lock_guard step_lock(step_mutex_);
  auto reset = model_.transact([&](Transaction& tx) -> Status {
    if (projection_.reset) {
      if (auto ok = projection_.reset(tx); !ok) return ok;
    }
    return save_checkpoint(tx, 0);
  });
  if (!reset) return reset;
  saved_ = 0;
  read_ = 0;
  std::lock_guard lock(mutex_);
  progress_ = Progress{.paused = progress_.paused};
  work_ = true;
  changed_.notify_all();
  return {};
}

bool ProjectionRunner::wait_for(std::uint64_t position, Duration timeout) {
  const TimePoint deadline = clock_.now() + timeout;
  std::unique_lock lock(mutex_);
  auto settled = [&] {
    return progress_.position > position ||
           (progress_.error && progress_.error->is(errc::projection_failed));
  };
  keel::wait_until(clock_, changed_, lock, deadline, settled);
  return progress_.position > position;
}

Progress ProjectionRunner::progress() const {
  std::lock_guard lock(mutex_);
  Progress copy = progress_;
  copy.head = std::max(copy.head, log_.known_head());
  return copy;
}

std::vector<metrics::CallbackRegistration> ProjectionRunner::export_metrics(
    metrics::Registry& registry) {
  const metrics::Labels labels{{"projection", projection_.name}};
  std::vector<metrics::CallbackRegistration> out;
  auto read = [this](std::uint64_t Progress::*field) {
    return [this, field] { return static_cast<double>(progress().*field); };
  };
  out.push_back(registry.gauge_callback("keel_projection_position",
                                        "Every event below this log position is in the read model",
                                        labels, read(&Progress::position)));
  out.push_back(
      registry.gauge_callback("keel_projection_lag_events",
                              "Log positions between the projection and the head", labels, [this] {
                                const Progress p = progress();
                                return static_cast<double>(p.head - std::min(p.head, p.position));
                              }));
  out.push_back(registry.counter_callback("keel_projection_applied_total", "Events applied", labels,
                                          read(&Progress::applied)));
  out.push_back(registry.counter_callback("keel_projection_skipped_total",
                                          "Events skipped after failing", labels,
                                          read(&Progress::skipped)));
  out.push_back(registry.counter_callback("keel_projection_parked_total",
                                          "Events parked after failing", labels,
                                          read(&Progress::parked)));
  return out;
}

}  // namespace keel::cqrs

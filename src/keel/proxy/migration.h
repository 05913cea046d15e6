// Strangler Fig in keel proxy: a route that migrates from a `legacy` cluster to a `modern` one
// in stages — legacy → shadow → canary (p %) → modern → retired — with sticky canaries, shadow
// copies whose answers are compared with legacy's, and a report of how far the migration has
// come. This file is the logic without I/O: stages and their rules, the sticky split, the
// response diff, and the per-route state the admin API reads and changes (kept in a file
// across restarts). server.cc does the sending.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"

namespace keel::config {
class Node;
}

namespace keel::proxy {

enum class Stage { kLegacy, kShadow, kCanary, kModern, kRetired };
const char* to_string(Stage stage);
std::optional<Stage> parse_stage(std::string_view text);

// Where a canary's stickiness comes from: a header, a cookie, or the client's address.
struct StickyKey {
  enum class Kind { kHeader, kCookie, kClientAddress } kind = Kind::kClientAddress;
  std::string name;  // header (lower case) or cookie name
};

struct DiffConfig {
  std::vector<std::string> compare_headers;    // lower case; compared when present on either
  std::vector<std::string> ignore_json_paths;  // "$.meta.generated_at", "$.items[*].id"
  std::size_t max_body_bytes = 64 * 1024;      // longer answers compare their first bytes
};

// Automatic rollback: over the last `window`, once modern has answered `min_requests` times,
// an error rate (5xx and failures) above `max_error_rate`, a p99 above `max_p99` (more than 1 %
// of answers slower), or — in shadow — a diff rate above `max_diff_rate` moves the route one
// stage back. Zero turns a check off.
struct GuardRails {
  Duration window = 30s;
  std::uint32_t min_requests = 20;
  double max_error_rate = 0;  // 0..1
  Duration max_p99 = Duration::zero();
  double max_diff_rate = 0;  // 0..1
};

// A scheduled canary ramp: +step_percent every `every` while the guard rails hold.
struct Ramp {
  double step_percent = 0;  // 0: no ramp
  Duration every = 5min;
};

struct MigrationConfig {
  std::string legacy;  // cluster names
  std::string modern;
  Stage stage = Stage::kLegacy;  // where a route starts when no saved state says otherwise
  double percent = 0;            // canary share, 0..100
  StickyKey sticky;
  // Shadow copies: only idempotent methods unless allowed, bodies up to max_body_bytes, at most
  // max_in_flight at once per route (more are dropped and counted, never waited for).
  bool mirror_non_idempotent = false;
  std::uint32_t max_in_flight = 64;
  // At `modern`: when modern fails (a 5xx, or no answer) and the request can be replayed,
  // legacy answers instead. Each such answer counts as legacy traffic, which keeps the route
  // from being retired.
  bool fallback_to_legacy = false;
  // Diffy's noise baseline: each shadow copy also goes to legacy a second time, and a field on
  // which the two legacy answers differ (a timestamp, a random id) is noise, not held against
  // modern.
  bool noise_baseline = false;
  DiffConfig diff;
  GuardRails guard;
  Ramp ramp;

  static MigrationConfig read(const config::Node& node);
};

// Sticky canary split: the same key always lands on the same side for a given percentage, and a
// key on modern at p stays on modern at every p' > p.
bool canary_picks_modern(std::string_view key, double percent);

// One side's answer, as far as a diff needs it.
struct Answer {
  unsigned status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
  std::string body;
  bool json = false;  // content-type said so
};

// What differs: "status", "header:<name>", JSON paths such as "$.items[1].price", or "body".
std::vector<std::string> diff_answers(const Answer& legacy, const Answer& modern,
                                      const DiffConfig& config);

// A differing pair kept for a person to look at.
struct DiffSample {
  std::string request_line;
  std::vector<std::string> fields;
  unsigned legacy_status = 0;
  unsigned modern_status = 0;
  std::string legacy_body;  // first 2 KiB
  std::string modern_body;
};

// The live state of one migrating route, shared by every worker.
class MigrationState {
 public:
  MigrationState(std::string route, const MigrationConfig& config, Clock& clock);

  Stage stage() const { return stage_.load(std::memory_order_relaxed); }
  double percent() const { return percent_.load(std::memory_order_relaxed); }
  // Moves to `stage` (with `percent` for a canary). Refused, with the reason, when it would
  // skip ahead to `retired` while legacy still gets traffic, or the percentage is out of range.
  Status set_stage(Stage stage, double percent);

  // An answer to a client (latency to its end); checks the guard rails and the ramp.
  // `routed_at`: the stage when the request was routed (a request routed to legacy before the
  // route reached modern and answered after does not count against retiring legacy).
  void count_answer(bool modern, unsigned status, Duration latency = Duration::zero(),
                    std::optional<Stage> routed_at = std::nullopt);
  // Called (outside any lock) after the stage changed by itself: a rollback or a ramp step.
  void on_change(std::function<void(const std::string& what)> callback);
  // A shadow copy may start (it must call end_mirror()), or is dropped and counted.
  bool begin_mirror();
  void end_mirror();
  // A copy dropped before begin_mirror (the worker had no room to queue it).
  void count_mirror_dropped() { mirror_dropped_.fetch_add(1, std::memory_order_relaxed); }
  // `fields`: where modern differed from legacy, noise already taken out; `noise`: the fields
  // the noise baseline found differing between two legacy answers.
  void record_diff(const std::vector<std::string>& fields, DiffSample sample,
                   const std::vector<std::string>& noise = {});
  void record_mirror_failure();

  // Stage, percent, traffic on each side, diff rates, the most frequent differing fields and
  // the kept samples: what /migration serves.
  std::string report_json() const;
  const std::string& route() const { return route_; }

 private:
  // One bucket of the guard rails' window.
  struct Bucket {
    std::int64_t epoch = -1;
    std::uint64_t modern = 0, modern_failed = 0, modern_slow = 0, compared = 0, differed = 0;
  };
  static constexpr std::size_t kBuckets = 10;
  Bucket& bucket_locked(TimePoint now);
  // Returns what happened ("" when nothing): a rollback or a ramp step.
  std::string check_locked(TimePoint now);

  const std::string route_;
  const std::uint32_t max_in_flight_;
  const GuardRails guard_;
  const Ramp ramp_;
  Clock& clock_;
  std::function<void(const std::string&)> on_change_;
  std::array<Bucket, kBuckets> window_;  // guarded by mutex_
  TimePoint last_ramp_;                  // guarded by mutex_
  std::atomic<std::uint64_t> rollbacks_{0};
  std::string last_rollback_;  // guarded by mutex_
  std::atomic<Stage> stage_;
  std::atomic<double> percent_;
  std::atomic<std::uint64_t> legacy_answers_{0};
  std::atomic<std::uint64_t> modern_answers_{0};
  std::atomic<std::uint64_t> legacy_5xx_{0};
  std::atomic<std::uint64_t> modern_5xx_{0};
  // Legacy answers since the route was last set to `modern`: retiring needs a period of none.
  std::atomic<std::uint64_t> legacy_since_modern_{0};
  std::atomic<std::uint32_t> mirrors_in_flight_{0};
  std::atomic<std::uint64_t> mirrored_{0};
  std::atomic<std::uint64_t> mirror_dropped_{0};
  std::atomic<std::uint64_t> mirror_failed_{0};
  std::atomic<std::uint64_t> matched_{0};
  std::atomic<std::uint64_t> differed_{0};
  mutable std::mutex mutex_;
  std::map<std::string, std::uint64_t> field_counts_;
  std::map<std::string, std::uint64_t> noise_counts_;
  std::vector<DiffSample> samples_;  // the last kMaxSamples
};

// Every migrating route's state, found by route name, kept in `state_file` (when given) so that
// stages survive a restart; a reload keeps the state of routes that stay.
class MigrationStore {
 public:
  // `on_change` (optional) hears each guard-rail rollback and ramp step, as logged; it runs on
  // the thread that made the change.
  MigrationStore(std::string state_file, Clock& clock,
                 std::function<void(const std::string&)> on_change = {})
      : state_file_(std::move(state_file)), clock_(clock), on_change_(std::move(on_change)) {}
  // The state for `route`, created from the config (and the saved stage, if any) the first time.
  std::shared_ptr<MigrationState> state(const std::string& route, const MigrationConfig& config);
  std::shared_ptr<MigrationState> find(const std::string& route) const;
  // Changes a route's stage and saves every route's stage to the state file.
  Status set_stage(const std::string& route, Stage stage, double percent);
  std::string report_json() const;

 private:
  Status save() const;

  std::string state_file_;
  Clock& clock_;
  const std::function<void(const std::string&)> on_change_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<MigrationState>> routes_;
  std::map<std::string, std::pair<Stage, double>> saved_;  // read from the file, once
  bool loaded_ = false;
};

}  // namespace keel::proxy

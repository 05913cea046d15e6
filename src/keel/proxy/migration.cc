#include "keel/proxy/migration.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "keel/core/config.h"
#include "keel/core/file.h"
#include "keel/core/hash.h"
#include "keel/core/log.h"
#include "keel/core/text.h"

namespace keel::proxy {
namespace {

using nlohmann::json;
constexpr std::size_t kMaxSamples = 20;
constexpr std::size_t kSampleBodyBytes = 2048;

const char* const kStageNames[] = {"legacy", "shadow", "canary", "modern", "retired"};

// "$.items[3].id" -> "$.items[*].id", for ignore-list patterns with wildcards.
std::string wildcard_indices(const std::string& path) {
  std::string out;
  out.reserve(path.size());
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '[') {
      std::size_t close = path.find(']', i);
      if (close != std::string::npos) {
        out += "[*]";
        i = close;
        continue;
      }
    }
    out += path[i];
  }
  return out;
}

bool ignored(const std::string& path, const std::vector<std::string>& ignore) {
  if (ignore.empty()) return false;
  if (std::find(ignore.begin(), ignore.end(), path) != ignore.end()) return true;
  return path.find('[') != std::string::npos &&
         std::find(ignore.begin(), ignore.end(), wildcard_indices(path)) != ignore.end();
}

void diff_json(const json& a, const json& b, const std::string& path,
               const std::vector<std::string>& ignore, std::vector<std::string>& out) {
  if (ignored(path, ignore)) return;
  if (a.type() != b.type()) {
    out.push_back(path);
  } else if (a.is_object()) {
    for (const auto& [key, value] : a.items()) {
      const std::string child = path + "." + key;
      if (!b.contains(key)) {
        if (!ignored(child, ignore)) out.push_back(child);
      } else {
        diff_json(value, b[key], child, ignore, out);
      }
    }
    for (const auto& [key, value] : b.items()) {
      const std::string child = path + "." + key;
      if (!a.contains(key) && !ignored(child, ignore)) {
        out.push_back(child);
      }
    }
  } else if (a.is_array()) {
    const std::size_t common = std::min(a.size(), b.size());
    for (std::size_t i = 0; i < common; ++i) {
      diff_json(a[i], b[i], path + "[" + std::to_string(i) + "]", ignore, out);
    }
    if (a.size() != b.size()) out.push_back(path + ".length");
  } else if (a != b) {
    out.push_back(path);
  }
}

std::string header_value(const Answer& answer, const std::string& name) {
  for (const auto& [key, value] : answer.headers) {
    if (key == name) return value;
  }
  return {};
}

}  // namespace

const char* to_string(Stage stage) { return kStageNames[static_cast<int>(stage)]; }

std::optional<Stage> parse_stage(std::string_view text) {
  for (int i = 0; i < 5; ++i) {
    if (text == kStageNames[i]) return static_cast<Stage>(i);
  }
  return std::nullopt;
}

MigrationConfig MigrationConfig::read(const config::Node& node) {
  MigrationConfig c;
  node.expect_only({"legacy", "modern", "stage", "percent", "sticky", "mirror_non_idempotent",
                    "max_in_flight", "noise_baseline", "fallback_to_legacy", "diff", "guard",
                    "ramp"});
  node.read("noise_baseline", c.noise_baseline);
  node.read("fallback_to_legacy", c.fallback_to_legacy);
  if (config::Node guard = node.child("guard"); guard.present()) {
    guard.expect_only(
        {"window_ms", "min_requests", "max_error_rate", "max_p99_ms", "max_diff_rate"});
    guard.read_ms("window_ms", c.guard.window, 10ms, 24h);
    guard.read("min_requests", c.guard.min_requests, 1, 1000000);
    guard.read("max_error_rate", c.guard.max_error_rate, 0.0, 1.0);
    guard.read_ms("max_p99_ms", c.guard.max_p99, 0ms, 3600s);
    guard.read("max_diff_rate", c.guard.max_diff_rate, 0.0, 1.0);
  }
  if (config::Node ramp = node.child("ramp"); ramp.present()) {
    ramp.expect_only({"step_percent", "every_ms"});
    ramp.read("step_percent", c.ramp.step_percent, 0.0, 100.0);
    ramp.read_ms("every_ms", c.ramp.every, 1ms, 24h);
  }
  node.require("legacy");
  node.require("modern");
  node.read("legacy", c.legacy);
  node.read("modern", c.modern);
  std::string stage = to_string(c.stage);
  node.read("stage", stage);
  if (auto parsed = parse_stage(stage)) {
    c.stage = *parsed;
  } else {
    node.fail("stage", "expected legacy, shadow, canary, modern or retired, got \"" + stage + "\"");
  }
  node.read("percent", c.percent, 0.0, 100.0);
  if (config::Node sticky = node.child("sticky"); sticky.present()) {
    sticky.expect_only({"header", "cookie", "client_address"});
    std::string header, cookie;
    bool client_address = false;
    sticky.read("header", header);
    sticky.read("cookie", cookie);
    sticky.read("client_address", client_address);
    if (!header.empty() + !cookie.empty() + client_address != 1) {
      sticky.fail("", "give exactly one of header, cookie or client_address: true");
    } else if (!header.empty()) {
      c.sticky = {StickyKey::Kind::kHeader, ascii_lower(header)};
    } else if (!cookie.empty()) {
      c.sticky = {StickyKey::Kind::kCookie, cookie};
    }
  }
  node.read("mirror_non_idempotent", c.mirror_non_idempotent);
  node.read("max_in_flight", c.max_in_flight, 1, 100000);
  if (config::Node diff = node.child("diff"); diff.present()) {
    diff.expect_only({"compare_headers", "ignore_json_paths", "max_body_bytes"});
    auto read_list = [&](std::string_view key, std::vector<std::string>& out, bool lower) {
      std::string text;
      diff.read(key, text);
      for (auto& word : split_list(text)) out.push_back(lower ? ascii_lower(word) : word);
    };
    read_list("compare_headers", c.diff.compare_headers, true);
    read_list("ignore_json_paths", c.diff.ignore_json_paths, false);
    for (const auto& path : c.diff.ignore_json_paths) {
      if (path.rfind("$", 0) != 0) diff.fail("ignore_json_paths", "paths start with '$': " + path);
    }
    std::int64_t max_body = static_cast<std::int64_t>(c.diff.max_body_bytes);
    diff.read("max_body_bytes", max_body, 0, 16 * 1024 * 1024);
    c.diff.max_body_bytes = static_cast<std::size_t>(max_body);
  }
  if (c.legacy == c.modern && !c.legacy.empty()) {
    node.fail("modern", "legacy and modern must be different clusters");
  }
  return c;
}

bool canary_picks_modern(std::string_view key, double percent) {
  // 10 000 buckets: a bucket below p × 100 goes to modern, so raising p only adds buckets.
  const auto bucket = hash64(key, 0x73747261) % 10000;
  return static_cast<double>(bucket) < percent * 100.0;
}

std::vector<std::string> diff_answers(const Answer& legacy, const Answer& modern,
                                      const DiffConfig& config) {
  std::vector<std::string> fields;
  if (legacy.status != modern.status) fields.emplace_back("status");
  for (const auto& name : config.compare_headers) {
    if (header_value(legacy, name) != header_value(modern, name)) {
      fields.push_back("header:" + name);
    }
  }
  const std::string_view a = std::string_view(legacy.body).substr(0, config.max_body_bytes);
  const std::string_view b = std::string_view(modern.body).substr(0, config.max_body_bytes);
  if (a == b) return fields;  // the common case in a healthy migration: nothing to parse
  if (legacy.json && modern.json) {
    json left = json::parse(a, nullptr, false);
    json right = json::parse(b, nullptr, false);
    if (!left.is_discarded() && !right.is_discarded()) {
      diff_json(left, right, "$", config.ignore_json_paths, fields);
      return fields;
    }
  }
  if (a != b) fields.emplace_back("body");
  return fields;
}

MigrationState::MigrationState(std::string route, const MigrationConfig& config, Clock& clock)
    : route_(std::move(route)),
      max_in_flight_(config.max_in_flight),
      guard_(config.guard),
      ramp_(config.ramp),
      clock_(clock),
      last_ramp_(clock.now()),
      stage_(config.stage),
      percent_(config.percent) {}

void MigrationState::on_change(std::function<void(const std::string&)> callback) {
  std::lock_guard lock(mutex_);
  on_change_ = std::move(callback);
}

MigrationState::Bucket& MigrationState::bucket_locked(TimePoint now) {
  const auto width = std::max<Duration>(guard_.window / kBuckets, 1ms);
  const std::int64_t epoch = now.time_since_epoch() / width;
  Bucket& bucket = window_[static_cast<std::size_t>(epoch) % kBuckets];
  if (bucket.epoch != epoch) bucket = Bucket{.epoch = epoch};
  return bucket;
}

std::string MigrationState::check_locked(TimePoint now) {
  const auto width = std::max<Duration>(guard_.window / kBuckets, 1ms);
  const std::int64_t current = now.time_since_epoch() / width;
  Bucket total;
  for (const auto& bucket : window_) {
    if (bucket.epoch > current - static_cast<std::int64_t>(kBuckets)) {
      total.modern += bucket.modern;
      total.modern_failed += bucket.modern_failed;
      total.modern_slow += bucket.modern_slow;
      total.compared += bucket.compared;
      total.differed += bucket.differed;
    }
  }
  const Stage stage = this->stage();
  std::string breach;
  auto rate = [](std::uint64_t part, std::uint64_t whole) {
    return static_cast<double>(part) / static_cast<double>(whole);
  };
  if ((stage == Stage::kCanary || stage == Stage::kModern) && total.modern >= guard_.min_requests) {
    if (guard_.max_error_rate > 0 &&
        rate(total.modern_failed, total.modern) > guard_.max_error_rate) {
      breach = "modern's error rate " + std::to_string(rate(total.modern_failed, total.modern));
    } else if (guard_.max_p99 > Duration::zero() && rate(total.modern_slow, total.modern) > 0.01) {
      breach = "modern's p99 above " + std::to_string(guard_.max_p99 / 1ms) + " ms";
    }
  } else if (stage == Stage::kShadow && total.compared >= guard_.min_requests &&
             guard_.max_diff_rate > 0 &&
             rate(total.differed, total.compared) > guard_.max_diff_rate) {
    breach = "the diff rate " + std::to_string(rate(total.differed, total.compared));
  }
  if (!breach.empty()) {
    const Stage back = static_cast<Stage>(static_cast<int>(stage) - 1);
    stage_ = back;
    percent_ = back == Stage::kCanary ? std::min(percent(), 50.0) : 0.0;
    if (back == Stage::kCanary && percent_ == 0) percent_ = 50.0;
    window_ = {};  // the next stage is judged on its own traffic
    last_ramp_ = now;
    ++rollbacks_;
    last_rollback_ = std::string(to_string(stage)) + " -> " + to_string(back) + ": " + breach;
    return "rolled back " + route_ + " " + last_rollback_;
  }
  if (stage == Stage::kCanary && ramp_.step_percent > 0 && percent() < 100 &&
      now - last_ramp_ >= ramp_.every) {
    last_ramp_ = now;
    percent_ = std::min(100.0, percent() + ramp_.step_percent);
    return "ramped " + route_ + " canary to " + std::to_string(percent()) + "%";
  }
  return {};
}

Status MigrationState::set_stage(Stage stage, double percent) {
  if (!(percent >= 0 && percent <= 100)) {
    return Error(errc::invalid_argument, "percent must be from 0 to 100");
  }
  const Stage now = this->stage();
  if (stage == Stage::kRetired) {
    if (now != Stage::kModern && now != Stage::kRetired) {
      return Error(errc::invalid_argument,
                   "route " + route_ + " is at " + to_string(now) +
                       ": only a route at modern can be retired (legacy still gets traffic)");
    }
    if (const auto legacy = legacy_since_modern_.load(); legacy > 0) {
      return Error(errc::invalid_argument,
                   "route " + route_ + ": legacy answered " + std::to_string(legacy) +
                       " requests since the route reached modern (fallbacks); it cannot be "
                       "retired while traffic still reaches it");
    }
  }
  if (stage == Stage::kModern) legacy_since_modern_ = 0;  // a fresh period to watch legacy
  std::lock_guard lock(mutex_);
  percent_ = stage == Stage::kCanary ? percent : (stage >= Stage::kModern ? 100.0 : 0.0);
  stage_ = stage;
  window_ = {};  // the new stage is judged on its own traffic
  last_ramp_ = clock_.now();
  return {};
}

void MigrationState::count_answer(bool modern, unsigned status, Duration latency,
                                  std::optional<Stage> routed_at) {
  (modern ? modern_answers_ : legacy_answers_).fetch_add(1, std::memory_order_relaxed);
  if (status >= 500) (modern ? modern_5xx_ : legacy_5xx_).fetch_add(1, std::memory_order_relaxed);
  if (!modern && routed_at.value_or(stage()) >= Stage::kModern) legacy_since_modern_.fetch_add(1);
  // Outside a canary (whose ramp runs on any answer), a legacy answer changes nothing the
  // guard rails judge (the diff rate is judged in record_diff): the client path of legacy and
  // shadow routes takes no lock.
  if (!modern && stage() != Stage::kCanary) return;
  std::string changed;
  std::function<void(const std::string&)> callback;
  {
    std::lock_guard lock(mutex_);
    const TimePoint now = clock_.now();
    if (modern) {
      Bucket& bucket = bucket_locked(now);
      ++bucket.modern;
      bucket.modern_failed += status >= 500 || status == 0;
      bucket.modern_slow += guard_.max_p99 > Duration::zero() && latency > guard_.max_p99;
    }
    changed = check_locked(now);
    if (!changed.empty()) callback = on_change_;
  }
  if (callback) callback(changed);
}

bool MigrationState::begin_mirror() {
  if (mirrors_in_flight_.fetch_add(1) >= max_in_flight_) {
    mirrors_in_flight_.fetch_sub(1);
    mirror_dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  mirrored_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void MigrationState::end_mirror() { mirrors_in_flight_.fetch_sub(1); }

void MigrationState::record_mirror_failure() {
  mirror_failed_.fetch_add(1, std::memory_order_relaxed);
}

void MigrationState::record_diff(const std::vector<std::string>& fields, DiffSample sample,
                                 const std::vector<std::string>& noise) {
  (fields.empty() ? matched_ : differed_).fetch_add(1, std::memory_order_relaxed);
  std::string changed;
  std::function<void(const std::string&)> callback;
  {
    std::lock_guard lock(mutex_);
    const TimePoint now = clock_.now();
    Bucket& bucket = bucket_locked(now);
    ++bucket.compared;
    bucket.differed += !fields.empty();
    for (const auto& field : noise) ++noise_counts_[field];
    if (!fields.empty()) {
      for (const auto& field : fields) ++field_counts_[field];
      sample.legacy_body.resize(std::min(sample.legacy_body.size(), kSampleBodyBytes));
      sample.modern_body.resize(std::min(sample.modern_body.size(), kSampleBodyBytes));
      if (samples_.size() == kMaxSamples) samples_.erase(samples_.begin());
      samples_.push_back(std::move(sample));
    }
    changed = check_locked(now);
    if (!changed.empty()) callback = on_change_;
  }
  if (callback) callback(changed);
}

std::string MigrationState::report_json() const {
  const double legacy = static_cast<double>(legacy_answers_.load());
  const double modern = static_cast<double>(modern_answers_.load());
  const double compared = static_cast<double>(matched_.load() + differed_.load());
  json fields = json::array();
  json samples = json::array();
  json noise = json::object();
  std::string last_rollback;
  {
    std::lock_guard lock(mutex_);
    last_rollback = last_rollback_;
    std::vector<std::pair<std::uint64_t, std::string>> ranked;
    for (const auto& [field, count] : field_counts_) ranked.emplace_back(count, field);
    std::sort(ranked.rbegin(), ranked.rend());
    for (std::size_t i = 0; i < ranked.size() && i < 10; ++i) {
      fields.push_back({{"field", ranked[i].second}, {"count", ranked[i].first}});
    }
    for (const auto& [field, count] : noise_counts_) noise[field] = count;
    for (const auto& s : samples_) {
      samples.push_back({{"request", s.request_line},
                         {"fields", s.fields},
                         {"legacy_status", s.legacy_status},
                         {"modern_status", s.modern_status},
                         {"legacy_body", s.legacy_body},
                         {"modern_body", s.modern_body}});
    }
  }
  json report = {
      {"route", route_},
      {"stage", to_string(stage())},
      {"percent", percent()},
      {"legacy_answers", legacy_answers_.load()},
      {"modern_answers", modern_answers_.load()},
      {"modern_share", legacy + modern > 0 ? modern / (legacy + modern) : 0.0},
      {"legacy_5xx", legacy_5xx_.load()},
      {"modern_5xx", modern_5xx_.load()},
      {"legacy_answers_since_modern", legacy_since_modern_.load()},
      {"mirrored", mirrored_.load()},
      {"mirror_dropped", mirror_dropped_.load()},
      {"mirror_failed", mirror_failed_.load()},
      {"matched", matched_.load()},
      {"differed", differed_.load()},
      {"diff_rate", compared > 0 ? static_cast<double>(differed_.load()) / compared : 0.0},
      {"rollbacks", rollbacks_.load()},
      {"last_rollback", last_rollback},
      {"top_differing_fields", fields},
      {"noise_fields", noise},
      {"samples", samples}};
  return report.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::shared_ptr<MigrationState> MigrationStore::state(const std::string& route,
                                                      const MigrationConfig& config) {
  std::lock_guard lock(mutex_);
  if (!loaded_) {
    loaded_ = true;
    std::ifstream file(state_file_);
    if (file) {
      json saved = json::parse(file, nullptr, false);
      if (saved.is_object()) {
        for (const auto& [name, entry] : saved.items()) {
          auto stage = parse_stage(entry.value("stage", std::string()));
          if (stage) saved_[name] = {*stage, entry.value("percent", 0.0)};
        }
      }
    }
  }
  auto& slot = routes_[route];
  if (!slot) {
    slot = std::make_shared<MigrationState>(route, config, clock_);
    if (auto it = saved_.find(route); it != saved_.end()) {
      (void)slot->set_stage(it->second.first, it->second.second);
    }
    // A rollback or a ramp step is logged and saved like an operator's change.
    slot->on_change([this](const std::string& what) {
      log::get("proxy")->warn("migration: {}", what);
      if (on_change_) on_change_(what);
      (void)save();
    });
  }
  return slot;
}

std::shared_ptr<MigrationState> MigrationStore::find(const std::string& route) const {
  std::lock_guard lock(mutex_);
  auto it = routes_.find(route);
  return it == routes_.end() ? nullptr : it->second;
}

Status MigrationStore::set_stage(const std::string& route, Stage stage, double percent) {
  auto state = find(route);
  if (!state) return Error(errc::invalid_argument, "no migrating route is named " + route);
  if (auto status = state->set_stage(stage, percent); !status) return status;
  return save();
}

Status MigrationStore::save() const {
  if (state_file_.empty()) return {};
  json out = json::object();
  {
    std::lock_guard lock(mutex_);
    for (const auto& [name, state] : routes_) {
      out[name] = {{"stage", to_string(state->stage())}, {"percent", state->percent()}};
    }
  }
  // A crash (or a power loss) leaves the old file or the new one, never half of one.
  if (auto failed = write_file_atomically(state_file_, out.dump(2) + "\n")) {
    return Error(errc::io_error, failed->message());
  }
  return {};
}

std::string MigrationStore::report_json() const {
  std::lock_guard lock(mutex_);
  std::string out = "[";
  for (const auto& [name, state] : routes_) {
    if (out.size() > 1) out += ",";
    out += state->report_json();
  }
  return out + "]";
}

}  // namespace keel::proxy

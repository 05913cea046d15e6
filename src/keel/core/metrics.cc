#include "keel/core/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "keel/core/check.h"

namespace keel::metrics {
namespace {

bool valid_name(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    bool digit = c >= '0' && c <= '9';
    if (!letter && !(digit && i > 0)) return false;
  }
  return true;
}

void append_escaped(std::string& out, std::string_view text, bool quote) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (quote && c == '"') {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

void append_number(std::string& out, double value) {
  if (std::isnan(value)) {
    out += "NaN";
  } else if (std::isinf(value)) {
    out += value > 0 ? "+Inf" : "-Inf";
  } else if (value == std::floor(value) && std::fabs(value) < 1e15) {
    out += std::to_string(static_cast<long long>(value));
  } else {
    // The shortest text that reads back as the same double.
    char buffer[32];
    for (int precision = 1; precision <= 17; ++precision) {
      std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
      if (std::strtod(buffer, nullptr) == value) break;
    }
    out += buffer;
  }
}

void append_labels(std::string& out, const Labels& labels, const char* extra_name = nullptr,
                   const std::string& extra_value = {}) {
  if (labels.empty() && extra_name == nullptr) return;
  out += '{';
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += name;
    out += "=\"";
    append_escaped(out, value, true);
    out += '"';
  }
  if (extra_name != nullptr) {
    if (!first) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void atomic_add(std::atomic<double>& target, double delta) {
  double current = target.load(std::memory_order_relaxed);
  while (!target.compare_exchange_weak(current, current + delta, std::memory_order_relaxed)) {
  }
}

}  // namespace

std::uint64_t Counter::value() const {
  std::uint64_t total = 0;
  for (const auto& stripe : stripes_) total += stripe.value.load(std::memory_order_relaxed);
  return total;
}

void Gauge::add(double delta) { atomic_add(value_, delta); }

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(new std::atomic<std::uint64_t>[upper_bounds_.size() + 1]) {
  KEEL_CHECK(std::is_sorted(upper_bounds_.begin(), upper_bounds_.end()),
             "histogram bounds must be ascending");
  for (std::size_t i = 0; i <= upper_bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double value) {
  auto bucket = static_cast<std::size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, value);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts.push_back(running);
  }
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> Histogram::latency_seconds_bounds() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

CallbackRegistration& CallbackRegistration::operator=(CallbackRegistration&& other) noexcept {
  if (this != &other) {
    reset();
    registry_ = std::exchange(other.registry_, nullptr);
    id_ = std::exchange(other.id_, 0);
  }
  return *this;
}

void CallbackRegistration::reset() {
  if (registry_ != nullptr) registry_->remove_callback(id_);
  registry_ = nullptr;
  id_ = 0;
}

Registry::Series& Registry::series_for(std::string_view name, std::string_view help, Type type,
                                       const Labels& labels) {
  KEEL_CHECK(valid_name(name, true), std::string(name).c_str());
  for (const auto& label : labels) {
    KEEL_CHECK(valid_name(label.first, false) && label.first.rfind("__", 0) != 0,
               label.first.c_str());
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}}).first;
  }
  KEEL_CHECK(it->second.type == type, "metric registered again with another type");
  return it->second.series[labels];
}

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Series& series = series_for(name, help, Type::kCounter, labels);
  if (!series.counter) series.counter = std::make_unique<Counter>();
  return *series.counter;
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Series& series = series_for(name, help, Type::kGauge, labels);
  if (!series.gauge) series.gauge = std::make_unique<Gauge>();
  return *series.gauge;
}

Histogram& Registry::histogram(std::string_view name, std::string_view help,
                               std::vector<double> upper_bounds, const Labels& labels) {
  std::lock_guard lock(mutex_);
  Series& series = series_for(name, help, Type::kHistogram, labels);
  if (!series.histogram) series.histogram = std::make_unique<Histogram>(std::move(upper_bounds));
  return *series.histogram;
}

CallbackRegistration Registry::gauge_callback(std::string_view name, std::string_view help,
                                              const Labels& labels, std::function<double()> read) {
  return add_callback(name, help, Type::kGauge, labels, std::move(read));
}

CallbackRegistration Registry::counter_callback(std::string_view name, std::string_view help,
                                                const Labels& labels,
                                                std::function<double()> read) {
  return add_callback(name, help, Type::kCounter, labels, std::move(read));
}

CallbackRegistration Registry::add_callback(std::string_view name, std::string_view help, Type type,
                                            const Labels& labels, std::function<double()> read) {
  std::lock_guard lock(mutex_);
  Series& series = series_for(name, help, type, labels);
  std::uint64_t id = next_callback_id_++;
  series.callbacks.emplace(id, std::move(read));
  callback_owner_.emplace(id, std::make_pair(std::string(name), labels));
  return CallbackRegistration(this, id);
}

void Registry::remove_callback(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto owner = callback_owner_.find(id);
  if (owner == callback_owner_.end()) return;
  auto family = families_.find(owner->second.first);
  if (family != families_.end()) {
    auto series = family->second.series.find(owner->second.second);
    if (series != family->second.series.end()) {
      series->second.callbacks.erase(id);
      const Series& s = series->second;
      if (s.callbacks.empty() && !s.gauge && !s.counter && !s.histogram) {
        family->second.series.erase(series);
      }
    }
  }
  callback_owner_.erase(owner);
}

std::string Registry::render_prometheus() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    if (family.series.empty()) continue;
    out += "# HELP " + name + ' ';
    append_escaped(out, family.help, false);
    out += "\n# TYPE " + name + ' ';
    out += family.type == Type::kCounter ? "counter"
           : family.type == Type::kGauge ? "gauge"
                                         : "histogram";
    out += '\n';
    for (const auto& [labels, series] : family.series) {
      if (series.histogram) {
        Histogram::Snapshot snapshot = series.histogram->snapshot();
        for (std::size_t i = 0; i <= snapshot.upper_bounds.size(); ++i) {
          std::string bound = "+Inf";
          if (i < snapshot.upper_bounds.size()) {
            bound.clear();
            append_number(bound, snapshot.upper_bounds[i]);
          }
          out += name + "_bucket";
          append_labels(out, labels, "le", bound);
          out += ' ' + std::to_string(snapshot.cumulative_counts[i]) + '\n';
        }
        out += name + "_sum";
        append_labels(out, labels);
        out += ' ';
        append_number(out, snapshot.sum);
        out += '\n' + name + "_count";
        append_labels(out, labels);
        out += ' ' + std::to_string(snapshot.count) + '\n';
        continue;
      }
      out += name;
      append_labels(out, labels);
      out += ' ';
      if (series.counter) {
        out += std::to_string(series.counter->value());
      } else if (!series.callbacks.empty()) {
        append_number(out, series.callbacks.rbegin()->second());
      } else {
        append_number(out, series.gauge->value());
      }
      out += '\n';
    }
  }
  return out;
}

Registry& Registry::global() {
  static Registry registry;
  return registry;
}

}  // namespace keel::metrics

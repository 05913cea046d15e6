// A metrics registry: counters, gauges and histograms, grouped in families by name and told
// apart by labels, exposed in the Prometheus text format (version 0.0.4).
//
// Registration takes a lock and belongs at set-up; the returned references stay valid for the
// registry's lifetime and are updated without locks. Counters are striped over cache lines so
// threads incrementing the same counter do not contend.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "keel/core/thread_stripe.h"

namespace keel::metrics {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t amount = 1) {
    stripes_[thread_stripe_index() % kStripes].value.fetch_add(amount, std::memory_order_relaxed);
  }
  std::uint64_t value() const;

 private:
  static constexpr std::size_t kStripes = 8;
  struct alignas(kNoFalseSharing) Stripe {
    std::atomic<std::uint64_t> value{0};
  };
  std::array<Stripe, kStripes> stripes_;
};

class Gauge {
 public:
  void set(double value) { value_.store(value, std::memory_order_relaxed); }
  void add(double delta);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Cumulative histogram with fixed upper bounds (Prometheus `le`); a +Inf bucket is implied.
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);

  void observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<std::uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const;

  // Bounds in seconds from 100 µs to 10 s, for request latencies.
  static std::vector<double> latency_seconds_bounds();

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // per bucket, not cumulative
  std::atomic<double> sum_{0.0};
};

class Registry;

// Keeps a callback gauge registered; unregisters it when destroyed.
class CallbackRegistration {
 public:
  CallbackRegistration() = default;
  CallbackRegistration(Registry* registry, std::uint64_t id) : registry_(registry), id_(id) {}
  CallbackRegistration(CallbackRegistration&& other) noexcept { *this = std::move(other); }
  CallbackRegistration& operator=(CallbackRegistration&& other) noexcept;
  ~CallbackRegistration() { reset(); }
  void reset();

 private:
  Registry* registry_ = nullptr;
  std::uint64_t id_ = 0;
};

class Registry {
 public:
  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*. A name
  // registered again with the same labels returns the same metric; with another type or help,
  // or with invalid names, the call aborts (a programming error).
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  Histogram& histogram(std::string_view name, std::string_view help,
                       std::vector<double> upper_bounds, const Labels& labels = {});
  // A gauge computed at exposition time. `read` runs under the registry's lock: it must not
  // call back into the registry.
  [[nodiscard]] CallbackRegistration gauge_callback(std::string_view name, std::string_view help,
                                                    const Labels& labels,
                                                    std::function<double()> read);

  // A counter read at exposition time, for objects that keep their own monotonic counts.
  [[nodiscard]] CallbackRegistration counter_callback(std::string_view name, std::string_view help,
                                                      const Labels& labels,
                                                      std::function<double()> read);

  std::string render_prometheus() const;

  // The process-wide registry the `keel` binary exposes.
  static Registry& global();

 private:
  friend class CallbackRegistration;
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::map<std::uint64_t, std::function<double()>> callbacks;
  };
  struct Family {
    Type type;
    std::string help;
    std::map<Labels, Series> series;
  };
  CallbackRegistration add_callback(std::string_view name, std::string_view help, Type type,
                                    const Labels& labels, std::function<double()> read);
  Series& series_for(std::string_view name, std::string_view help, Type type, const Labels& labels);
  void remove_callback(std::uint64_t id);

  mutable std::mutex mutex_;
  std::map<std::string, Family, std::less<>> families_;
  std::map<std::uint64_t, std::pair<std::string, Labels>> callback_owner_;
  std::uint64_t next_callback_id_ = 1;
};

}  // namespace keel::metrics

// What the benchmark programs share: the wall clock they time with, and percentiles.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace keel::bench {

using Wall = std::chrono::steady_clock;

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Wall::now().time_since_epoch())
      .count();
}

inline double seconds_since(Wall::time_point start) {
  return std::chrono::duration<double>(Wall::now() - start).count();
}

// The value at fraction `p` (0..1) of `sorted`, which is sorted already (sort once, ask many);
// 0 when empty.
inline double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1,
                         static_cast<std::size_t>(p * static_cast<double>(sorted.size())))];
}

// A benchmark's last line: every figure in one JSON object (the names carry their units), with
// `digits` significant digits.
inline void print_figures_line(const std::map<std::string, double>& figures, int digits = 6) {
  std::string json = "{";
  for (const auto& [name, value] : figures) {
    char entry[240];
    std::snprintf(entry, sizeof entry, "%s\"%s\":%.*g", json.size() > 1 ? "," : "", name.c_str(),
                  digits, value);
    json += entry;
  }
  std::printf("%s}\n", json.c_str());
  std::fflush(stdout);
}

}  // namespace keel::bench

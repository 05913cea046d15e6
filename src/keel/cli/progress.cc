#include "keel/cli/progress.h"

#include <algorithm>
#include <cstdio>

namespace keel::cli {

std::string progress_bar(const cqrs::Progress& progress, int width) {
  const double share = progress.head == 0 ? 1.0
                                          : std::min(1.0, static_cast<double>(progress.position) /
                                                              static_cast<double>(progress.head));
  const int filled = static_cast<int>(share * width);
  std::string bar = "[" + std::string(static_cast<std::size_t>(filled), '#') +
                    std::string(static_cast<std::size_t>(width - filled), '-') + "] ";
  char numbers[96];
  std::snprintf(numbers, sizeof numbers, "%3d%%  %llu/%llu", static_cast<int>(share * 100),
                static_cast<unsigned long long>(progress.position),
                static_cast<unsigned long long>(progress.head));
  return bar + numbers;
}

}  // namespace keel::cli

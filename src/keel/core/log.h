// Logging through spdlog: one named logger per area ("resilience", "proxy", ...), all writing
// to stderr with the same format and level.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string_view>

#include "keel/core/result.h"

namespace keel::log {

// The logger for `area`, created on first use. Thread-safe.
std::shared_ptr<spdlog::logger> get(std::string_view area);

// Sets the level of every logger, present and future: trace, debug, info, warn, error, off.
Status set_level(std::string_view level);

}  // namespace keel::log

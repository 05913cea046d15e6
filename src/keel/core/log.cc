#include "keel/core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <mutex>
#include <string>

namespace keel::log {
namespace {

std::mutex& registry_mutex() {
  static std::mutex mutex;
  return mutex;
}

spdlog::level::level_enum& current_level() {
  static spdlog::level::level_enum level = spdlog::level::info;
  return level;
}

}  // namespace

std::shared_ptr<spdlog::logger> get(std::string_view area) {
  std::lock_guard lock(registry_mutex());
  std::string name(area);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
  logger->set_level(current_level());
  return logger;
}

Status set_level(std::string_view level) {
  auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") {
    return Error(errc::invalid_argument, "unknown log level '" + std::string(level) +
                                             "' (expected trace, debug, info, warn, error or off)");
  }
  std::lock_guard lock(registry_mutex());
  current_level() = parsed;
  spdlog::set_level(parsed);
  return {};
}

}  // namespace keel::log

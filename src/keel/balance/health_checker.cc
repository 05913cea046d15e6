#include "keel/balance/health_checker.h"

#include <algorithm>
#include <charconv>

#include "keel/core/text.h"

namespace keel::balance {

HealthCheckConfig HealthCheckConfig::read(const config::Node& node) {
  HealthCheckConfig c;
  node.read("path", c.path);
  if (c.path.empty() || c.path[0] != '/') node.fail("path", "must start with '/'");
  node.read_ms("interval_ms", c.interval, 1ms, 1h);
  node.read("jitter_percent", c.jitter_percent, 0.0, 100.0);
  node.read_ms("timeout_ms", c.timeout, 1ms, 1h);
  node.read("healthy_threshold", c.healthy_threshold, 1, 100);
  node.read("unhealthy_threshold", c.unhealthy_threshold, 1, 100);
  node.read("method", c.method);
  if (c.method != "GET" && c.method != "HEAD" && c.method != "OPTIONS") {
    node.fail("method", "expected GET, HEAD or OPTIONS (a check must not change anything), got \"" +
                            c.method + "\"");
  }
  node.read("host", c.host);
  if (c.host.find_first_of(" \t\r\n") != std::string::npos) {
    node.fail("host", "must not contain spaces or line breaks");
  }
  std::string statuses;
  node.read("expected_statuses", statuses);
  if (!statuses.empty()) {
    c.expected_statuses.clear();
    auto number = [](std::string_view text, unsigned& out) {
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
      return ec == std::errc() && end == text.data() + text.size() && out >= 100 && out <= 599;
    };
    for (const std::string& item : split_list(statuses)) {
      const std::size_t dash = item.find('-');
      unsigned low = 0, high = 0;
      const bool ok = dash == std::string::npos
                          ? number(item, low) && number(item, high)
                          : number(std::string_view(item).substr(0, dash), low) &&
                                number(std::string_view(item).substr(dash + 1), high) &&
                                low <= high;
      if (!ok) {
        node.fail("expected_statuses",
                  "expected statuses or ranges from 100 to 599 such as "
                  "\"200-299,404\", got \"" +
                      item + "\"");
      } else {
        c.expected_statuses.emplace_back(low, high);
      }
    }
  }
  node.expect_only({"path", "method", "host", "expected_statuses", "interval_ms", "jitter_percent",
                    "timeout_ms", "healthy_threshold", "unhealthy_threshold"});
  return c;
}

bool HealthCheckConfig::passes(unsigned status) const {
  return std::any_of(expected_statuses.begin(), expected_statuses.end(), [&](const auto& range) {
    return status >= range.first && status <= range.second;
  });
}

HealthChecker::HealthChecker(EndpointSet& endpoints, HealthCheckConfig config, Random& random)
    : endpoints_(endpoints), config_(config), random_(random), probes_(endpoints.size()) {
  const TimePoint now = endpoints_.clock().now();
  for (auto& probe : probes_) {
    probe.next = now + Duration(static_cast<std::int64_t>(
                           random_.uniform01() * static_cast<double>(config_.interval.count())));
  }
}

Duration HealthChecker::jittered_interval() {
  double jitter = random_.uniform01() * config_.jitter_percent / 100.0;
  return config_.interval + Duration(static_cast<std::int64_t>(
                                jitter * static_cast<double>(config_.interval.count())));
}

std::vector<std::size_t> HealthChecker::due() {
  const TimePoint now = endpoints_.clock().now();
  std::vector<std::size_t> result;
  for (std::size_t i = 0; i < probes_.size(); ++i) {
    Probe& probe = probes_[i];
    if (probe.in_flight || probe.next > now) continue;
    probe.in_flight = true;
    probe.next = now + jittered_interval();
    result.push_back(i);
  }
  return result;
}

TimePoint HealthChecker::next_due() const {
  TimePoint next = TimePoint::max();
  for (const auto& probe : probes_) {
    if (!probe.in_flight) next = std::min(next, probe.next);
  }
  return next;
}

std::optional<HealthChecker::Change> HealthChecker::record(std::size_t i, bool passed) {
  Probe& probe = probes_[i];
  probe.in_flight = false;
  const bool healthy = endpoints_[i].healthy;
  if (passed) {
    probe.failures = 0;
    ++probe.passes;
    if (!healthy && probe.passes >= config_.healthy_threshold) {
      endpoints_.set_healthy(i, true);
      return Change{i, true};
    }
  } else {
    probe.passes = 0;
    ++probe.failures;
    if (healthy && probe.failures >= config_.unhealthy_threshold) {
      endpoints_.set_healthy(i, false);
      return Change{i, false};
    }
  }
  return std::nullopt;
}

}  // namespace keel::balance

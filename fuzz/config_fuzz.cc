// Feeds arbitrary bytes to the YAML config loader and every resilience policy's config reader:
// any input must give a config or an error, never a crash or a hang.
#include <cstdint>
#include <string_view>

#include "keel/core/config.h"
#include "keel/resilience/adaptive_limiter.h"
#include "keel/resilience/bulkhead.h"
#include "keel/resilience/circuit_breaker.h"
#include "keel/resilience/rate_limiter.h"
#include "keel/resilience/retry.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace keel::resilience;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto document = keel::config::Document::parse(text, "fuzz.yaml");
  if (!document) return 0;
  keel::config::Node root = document->root();
  (void)CircuitBreakerConfig::read(root.child("circuit_breaker"));
  (void)SemaphoreBulkhead::read_config(root.child("bulkhead"));
  (void)ThreadPoolBulkhead::read_config(root.child("thread_pool"));
  (void)RetryPolicy::read_config(root.child("retry"));
  (void)RetryBudget::read_config(root.child("retry_budget"));
  (void)TokenBucket::read_config(root.child("token_bucket"));
  (void)SlidingWindowLimiter::read_config(root.child("sliding_window"));
  (void)LimitAlgorithm::make("gradient", root.child("gradient"));
  for (const auto& [key, node] : root.entries()) {
    std::int64_t integer = 0;
    double number = 0;
    std::string text_value;
    bool flag = false;
    node.read("a", integer, 0, 10);
    node.read("b", number, 0.0, 1.0);
    node.read("c", text_value);
    node.read("d", flag);
    node.read_choice("e", {"x", "y"});
    for (const auto& item : node.items()) item.read("f", integer);
  }
  auto status = document->status();
  // A config that reads without errors must also pass the breaker's own validation.
  if (status.ok()) {
    auto breaker = CircuitBreakerConfig::read(root.child("circuit_breaker"));
    if (!breaker.validate().ok()) __builtin_trap();
  }
  return 0;
}

#include "keel/resilience/breaker_registry.h"

#include <gtest/gtest.h>

namespace keel::resilience {
namespace {

BreakerRegistry::Options options() {
  BreakerRegistry::Options o;
  o.defaults.window_size = 4;
  o.defaults.minimum_calls = 4;
  o.idle_ttl = 60s;
  o.max_breakers = 3;
  return o;
}

TEST(BreakerRegistry, SameNameGivesTheSameBreaker) {
  ManualClock clock;
  BreakerRegistry registry(clock, options());
  auto a = registry.get("a");
  auto again = registry.get("a");
  auto b = registry.get("b");
  ASSERT_TRUE(a.ok() && again.ok() && b.ok());
  EXPECT_EQ(a->get(), again->get());
  EXPECT_NE(a->get(), b->get());
  EXPECT_EQ((*a)->name(), "a");
  EXPECT_EQ(registry.size(), 2u);
}

TEST(BreakerRegistry, EvictsIdleClosedBreakersButNeverOpenOrHeldOnes) {
  ManualClock clock;
  BreakerRegistry registry(clock, options());
  {
    auto idle = registry.get("idle");
    auto open = registry.get("open");
    ASSERT_TRUE(idle.ok() && open.ok());
    (*open)->transition_to_open();
  }
  auto held = registry.get("held");
  ASSERT_TRUE(held.ok());
  clock.advance(30s);
  EXPECT_EQ(registry.evict_idle(), 0u) << "not idle long enough";
  clock.advance(31s);
  EXPECT_EQ(registry.evict_idle(), 1u);
  EXPECT_EQ(registry.size(), 2u);  // "open" and "held" stay
}

TEST(BreakerRegistry, FullRegistryEvictsOrRefuses) {
  ManualClock clock;
  BreakerRegistry registry(clock, options());
  auto a = registry.get("a");
  auto b = registry.get("b");
  auto c = registry.get("c");
  auto refused = registry.get("d");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(refused.error().is(errc::bulkhead_full));
  EXPECT_NE(refused.error().message().find("max_breakers"), std::string::npos);

  a = Error(keel::errc::invalid_argument, "dropped");  // release "a"
  clock.advance(61s);
  auto d = registry.get("d");
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(registry.size(), 3u);
}

TEST(BreakerRegistry, BindsCreatedBreakersToMetrics) {
  ManualClock clock;
  metrics::Registry metrics;
  auto o = options();
  o.metrics = &metrics;
  BreakerRegistry registry(clock, o);
  auto breaker = registry.get("orders");
  ASSERT_TRUE(breaker.ok());
  EXPECT_NE(metrics.render_prometheus().find("breaker=\"orders\""), std::string::npos);
}

}  // namespace
}  // namespace keel::resilience

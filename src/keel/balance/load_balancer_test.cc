#include "keel/balance/load_balancer.h"

#include <gtest/gtest.h>

#include <map>

#include "keel/core/hash.h"

namespace keel::balance {
namespace {

struct Fixture {
  explicit Fixture(std::vector<EndpointConfig> endpoints, std::string policy = "round_robin",
                   std::uint64_t seed = 1)
      : random(seed), set(std::move(endpoints), {}, clock) {
    config.policy = std::move(policy);
    auto made = make_load_balancer(config, set, random);
    EXPECT_TRUE(made.ok()) << made.error().message();
    balancer = std::move(made).value();
  }
  std::size_t pick(PickContext context = {}) {
    auto chosen = balancer->pick(context);
    EXPECT_TRUE(chosen.has_value());
    return chosen.value_or(999);
  }

  ManualClock clock;
  Random random;
  EndpointSet set;
  PolicyConfig config;
  std::unique_ptr<LoadBalancer> balancer;
};

std::vector<EndpointConfig> equal(std::size_t n) {
  std::vector<EndpointConfig> endpoints;
  for (std::size_t i = 0; i < n; ++i) endpoints.push_back({"10.0.0." + std::to_string(i), 1});
  return endpoints;
}

TEST(RoundRobin, SmoothWeightedSequenceIsExact) {
  Fixture f({{"a", 5}, {"b", 1}, {"c", 1}});
  std::string sequence;
  for (int i = 0; i < 14; ++i) sequence += static_cast<char>('a' + f.pick());
  EXPECT_EQ(sequence, "aabacaaaabacaa") << "nginx's smooth WRR: no burst of five a's";
}

TEST(RoundRobin, EqualWeightsRotateAndSkipIneligible) {
  Fixture f(equal(4));
  f.set.set_healthy(2, false);
  std::vector<std::size_t> picks;
  for (int i = 0; i < 6; ++i) picks.push_back(f.pick());
  EXPECT_EQ(picks, (std::vector<std::size_t>{0, 1, 3, 0, 1, 3}));
}

TEST(RoundRobin, SlowStartGivesANewEndpointLessTraffic) {
  ManualClock clock;
  Random random(3);
  EndpointSet::Options options;
  options.slow_start_window = 60s;
  EndpointSet set(equal(2), options, clock);
  set.set_healthy(1, false);
  clock.advance(1s);
  set.set_healthy(1, true);
  clock.advance(6s);  // 10% of the ramp: weight 0.1
  auto balancer = std::move(make_load_balancer({}, set, random)).value();
  int to_new = 0;
  for (int i = 0; i < 1100; ++i) to_new += *balancer->pick({}) == 1 ? 1 : 0;
  EXPECT_EQ(to_new, 100) << "weights 1 : 0.1 give exactly 1 pick in 11";
}

TEST(RoundRobin, AvoidsTheEndpointThatFailedWhenThereIsAnother) {
  Fixture f(equal(3));
  std::size_t failed = f.pick();
  for (int i = 0; i < 10; ++i) {
    std::size_t avoid[] = {failed};
    EXPECT_NE(f.pick({.avoid = avoid}), failed);
  }
}

TEST(WeightedRandom, FollowsWeights) {
  Fixture f({{"a", 3}, {"b", 1}}, "random");
  int a = 0;
  for (int i = 0; i < 40000; ++i) a += f.pick() == 0 ? 1 : 0;
  EXPECT_NEAR(a / 40000.0, 0.75, 0.01) << "seed 1";
}

TEST(LeastRequest, PrefersFewerRequestsInFlightAndNeverPicksAnEjectedEndpoint) {
  Fixture f(equal(10), "least_request");
  for (int i = 0; i < 5; ++i) f.set.on_start(0);
  f.set.eject(3, f.clock.now() + 1min);
  std::map<std::size_t, int> counts;
  for (int i = 0; i < 20000; ++i) ++counts[f.pick()];
  EXPECT_EQ(counts.count(3), 0u) << "ejected";
  EXPECT_EQ(counts.count(0), 0u) << "with distinct choices, the busy endpoint always loses";
  EXPECT_EQ(counts.size(), 8u);
}

TEST(LeastRequest, RejectsFewerThanTwoChoices) {
  ManualClock clock;
  Random random(1);
  EndpointSet set(equal(3), {}, clock);
  PolicyConfig config;
  config.policy = "least_request";
  config.choice_count = 1;
  EXPECT_FALSE(make_load_balancer(config, set, random).ok());
}

// Serves `requests` picks 10 ms apart, each answered at once in `latency(endpoint)`; returns the
// picks per endpoint.
template <typename Latency>
std::map<std::size_t, int> serve(Fixture& f, int requests, Latency latency) {
  std::map<std::size_t, int> picks;
  for (int i = 0; i < requests; ++i) {
    std::size_t chosen = f.pick();
    ++picks[chosen];
    f.set.on_start(chosen);
    f.set.on_complete(chosen, true, latency(chosen));
    f.clock.advance(10ms);
  }
  return picks;
}

TEST(PeakEwma, AvoidsTheSlowEndpointButProbesItNowAndThen) {
  Fixture f(equal(4), "peak_ewma");
  auto slow_is_2 = [](std::size_t i) { return i == 2 ? 500ms : 5ms; };
  serve(f, 100, slow_is_2);
  auto picks = serve(f, 2000, slow_is_2);  // 20 s
  EXPECT_GT(picks[2], 0) << "a stale cost is probed, so a recovery would be seen";
  EXPECT_LE(picks[2], 25) << "about one probe per second while it stays slow";
}

TEST(PeakEwma, AnEndpointThatRecoversOnItsOwnGetsItsShareBackWithinTwoSeconds) {
  Fixture f(equal(3), "peak_ewma", 7);
  auto all_fast = [](std::size_t) { return 5ms; };
  serve(f, 300, all_fast);
  // One per-try timeout: a 1 s sample. Then it answers fast again, but only if asked.
  f.set.on_start(2);
  f.set.on_complete(2, true, 1s);
  serve(f, 200, all_fast);  // 2 s
  auto picks = serve(f, 300, all_fast);
  EXPECT_GE(picks[2], 80) << "a third is 100 of 300; old peak EWMA gave 0 for about a minute";
}

TEST(PeakEwma, AnEndpointBackFromUnhealthyOrEjectionStartsFromATypicalCost) {
  enum class Return { kHealthy, kUnejected, kEjectionExpired };
  for (Return way : {Return::kHealthy, Return::kUnejected, Return::kEjectionExpired}) {
    Fixture f(equal(3), "peak_ewma", 11);
    auto all_fast = [](std::size_t) { return 5ms; };
    serve(f, 300, all_fast);
    f.set.on_start(2);
    f.set.on_complete(2, false, 1s);  // the per-try timeout that led to the verdict
    if (way == Return::kHealthy) {
      f.set.set_healthy(2, false);
    } else {
      f.set.eject(2, f.clock.now() + 3s);
    }
    serve(f, 200, all_fast);
    if (way == Return::kHealthy) f.set.set_healthy(2, true);
    if (way == Return::kUnejected) f.set.uneject(2);
    serve(f, 100, all_fast);               // the ejection has run out by now
    auto picks = serve(f, 150, all_fast);  // the first 1.5 s back
    EXPECT_GE(picks[2], 40) << "way " << static_cast<int>(way) << ": a third is 50 of 150";
  }
}

TEST(PeakEwma, AnEndpointWithNoSamplesCostsTheTypicalLatency) {
  Fixture f(equal(3), "peak_ewma", 5);
  f.set.on_start(0);
  f.set.on_complete(0, true, 50ms);
  f.set.on_start(1);
  f.set.on_complete(1, true, 50ms);
  // Endpoint 2 has answered nothing yet: it costs what the others do, so it neither takes every
  // request (a cost of zero) nor none (an infinite one); with a request in flight it costs
  // twice the others and mostly loses.
  std::map<std::size_t, int> picks;
  for (int i = 0; i < 3000; ++i) ++picks[f.pick()];
  EXPECT_NEAR(picks[2], 1000, 150);
  f.set.on_start(2);
  picks.clear();
  for (int i = 0; i < 3000; ++i) ++picks[f.pick()];
  EXPECT_LT(picks[2], 300) << "a third would be 1000";
}

TEST(RingHash, SameKeySameEndpointAndFewKeysMoveWhenOneLeaves) {
  Fixture f(equal(10), "ring_hash");
  std::vector<std::size_t> before;
  for (std::uint64_t key = 0; key < 10000; ++key) before.push_back(f.pick({.hash = hash64(key)}));
  for (std::uint64_t key = 0; key < 100; ++key)
    EXPECT_EQ(f.pick({.hash = hash64(key)}), before[key]);
  f.set.set_healthy(4, false);
  int moved = 0;
  for (std::uint64_t key = 0; key < 10000; ++key) {
    std::size_t now = f.pick({.hash = hash64(key)});
    if (now != before[key]) {
      ++moved;
      EXPECT_EQ(before[key], 4u) << "only keys of the endpoint that left move";
    }
  }
  EXPECT_GT(moved, 600);
  EXPECT_LT(moved, 1400);
}

TEST(RingHash, BoundedLoadCapsAHotKeysEndpoint) {
  Fixture f(equal(4), "ring_hash");
  f.config.hash_balance_factor = 1.25;
  f.balancer = std::move(make_load_balancer(f.config, f.set, f.random)).value();
  // One hot key: without a bound every request would go to one endpoint.
  std::map<std::size_t, int> in_flight;
  for (int i = 0; i < 100; ++i) {
    std::size_t chosen = f.pick({.hash = 42});
    f.set.on_start(chosen);
    ++in_flight[chosen];
  }
  for (const auto& [endpoint, count] : in_flight) {
    EXPECT_LE(count, 33) << "endpoint " << endpoint << ": at most ceil(1.25 x mean)";
  }
}

TEST(Maglev, SameKeySameEndpointAndRetriesGoElsewhere) {
  Fixture f(equal(5), "maglev");
  std::size_t first = f.pick({.hash = 12345});
  EXPECT_EQ(f.pick({.hash = 12345}), first);
  std::size_t avoid[] = {first};
  EXPECT_NE(f.pick({.hash = 12345, .avoid = avoid}), first);
}

TEST(Factory, UnknownPolicyListsTheKnownOnes) {
  ManualClock clock;
  Random random(1);
  EndpointSet set(equal(2), {}, clock);
  PolicyConfig config;
  config.policy = "fastest";
  auto made = make_load_balancer(config, set, random);
  ASSERT_FALSE(made.ok());
  const std::string& message = made.error().message();
  EXPECT_EQ(message.rfind("unknown load-balancing policy 'fastest' (known: ", 0), 0u) << message;
  for (const char* known :
       {"least_request", "maglev", "peak_ewma", "random", "ring_hash", "round_robin"}) {
    EXPECT_NE(message.find(known), std::string::npos) << message;
  }
}

TEST(Factory, RegisteredPolicyIsFoundByName) {
  class First final : public LoadBalancer {
   public:
    std::optional<std::size_t> pick(const PickContext&) override { return 0; }
    const char* name() const override { return "first"; }
  };
  register_policy("first", [](const PolicyConfig&, EndpointSet&, Random&) {
    return Result<std::unique_ptr<LoadBalancer>>(std::make_unique<First>());
  });
  Fixture f(equal(3), "first");
  EXPECT_STREQ(f.balancer->name(), "first");
}

TEST(PolicyConfig, ReadsYamlAndNamesBadFields) {
  auto document = config::Document::parse(
      "lb:\n  policy: ring_hash\n  hash_balance_factor: 1.25\n  minimum_ring_size: 4096\n",
      "c.yaml");
  ASSERT_TRUE(document.ok());
  PolicyConfig config = PolicyConfig::read(document->root().child("lb"));
  ASSERT_TRUE(document->status().ok()) << document->status().error().message();
  EXPECT_EQ(config.policy, "ring_hash");
  EXPECT_EQ(config.minimum_ring_size, 4096u);

  auto bad =
      config::Document::parse("lb:\n  policy: fastest\n  maglev_table_size: 65536\n", "c.yaml");
  ASSERT_TRUE(bad.ok());
  (void)PolicyConfig::read(bad->root().child("lb"));
  std::string message = bad->status().error().message();
  EXPECT_NE(message.find("c.yaml:2:11: lb.policy: expected one of"), std::string::npos) << message;
  EXPECT_NE(message.find("c.yaml:3:22: lb.maglev_table_size: must be a prime"), std::string::npos)
      << message;
}

TEST(AllPolicies, ReturnNothingWhenNoEndpointExists) {
  for (const char* name :
       {"least_request", "maglev", "peak_ewma", "random", "ring_hash", "round_robin"}) {
    ManualClock clock;
    Random random(1);
    EndpointSet set({}, {}, clock);
    PolicyConfig config;
    config.policy = name;
    auto balancer = make_load_balancer(config, set, random);
    ASSERT_TRUE(balancer.ok()) << name;
    EXPECT_FALSE((*balancer)->pick({}).has_value()) << name;
  }
}

TEST(AllPolicies, SameSeedSamePicks) {
  for (const char* name : {"random", "least_request", "peak_ewma", "ring_hash", "maglev"}) {
    Fixture a(equal(7), name, 99);
    Fixture b(equal(7), name, 99);
    for (int i = 0; i < 200; ++i) ASSERT_EQ(a.pick(), b.pick()) << name << " pick " << i;
  }
}

}  // namespace
}  // namespace keel::balance

// Uses an installed Keel: a circuit breaker opening after failures, and the embedded event store
// appending two events and reading them back after a reopen. Exits 0 when all of it works.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "keel/core/clock.h"
#include "keel/core/random.h"
#include "keel/core/version.h"
#include "keel/eventlog/event_store.h"
#include "keel/resilience/circuit_breaker.h"

namespace {

int fail(const std::string& message) {
  std::fprintf(stderr, "consumer: %s\n", message.c_str());
  return 1;
}

int breaker_opens() {
  using namespace keel::resilience;
  keel::ManualClock clock;
  CircuitBreakerConfig config;
  config.window_size = 10;
  config.minimum_calls = 4;
  config.failure_rate_threshold = 50;
  CircuitBreaker breaker("payments", config, clock);
  for (int call = 0; call < 4; ++call) {
    auto admission = breaker.acquire();
    if (!admission) return fail("the breaker refused call " + std::to_string(call));
    breaker.record(std::move(admission).permit(), Outcome::kFailure, std::chrono::milliseconds(1));
  }
  if (breaker.state() != BreakerState::kOpen) return fail("four failures did not open it");
  if (breaker.acquire()) return fail("an open breaker let a call through");
  std::printf("circuit breaker: %s after 4 failures, calls refused\n", to_string(breaker.state()));
  return 0;
}

int events_round_trip() {
  using namespace keel::eventlog;
  const auto dir =
      std::filesystem::temp_directory_path() / ("keel-consumer-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  keel::SteadyClock clock;
  keel::Random random(42);
  {
    auto store = EventStore::open(dir.string(), {}, clock);
    if (!store) return fail(store.error().to_string());
    auto appended = (*store)->append(
        "cart-1", ExpectedVersion::no_stream(),
        {EventData{keel::Uuid::random_v4(random), "ItemAdded", R"({"sku":"tea"})", ""},
         EventData{keel::Uuid::random_v4(random), "CheckedOut", "{}", ""}});
    if (!appended) return fail(appended.error().to_string());
    if (auto closed = (*store)->close(); !closed) return fail(closed.error().to_string());
  }
  auto store = EventStore::open(dir.string(), {}, clock);
  if (!store) return fail(store.error().to_string());
  auto events = (*store)->read_stream("cart-1", 0, 10);
  if (!events) return fail(events.error().to_string());
  if (events->size() != 2 || (*events)[0].type != "ItemAdded" ||
      (*events)[1].type != "CheckedOut" || (*events)[0].data != R"({"sku":"tea"})") {
    return fail("the events read back are not the ones appended");
  }
  for (const auto& event : *events) {
    std::printf("event store: %s@%llu %s %s\n", event.stream.c_str(),
                static_cast<unsigned long long>(event.version), event.type.c_str(),
                event.data.c_str());
  }
  store->reset();
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace

int main() {
  std::printf("keel %s\n", keel::kVersion);
  if (int code = breaker_opens(); code != 0) return code;
  if (int code = events_round_trip(); code != 0) return code;
  std::printf("ok\n");
  return 0;
}

// Pub/sub and CQRS figures for bench/pubsub.sh, each from this one run:
//   live delivery   append → subscription handler latency at a fixed rate (default 10k/s),
//                   for two durabilities (interval: acknowledged after write, fsync every
//                   100 ms; every_commit: fsync before each acknowledgement);
//   catch-up        a subscription replaying N stored events, events/s;
//   consumer group  N stored events through a group of 3 member threads that ack each one;
//   projection      N events into SQLite and into PostgreSQL (started here) through the
//                   ProjectionRunner, one upsert per event, 1000 events per transaction;
//   Redis streams   (with --redis-port) the same live test with XADD + XREADGROUP + XACK,
//                   and the same consumer-group throughput.
// Prints a table and, as its last line, one JSON object of figures named with their units.
//
//   build/bench/pubsub_bench --dir DIR [--rate 10000] [--seconds 5] [--events 1000000]
//                            [--group-events 200000] [--projection-events 200000]
//                            [--redis-port PORT]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "keel/core/random.h"
#include "keel/cqrs/postgres_read_model.h"
#include "keel/cqrs/projection_runner.h"
#include "keel/cqrs/sqlite_read_model.h"
#include "keel/eventlog/event_store.h"
#include "keel/pubsub/consumer_group.h"
#include "keel/pubsub/subscription.h"
#include "keel/testing/local_postgres.h"
#include "redis_client.h"

namespace {

using namespace keel;
using namespace keel::eventlog;
using keel::bench::now_ns;
using keel::bench::percentile;
using keel::bench::seconds_since;
using keel::bench::Wall;
[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "pubsub_bench: %s\n", what.c_str());
  std::exit(1);
}
template <typename T>
T must(Result<T> result, const char* what) {
  if (!result) die(std::string(what) + ": " + result.error().to_string());
  return std::move(*result);
}

std::map<std::string, double> figures;
void figure(const std::string& name, double value) { figures[name] = value; }

std::unique_ptr<EventStore> open_store(const std::string& dir, Durability durability,
                                       SteadyClock& clock) {
  std::filesystem::remove_all(dir);
  StoreOptions options;
  options.durability = durability;
  options.checkpoint_every_events = 1ull << 40;
  return must(EventStore::open(dir, options, clock), "open store");
}

// Appends `count` events of ~100 bytes to `streams` streams of category "acct", `per_append`
// at a time to one stream, going round the streams.
void load(EventStore& store, std::uint64_t count, int streams, std::uint64_t per_append = 1000) {
  Random random(42);
  std::vector<EventData> batch;
  for (std::uint64_t i = 0; i < count;) {
    batch.clear();
    const std::string stream =
        "acct-" + std::to_string((i / per_append) % static_cast<std::uint64_t>(streams));
    for (std::uint64_t j = 0; j < per_append && i < count; ++j, ++i)
      batch.push_back(
          {Uuid::random_v4(random), "Deposited",
           "{\"amount\":" + std::to_string(i % 97) + ",\"memo\":\"" + std::string(70, 'm') + "\"}",
           ""});
    must(store.append(stream, ExpectedVersion::any(), batch), "load");
  }
}

// Paces `rate` calls per second of `send(timestamp_ns)` for `seconds`.
void paced(double rate, double seconds, const std::function<void(std::int64_t)>& send) {
  const auto start = Wall::now();
  const auto interval = std::chrono::nanoseconds(static_cast<std::int64_t>(1e9 / rate));
  auto next = start;
  const auto end = start + std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9));
  while (next < end) {
    std::this_thread::sleep_until(next);  // late wake-ups catch up: the rate holds on average
    send(now_ns());
    next += interval;
  }
}

void live_delivery(const std::string& dir, Durability durability, const std::string& label,
                   double rate, double seconds) {
  SteadyClock clock;
  auto store = open_store(dir, durability, clock);
  std::mutex mutex;
  std::vector<double> latencies;
  latencies.reserve(static_cast<std::size_t>(rate * seconds) + 16);
  pubsub::Subscription subscription(
      *store, {.from = pubsub::StartFrom::end()}, [&](const RecordedEvent& e) {
        const double ms = static_cast<double>(now_ns() - std::stoll(e.data)) / 1e6;
        std::lock_guard lock(mutex);
        latencies.push_back(ms);
        return Status{};
      });
  subscription.start();
  Random random(7);
  std::uint64_t sent = 0;
  paced(rate, seconds, [&](std::int64_t ts) {
    must(store->append("tick-" + std::to_string(sent++ % 16), ExpectedVersion::any(),
                       {EventData{Uuid::random_v4(random), "Tick", std::to_string(ts), ""}}),
         "append");
  });
  while (true) {
    std::lock_guard lock(mutex);
    if (latencies.size() >= sent) break;
  }
  subscription.stop();
  std::sort(latencies.begin(), latencies.end());
  std::printf("live delivery, %-12s %8.0f events/s  p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
              label.c_str(), rate, percentile(latencies, 0.5), percentile(latencies, 0.99),
              percentile(latencies, 1.0));
  figure("keel_live_" + label + "_p50_ms", percentile(latencies, 0.5));
  figure("keel_live_" + label + "_p99_ms", percentile(latencies, 0.99));
  (void)store->close();
}

void catch_up(const std::string& dir, std::uint64_t events) {
  SteadyClock clock;
  auto store = open_store(dir, Durability::kNone, clock);
  load(*store, events, 1000);
  std::atomic<std::uint64_t> seen{0};
  std::atomic<bool> live{false};
  const auto start = Wall::now();
  pubsub::Subscription subscription(*store, {},
                                    {.on_event =
                                         [&](const RecordedEvent&) {
                                           seen.fetch_add(1, std::memory_order_relaxed);
                                           return Status{};
                                         },
                                     .on_live = [&](std::uint64_t) { live = true; }});
  subscription.start();
  while (!live) std::this_thread::sleep_for(std::chrono::microseconds(200));
  const double elapsed = seconds_since(start);
  subscription.stop();
  const double rate = static_cast<double>(seen.load()) / elapsed;
  std::printf("catch-up subscription: %llu events in %.2f s = %.0f events/s\n",
              static_cast<unsigned long long>(seen.load()), elapsed, rate);
  figure("keel_catchup_events_per_s", rate);
  (void)store->close();
}

void consumer_group(const std::string& dir, std::uint64_t events, pubsub::Strategy strategy) {
  SteadyClock clock;
  auto store = open_store(dir, Durability::kInterval, clock);
  load(*store, events, 1000, 10);  // streams interleaved, as many writers would leave them
  auto group = must(pubsub::ConsumerGroup::open(*store,
                                                {.name = "bench",
                                                 .filter = {.categories = {"acct"}},
                                                 .strategy = strategy,
                                                 .max_in_flight = 256,
                                                 .buffer_events = 4096},
                                                clock),
                    "open group");
  const auto start = Wall::now();
  group->start();
  std::atomic<bool> done{false};
  std::vector<std::thread> members;
  for (int m = 0; m < 3; ++m) {
    members.emplace_back([&, m] {
      auto member = must(group->join("m" + std::to_string(m)), "join");
      while (!done) {
        for (const auto& d : member->wait(128, 50ms)) (void)member->ack(d.id);
      }
    });
  }
  while (group->stats().acked < events) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  const double elapsed = seconds_since(start);
  done = true;
  for (auto& member : members) member.join();
  group->stop();
  const std::string name(pubsub::to_string(strategy));
  const double rate = static_cast<double>(events) / elapsed;
  std::printf("consumer group (%s, 3 members, ack each): %.0f events/s\n", name.c_str(), rate);
  figure("keel_group_" + name + "_events_per_s", rate);
  (void)store->close();
}

cqrs::Projection balances() {
  return {.name = "balances",
          .filter = {.categories = {"acct"}},
          .setup =
              [](cqrs::Transaction& tx) {
                return tx.exec(
                    "CREATE TABLE IF NOT EXISTS balances (account TEXT PRIMARY KEY, balance BIGINT "
                    "NOT NULL, events BIGINT NOT NULL)");
              },
          .apply =
              [](const RecordedEvent& e, cqrs::Transaction& tx) {
                const auto amount = std::strtoll(e.data.c_str() + 10, nullptr, 10);  // {"amount":N
                return tx.exec(
                    "INSERT INTO balances (account, balance, events) VALUES ($1, $2, 1) "
                    "ON CONFLICT (account) DO UPDATE SET balance = balances.balance + "
                    "excluded.balance, events = balances.events + 1",
                    {e.stream, static_cast<std::int64_t>(amount)});
              }};
}

void projection(const std::string& dir, std::uint64_t events, cqrs::ReadModel& model,
                const std::string& label) {
  SteadyClock clock;
  auto store = open_store(dir, Durability::kNone, clock);
  load(*store, events, 1000);
  auto runner =
      must(cqrs::ProjectionRunner::open(*store, model, balances(), clock, {.batch = 1000}),
           "projection");
  const auto start = Wall::now();
  if (auto ok = runner->catch_up(); !ok) die("projection: " + ok.error().to_string());
  const double elapsed = seconds_since(start);
  const double rate = static_cast<double>(runner->progress().applied) / elapsed;
  std::printf("projection into %-10s %llu events in %.2f s = %.0f events/s\n", label.c_str(),
              static_cast<unsigned long long>(runner->progress().applied), elapsed, rate);
  figure("keel_projection_" + label + "_events_per_s", rate);
  (void)store->close();
}

using keel::bench::for_each_entry;
using keel::bench::Redis;

void redis_live(int port, double rate, double seconds) {
  Redis admin(port);
  admin.command({"DEL", "live"});
  admin.command({"XGROUP", "CREATE", "live", "g", "$", "MKSTREAM"});
  std::vector<double> latencies;
  std::atomic<std::uint64_t> sent{0};
  std::atomic<bool> producing{true};
  std::thread consumer([&] {
    Redis redis(port);
    while (producing || latencies.size() < sent) {
      auto reply = redis.command({"XREADGROUP", "GROUP", "g", "c", "COUNT", "100", "BLOCK", "100",
                                  "STREAMS", "live", ">"});
      std::vector<std::string> ack = {"XACK", "live", "g"};
      for_each_entry(reply, [&](const std::string& id, const Redis::Reply& fields) {
        latencies.push_back(static_cast<double>(now_ns() - std::stoll(fields.items[1].text)) / 1e6);
        ack.push_back(id);
      });
      if (ack.size() > 3) redis.command(ack);
    }
  });
  Redis producer(port);
  paced(rate, seconds, [&](std::int64_t ts) {
    producer.command({"XADD", "live", "*", "ts", std::to_string(ts)});
    ++sent;
  });
  producing = false;
  consumer.join();
  std::sort(latencies.begin(), latencies.end());
  std::printf("redis streams live,       %8.0f events/s  p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
              rate, percentile(latencies, 0.5), percentile(latencies, 0.99),
              percentile(latencies, 1.0));
  figure("redis_live_p50_ms", percentile(latencies, 0.5));
  figure("redis_live_p99_ms", percentile(latencies, 0.99));
}

void redis_group(int port, std::uint64_t events) {
  Redis loader(port);
  loader.command({"DEL", "grp"});
  const std::string memo = "{\"amount\":1,\"memo\":\"" + std::string(70, 'm') + "\"}";
  for (std::uint64_t i = 0; i < events; i += 1000) {
    for (int j = 0; j < 1000; ++j) loader.send({"XADD", "grp", "*", "data", memo});
    for (int j = 0; j < 1000; ++j) loader.read();
  }
  loader.command({"XGROUP", "CREATE", "grp", "g", "0"});
  std::atomic<std::uint64_t> acked{0};
  const auto start = Wall::now();
  std::vector<std::thread> members;
  for (int m = 0; m < 3; ++m) {
    members.emplace_back([&, m] {
      Redis redis(port);
      while (acked < events) {
        auto reply = redis.command({"XREADGROUP", "GROUP", "g", "m" + std::to_string(m), "COUNT",
                                    "128", "BLOCK", "50", "STREAMS", "grp", ">"});
        std::vector<std::string> ack = {"XACK", "grp", "g"};
        acked += for_each_entry(
            reply, [&](const std::string& id, const Redis::Reply&) { ack.push_back(id); });
        if (ack.size() > 3) redis.command(ack);
      }
    });
  }
  for (auto& member : members) member.join();
  const double rate = static_cast<double>(events) / seconds_since(start);
  std::printf("redis streams group (3 consumers, XACK per batch): %.0f events/s\n", rate);
  figure("redis_group_events_per_s", rate);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double rate = 10000, seconds = 5;
  std::uint64_t events = 1000000, group_events = 200000, projection_events = 200000;
  int redis_port = 0;
  std::string only;  // one part: live, catchup, group, projection
  CLI::App app{"Keel's pub/sub and CQRS figures, beside Redis Streams"};
  app.add_option("--dir", dir, "Where the event stores go")->required();
  app.add_option("--rate", rate, "Events per second for live delivery")->check(CLI::PositiveNumber);
  app.add_option("--seconds", seconds, "How long live delivery runs")->check(CLI::PositiveNumber);
  app.add_option("--events", events, "Events for catch-up");
  app.add_option("--group-events", group_events, "Events for the consumer group");
  app.add_option("--projection-events", projection_events, "Events for the projections");
  app.add_option("--redis-port", redis_port, "A running Redis to compare with (0: none)")
      ->check(CLI::Range(0, 65535));
  app.add_option("--only", only, "One part only")
      ->check(CLI::IsMember({"live", "catchup", "group", "projection"}));
  CLI11_PARSE(app, argc, argv);

  auto part = [&](const char* name) { return only.empty() || only == name; };
  if (part("live")) {
    live_delivery(dir + "/live", Durability::kInterval, "interval", rate, seconds);
    live_delivery(dir + "/live", Durability::kEveryCommit, "every_commit", rate, seconds);
    if (redis_port) redis_live(redis_port, rate, seconds);
  }
  if (part("catchup")) catch_up(dir + "/catchup", events);
  if (part("group")) {
    consumer_group(dir + "/group", group_events, pubsub::Strategy::kRoundRobin);
    consumer_group(dir + "/group", group_events, pubsub::Strategy::kPinned);
    if (redis_port) redis_group(redis_port, group_events);
  }
  if (part("projection")) {
    for (const char* suffix : {"", "-wal", "-shm"})
      std::filesystem::remove(dir + "/read.db" + suffix);
    auto sqlite = must(cqrs::SqliteReadModel::open(dir + "/read.db"), "sqlite");
    projection(dir + "/projection", projection_events, *sqlite, "sqlite");

    auto postgres = must(keel::testing::LocalPostgres::start(), "start postgres");
    auto model = must(cqrs::PostgresReadModel::connect({postgres->conninfo()}), "connect");
    projection(dir + "/projection", projection_events, *model, "postgres");
  }
  figure("rate_events_per_s", rate);
  if (figures.count("redis_live_p99_ms") && figures["redis_live_p99_ms"] > 0)
    figure("keel_interval_vs_redis_live_p99_ratio",
           figures["keel_live_interval_p99_ms"] / figures["redis_live_p99_ms"]);
  if (figures.count("redis_group_events_per_s"))
    figure("keel_vs_redis_group_throughput_ratio",
           figures["keel_group_round_robin_events_per_s"] / figures["redis_group_events_per_s"]);
  keel::bench::print_figures_line(figures, 4);
}

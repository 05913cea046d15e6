// Keel's event store figures for bench/eventlog.sh: durable appends (fsync per commit) for
// batches of 1/10/100 events of 100 B and 1 KiB from 1 and 8 appenders; reads of one stream and
// of $all; open time after N events (10 million by default). Prints a table and, as its last
// line, one JSON object.
//
//   build/bench/eventlog_bench --dir DIR [--seconds S] [--open-events N]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "keel/core/random.h"
#include "keel/eventlog/event_store.h"

namespace {

using namespace keel;
using namespace keel::eventlog;
using Wall = std::chrono::steady_clock;

double seconds_since(Wall::time_point start) {
  return std::chrono::duration<double>(Wall::now() - start).count();
}

std::unique_ptr<EventStore> open_store(const std::string& dir, Durability durability,
                                       SteadyClock& clock) {
  StoreOptions options;
  options.durability = durability;
  options.checkpoint_every_events = 1ull << 40;  // only on close: keep checkpoints out of timings
  auto store = EventStore::open(dir, options, clock);
  if (!store) {
    std::fprintf(stderr, "eventlog_bench: %s\n", store.error().to_string().c_str());
    std::exit(1);
  }
  return std::move(*store);
}

struct AppendFigure {
  double events_per_s;
  double mb_per_s;
};

AppendFigure measure_appends(const std::string& dir, int batch, std::size_t payload, int appenders,
                             double seconds, SteadyClock& clock) {
  std::filesystem::remove_all(dir);
  auto store = open_store(dir, Durability::kEveryCommit, clock);
  std::vector<std::thread> threads;
  std::vector<std::uint64_t> events(appenders, 0);
  const auto start = Wall::now();
  for (int t = 0; t < appenders; ++t) {
    threads.emplace_back([&, t] {
      Random random(1000 + t);
      std::string data(payload, 'x');
      std::vector<EventData> batch_events(batch);
      std::string stream = "bench-" + std::to_string(t);
      while (seconds_since(start) < seconds) {
        for (auto& event : batch_events) event = {Uuid::random_v4(random), "BenchEvent", data, ""};
        auto result = store->append(stream, ExpectedVersion::any(), batch_events);
        if (!result) {
          std::fprintf(stderr, "eventlog_bench: append: %s\n", result.error().to_string().c_str());
          std::exit(1);
        }
        events[t] += batch;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  double elapsed = seconds_since(start);
  std::uint64_t total = 0;
  for (auto n : events) total += n;
  (void)store->close();
  return {static_cast<double>(total) / elapsed,
          static_cast<double>(total * payload) / elapsed / 1e6};
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  double seconds = 2;
  std::uint64_t open_events = 10'000'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--dir"))
      dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--seconds"))
      seconds = std::atof(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--open-events"))
      open_events = std::strtoull(argv[i + 1], nullptr, 10);
  }
  if (dir.empty()) {
    std::fprintf(stderr, "usage: %s --dir DIR [--seconds S] [--open-events N]\n", argv[0]);
    return 2;
  }
  SteadyClock clock;
  std::string json = "{";
  auto add = [&](const std::string& name, double value) {
    char entry[160];
    std::snprintf(entry, sizeof entry, "%s\"%s\":%.1f", json.size() > 1 ? "," : "", name.c_str(),
                  value);
    json += entry;
  };

  std::printf("durable appends (fdatasync before every acknowledgement), %.0f s per case\n",
              seconds);
  std::printf("%-8s %-8s %-10s %14s %10s\n", "batch", "payload", "appenders", "events/s", "MB/s");
  for (int batch : {1, 10, 100}) {
    for (std::size_t payload : {std::size_t{100}, std::size_t{1024}}) {
      for (int appenders : {1, 8}) {
        auto figure = measure_appends(dir + "/append", batch, payload, appenders, seconds, clock);
        std::string label = payload == 100 ? "100B" : "1KiB";
        std::printf("%-8d %-8s %-10d %14.0f %10.1f\n", batch, label.c_str(), appenders,
                    figure.events_per_s, figure.mb_per_s);
        std::string name = "keel_append_b" + std::to_string(batch) + "_" + label + "_c" +
                           std::to_string(appenders);
        add(name + "_events_per_s", figure.events_per_s);
        add(name + "_mb_per_s", figure.mb_per_s);
      }
    }
  }

  // A big store for reads and the open time: written without syncs (a bulk load), closed
  // cleanly (which writes the index checkpoint), then opened again.
  std::string big = dir + "/big";
  std::filesystem::remove_all(big);
  {
    auto store = open_store(big, Durability::kNone, clock);
    Random random(5);
    std::vector<EventData> batch(1000);
    std::string data(100, 'd');
    const auto start = Wall::now();
    for (std::uint64_t written = 0; written < open_events; written += batch.size()) {
      for (auto& event : batch) event = {Uuid::random_v4(random), "Loaded", data, ""};
      auto result = store->append("load-" + std::to_string(written / batch.size() % 1000),
                                  ExpectedVersion::any(), batch);
      if (!result) {
        std::fprintf(stderr, "eventlog_bench: load: %s\n", result.error().to_string().c_str());
        return 1;
      }
    }
    std::printf("\nloaded %llu events (100 B, 1000 streams) in %.1f s without syncs\n",
                static_cast<unsigned long long>(open_events), seconds_since(start));
    const auto close_start = Wall::now();
    (void)store->close();
    std::printf("close (writes the index checkpoint): %.2f s\n", seconds_since(close_start));
  }
  const auto open_start = Wall::now();
  auto store = open_store(big, Durability::kEveryCommit, clock);
  double open_s = seconds_since(open_start);
  std::printf("open after %llu events: %.3f s\n", static_cast<unsigned long long>(open_events),
              open_s);
  add("keel_open_" + std::to_string(open_events / 1'000'000) + "M_events_s", open_s);

  // $all forward, in pages.
  {
    const auto start = Wall::now();
    std::uint64_t read = 0, position = 0;
    std::uint64_t limit = std::min<std::uint64_t>(open_events, 5'000'000);
    while (read < limit) {
      auto page = store->read_all(position, 10000);
      if (!page || page->empty()) break;
      read += page->size();
      position = page->back().position + 1;
    }
    double rate = static_cast<double>(read) / seconds_since(start);
    std::printf("read $all forward: %.0f events/s (%llu events)\n", rate,
                static_cast<unsigned long long>(read));
    add("keel_read_all_events_per_s", rate);
  }
  // One stream forward, in pages.
  {
    const auto start = Wall::now();
    std::uint64_t read = 0, version = 0;
    while (true) {
      auto page = store->read_stream("load-7", version, 1000);
      if (!page || page->empty()) break;
      read += page->size();
      version = page->back().version + 1;
    }
    double rate = static_cast<double>(read) / seconds_since(start);
    std::printf("read one stream forward: %.0f events/s (%llu events)\n", rate,
                static_cast<unsigned long long>(read));
    add("keel_read_stream_events_per_s", rate);
  }
  (void)store->close();
  std::filesystem::remove_all(dir + "/append");
  std::filesystem::remove_all(big);
  std::printf("%s}\n", json.c_str());
  return 0;
}

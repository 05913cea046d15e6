// The process eventlog_crash_test kills: appends to an event store forever and reports every
// acknowledged event on stdout, so the test knows what must survive a SIGKILL.
//
//   eventlog_crash_writer DIR THREADS SEED
//
// Each of THREADS threads owns two streams (order-T and payment-T) and appends batches of one to
// three events to them with the exact expected version, continuing from whatever the store
// holds. After each acknowledged append it prints one line per event and flushes:
//   STREAM VERSION POSITION ID
// The lines of one append go out in one write(2), so the reader never sees half a batch of
// another thread's lines in between. Any failed append ends the process with exit code 3.
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/random.h"
#include "keel/core/uuid.h"
#include "keel/eventlog/event_store.h"

namespace {

using keel::eventlog::EventData;
using keel::eventlog::EventStore;
using keel::eventlog::ExpectedVersion;

std::mutex output_mutex;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "eventlog_crash_writer: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

void append_forever(EventStore& store, int thread, std::uint64_t seed) {
  keel::Random random(seed * 1000003 + static_cast<std::uint64_t>(thread));
  std::vector<std::string> streams = {"order-" + std::to_string(thread),
                                      "payment-" + std::to_string(thread)};
  std::vector<std::optional<std::uint64_t>> versions;
  for (const auto& stream : streams) versions.push_back(store.stream_version(stream));
  for (;;) {
    std::size_t which = random.uniform(streams.size());
    std::vector<EventData> batch(1 + random.uniform(3));
    for (auto& event : batch) {
      event.id = keel::Uuid::random_v4(random);
      event.type = which == 0 ? "OrderChanged" : "PaymentTaken";
      event.data = "{\"pad\":\"" + std::string(10 + random.uniform(300), 'x') + "\"}";
    }
    ExpectedVersion expected =
        versions[which] ? ExpectedVersion::exact(*versions[which]) : ExpectedVersion::no_stream();
    auto appended = store.append(streams[which], expected, batch);
    if (!appended) fail("append to " + streams[which] + ": " + appended.error().to_string());
    versions[which] = appended->last_version;
    std::string lines;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      lines += streams[which] + " " + std::to_string(appended->first_version + i) + " " +
               std::to_string(appended->first_position + i) + " " + batch[i].id.to_string() + "\n";
    }
    std::lock_guard lock(output_mutex);
    std::fwrite(lines.data(), 1, lines.size(), stdout);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: eventlog_crash_writer DIR THREADS SEED\n");
    return 2;
  }
  const std::string directory = argv[1];
  const int threads = std::atoi(argv[2]);
  const std::uint64_t seed = std::strtoull(argv[3], nullptr, 10);
  // A buffer larger than any batch's lines, so one fflush is one write(2).
  static char buffer[1 << 16];
  std::setvbuf(stdout, buffer, _IOFBF, sizeof buffer);

  keel::eventlog::StoreOptions options;
  options.durability = keel::eventlog::Durability::kEveryCommit;
  options.segment_bytes = 64 * 1024;      // many segment rolls per run
  options.checkpoint_every_events = 300;  // and index checkpoints
  keel::SteadyClock clock;
  auto store = EventStore::open(directory, options, clock);
  if (!store) fail("open " + directory + ": " + store.error().to_string());

  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] { append_forever(**store, t, seed); });
  }
  for (auto& worker : workers) worker.join();  // never: the test kills the process
  return 0;
}

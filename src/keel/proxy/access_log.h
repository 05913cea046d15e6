// The proxy's access log: one JSON line per request, written without ever making a request
// wait. Each worker appends its lines to a buffer of its own (a lock only the worker and the
// writer thread take, so it is uncontended in practice); one background thread writes the
// buffers out every `flush_interval` on the injected clock. A buffer that is full drops the line
// and counts it: a slow disk costs log lines, never latency.
//
// Thread-safety: append(worker, ...) from that worker's thread; everything else from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/metrics.h"

namespace keel::proxy {

class AccessLog {
 public:
  struct Options {
    std::size_t buffer_bytes_per_worker = 1 << 20;  // lines beyond this wait no one: dropped
    Duration flush_interval = 100ms;
    metrics::Counter* dropped_lines = nullptr;  // counted here too, when given
  };

  // Starts the writer thread. `out` must outlive this object.
  AccessLog(std::ostream& out, std::size_t workers, Clock& clock, Options options);
  ~AccessLog();
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  // Appends `line` and a newline to `worker`'s buffer, or counts it as dropped when full.
  void append(std::size_t worker, std::string_view line);
  // Writes everything buffered now (and waits until it is written).
  void flush();
  // Writes what is buffered and stops the writer thread; append() after it drops.
  void stop();

  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  std::uint64_t written() const { return written_.load(std::memory_order_relaxed); }

 private:
  struct alignas(64) Lane {
    std::mutex mutex;
    std::string buffer;
    std::uint64_t lines = 0;
  };
  void run();
  void write_out();  // writer thread only, or under stop()

  std::ostream& out_;
  Clock& clock_;
  const Options options_;
  std::vector<std::unique_ptr<Lane>> lanes_;
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> written_{0};

  std::mutex mutex_;  // guards the fields below and the writer's turn
  std::condition_variable wake_;
  std::condition_variable flushed_;
  bool stopping_ = false;
  std::uint64_t flush_requests_ = 0;
  std::uint64_t flushes_done_ = 0;
  std::thread thread_;
};

}  // namespace keel::proxy

#include "keel/proxy/access_log.h"

#include <cstdio>

namespace keel::proxy {

AccessLog::AccessLog(std::ostream& out, std::size_t workers, Clock& clock, Options options)
    : out_(out), clock_(clock), options_(options) {
  for (std::size_t i = 0; i < workers; ++i) {
    lanes_.push_back(std::make_unique<Lane>());
    lanes_.back()->buffer.reserve(
        std::min<std::size_t>(options_.buffer_bytes_per_worker, 64 << 10));
  }
  thread_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() { stop(); }

void AccessLog::append(std::size_t worker, std::string_view line) {
  Lane& lane = *lanes_[worker];
  std::lock_guard lock(lane.mutex);
  if (lane.buffer.size() + line.size() + 1 > options_.buffer_bytes_per_worker) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    if (options_.dropped_lines != nullptr) options_.dropped_lines->inc();
    return;
  }
  lane.buffer.append(line).push_back('\n');
  ++lane.lines;
}

void AccessLog::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    // The interval runs on the injected clock, so tests drive it with advance().
    wait_until(clock_, wake_, lock, clock_.now() + options_.flush_interval,
               [&] { return stopping_ || flush_requests_ > flushes_done_; });
    const std::uint64_t requested = flush_requests_;
    lock.unlock();
    write_out();
    lock.lock();
    flushes_done_ = requested;
    flushed_.notify_all();
  }
}

void AccessLog::write_out() {
  std::string batch;  // swapped out of each lane, so a worker waits for a swap, never for I/O
  std::uint64_t lines = 0;
  for (auto& lane : lanes_) {
    std::string taken;
    {
      std::lock_guard lock(lane->mutex);
      if (lane->buffer.empty()) continue;
      taken.reserve(lane->buffer.capacity());
      taken.swap(lane->buffer);
      lines += lane->lines;
      lane->lines = 0;
    }
    batch.append(taken);
  }
  if (batch.empty()) return;
  out_.write(batch.data(), static_cast<std::streamsize>(batch.size()));
  out_.flush();
  written_.fetch_add(lines, std::memory_order_relaxed);
}

void AccessLog::flush() {
  std::unique_lock lock(mutex_);
  if (stopping_) return;
  const std::uint64_t ticket = ++flush_requests_;
  wake_.notify_all();
  flushed_.wait(lock, [&] { return flushes_done_ >= ticket || stopping_; });
}

void AccessLog::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    wake_.notify_all();
    flushed_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  write_out();  // what came before stop(); later appends go to buffers never written
}

namespace {}  // namespace

}  // namespace keel::proxy

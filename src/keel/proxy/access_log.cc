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

namespace {

// The length of the valid UTF-8 sequence at the start of `text` (its first byte is >= 0x80),
// or 0 when it is not one (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
std::size_t utf8_sequence(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char first = byte(0);
  std::size_t length = first >= 0xf0 ? 4 : first >= 0xe0 ? 3 : first >= 0xc2 ? 2 : 0;
  if (length == 0 || first > 0xf4 || text.size() < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
  }
  if (first == 0xe0 && byte(1) < 0xa0) return 0;   // overlong
  if (first == 0xed && byte(1) >= 0xa0) return 0;  // surrogates
  if (first == 0xf0 && byte(1) < 0x90) return 0;   // overlong
  if (first == 0xf4 && byte(1) >= 0x90) return 0;  // above U+10FFFF
  return length;
}

}  // namespace

void append_json_string(std::string& out, std::string_view text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      if (std::size_t length = utf8_sequence(text.substr(i)); length > 0) {
        out.append(text.substr(i, length));
        i += length - 1;
      } else {
        out += "\ufffd";
      }
      continue;
    }
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned char>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
}

}  // namespace keel::proxy

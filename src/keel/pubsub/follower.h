// The lifecycle shared by the threads that follow the log (consumer groups, projection
// runners): start() registers a commit listener that sets `work` and wakes `changed`, then
// starts the thread; stop() sets `stopping`, wakes and joins the thread, then removes the
// listener. The listener is registered without holding `mutex` — a commit calls it with the
// store's listener lock held, and it takes `mutex` — which is the ordering easy to get wrong.
//
// Thread-safety: start() and stop() from one thread; `work` and `stopping` under `mutex`.
#pragma once

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "keel/eventlog/event_store.h"
#include "keel/pubsub/log_source.h"

namespace keel::pubsub {

class Follower {
 public:
  Follower(eventlog::EventStore& store, std::mutex& mutex, std::condition_variable& changed,
           bool& work, bool& stopping)
      : store_(&store), mutex_(mutex), changed_(changed), work_(work), stopping_(stopping) {}
  // The same over any log (a remote node's, whose listener may also call after reconnecting).
  Follower(LogSource& source, std::mutex& mutex, std::condition_variable& changed, bool& work,
           bool& stopping)
      : source_(&source), mutex_(mutex), changed_(changed), work_(work), stopping_(stopping) {}
  ~Follower() { stop(); }
  Follower(const Follower&) = delete;
  Follower& operator=(const Follower&) = delete;

  // Runs `body` on a new thread unless one runs; `body` returns once `stopping` is set.
  void start(std::function<void()> body);
  // False when no thread was running.
  bool stop();

 private:
  eventlog::EventStore* store_ = nullptr;  // one of the two
  LogSource* source_ = nullptr;
  std::mutex& mutex_;
  std::condition_variable& changed_;
  bool& work_;
  bool& stopping_;
  std::uint64_t listener_ = 0;
  std::thread thread_;
};

}  // namespace keel::pubsub

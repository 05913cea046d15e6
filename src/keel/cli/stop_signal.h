// Clean shutdown (and reload) on signals for the `keel` commands that run until stopped.
#pragma once

#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "keel/core/clock.h"

namespace keel::cli {

// Set once SIGINT or SIGTERM arrives. The signals are blocked in this thread (and the threads
// started after it: construct it first) and taken by a thread of its own, which sets the flag,
// runs `on_stop` and wakes every waiter. With `on_hangup`, SIGHUP runs it each time it comes.
class StopSignal {
 public:
  explicit StopSignal(std::function<void()> on_stop = nullptr,
                      std::function<void()> on_hangup = nullptr) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR2);  // the destructor's way to end the thread
    if (on_hangup) sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    thread_ =
        std::thread([this, set, on_stop = std::move(on_stop), on_hangup = std::move(on_hangup)] {
          int signal = 0;
          while (sigwait(&set, &signal) == 0 && signal == SIGHUP) on_hangup();
          if (signal != SIGUSR2) {
            {
              std::lock_guard lock(mutex_);
              stopping_ = true;
            }
            if (on_stop) on_stop();
          }
          std::lock_guard lock(mutex_);
          done_ = true;
          wake_.notify_all();
        });
  }
  ~StopSignal() {
    {
      std::lock_guard lock(mutex_);
      if (!done_) pthread_kill(thread_.native_handle(), SIGUSR2);
    }
    thread_.join();
  }
  StopSignal(const StopSignal&) = delete;
  StopSignal& operator=(const StopSignal&) = delete;

  bool stopping() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }
  // Makes waiters check their condition again.
  void notify() {
    std::lock_guard lock(mutex_);
    wake_.notify_all();
  }
  // Until stopping or `also()` holds (checked on notify()); returns stopping().
  template <typename Predicate>
  bool wait(Predicate also) {
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return stopping_ || also(); });
    return stopping_;
  }
  // The same, for at most `timeout`.
  template <typename Predicate>
  bool wait_for(Duration timeout, Predicate also) {
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, timeout, [&] { return stopping_ || also(); });
    return stopping_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace keel::cli

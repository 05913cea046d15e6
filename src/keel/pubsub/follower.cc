#include "keel/pubsub/follower.h"

namespace keel::pubsub {

void Follower::start(std::function<void()> body) {
  {
    std::lock_guard lock(mutex_);
    if (thread_.joinable()) return;
    stopping_ = false;
    work_ = true;
  }
  auto listener = [this](std::uint64_t) {
    std::lock_guard wake(mutex_);
    work_ = true;
    changed_.notify_all();
  };
  listener_ =
      store_ ? store_->add_commit_listener(listener) : source_->add_commit_listener(listener);
  std::lock_guard lock(mutex_);
  thread_ = std::thread(std::move(body));
}

bool Follower::stop() {
  std::thread thread;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    changed_.notify_all();
    thread = std::move(thread_);
  }
  if (!thread.joinable()) return false;
  thread.join();
  if (store_) {
    store_->remove_commit_listener(listener_);
  } else {
    source_->remove_commit_listener(listener_);
  }
  return true;
}

}  // namespace keel::pubsub

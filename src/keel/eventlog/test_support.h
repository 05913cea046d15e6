// Helpers for the event store's tests: a temporary directory removed at the end, and events.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "keel/core/random.h"
#include "keel/eventlog/event.h"

namespace keel::eventlog::testing {

class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "keel-eventlog-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline EventData make_event(Random& random, std::string type, std::string data) {
  return {Uuid::random_v4(random), std::move(type), std::move(data), ""};
}

}  // namespace keel::eventlog::testing

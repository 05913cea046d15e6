// Runs an etcd server as a child process on free loopback ports, for tests, benchmarks and
// `keel demo`: a temp data dir (removed at the end unless one is given), a wait until it
// answers, and stop/kill/restart by pid. Never touches an etcd it did not start, and the etcd
// it started dies with it (see Subprocess).
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "keel/core/clock.h"
#include "keel/core/result.h"
#include "keel/testing/subprocess.h"

namespace keel::testing {

struct LocalEtcdOptions {
  std::string binary = "etcd";
  std::string data_dir;  // empty: a temp dir, removed by the destructor
  std::vector<std::string> extra_flags;
  Duration start_timeout = 15s;
};

class LocalEtcd {
 public:
  static Result<std::unique_ptr<LocalEtcd>> start(LocalEtcdOptions options = {});
  ~LocalEtcd();  // stops the server and removes a temp data dir
  LocalEtcd(const LocalEtcd&) = delete;
  LocalEtcd& operator=(const LocalEtcd&) = delete;

  // "http://127.0.0.1:PORT": the client URL. peer_endpoint() speaks HTTP but is not the v3
  // gateway: a handy wrong address.
  const std::string& endpoint() const { return client_url_; }
  const std::string& peer_endpoint() const { return peer_url_; }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  const std::string& log_file() const { return log_file_; }

  // SIGTERM (SIGKILL after 5 s), waiting for the process to end.
  void stop();
  // SIGKILL, waiting for the process to end.
  void kill();
  // Starts it again on the same ports and data dir, and waits until it answers.
  Status restart();

 private:
  LocalEtcd() = default;
  Status launch();

  LocalEtcdOptions options_;
  std::string temp_dir_;
  std::string data_dir_;
  std::string log_file_;
  std::string client_url_;
  std::string peer_url_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace keel::testing

// Runs a PostgreSQL server as a child process, for tests, benchmarks and `keel demo`:
// `initdb` into a temp dir, then `postgres` on a free loopback port with its socket in that
// dir, trust authentication, stopped by pid. As root, both run as the unprivileged `postgres`
// user (the server refuses root) and the temp dir is handed to it.
//
// Departure from Subprocess's rule: changing user clears the parent-death signal, so a server
// started as root outlives a test that is SIGKILLed. The destructor stops it; a killed test
// leaves it to be found by its dir name (keel-pg.*).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "keel/core/result.h"
#include "keel/testing/subprocess.h"

namespace keel::testing {

struct LocalPostgresOptions {
  std::string bin_dir = "/usr/lib/postgresql/15/bin";  // Debian keeps it off PATH
  // Extra `-c name=value` settings, e.g. {"fsync=off"} for tests that never lose power.
  std::vector<std::string> settings;
  Duration start_timeout = 60s;
};

class LocalPostgres {
 public:
  static Result<std::unique_ptr<LocalPostgres>> start(LocalPostgresOptions options = {});
  ~LocalPostgres();  // stops the server (fast shutdown, SIGKILL after 10 s) and removes the dir
  LocalPostgres(const LocalPostgres&) = delete;
  LocalPostgres& operator=(const LocalPostgres&) = delete;

  // libpq connection string for the `postgres` database as the `postgres` user.
  std::string conninfo() const;
  int port() const { return port_; }
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  const std::string& log_file() const { return log_file_; }

 private:
  LocalPostgres() = default;
  std::vector<std::string> as_postgres(std::vector<std::string> argv) const;

  LocalPostgresOptions options_;
  std::string dir_;
  std::string log_file_;
  int port_ = 0;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace keel::testing

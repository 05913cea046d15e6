#include "keel/testing/local_postgres.h"

#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "keel/cqrs/errc.h"

namespace keel::testing {
namespace {

Error unavailable(std::string message) { return Error(cqrs::errc::database, std::move(message)); }

}  // namespace

std::vector<std::string> LocalPostgres::as_postgres(std::vector<std::string> argv) const {
  if (::geteuid() != 0) return argv;
  std::vector<std::string> wrapped = {"setpriv", "--reuid=postgres", "--regid=postgres",
                                      "--init-groups"};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  return wrapped;
}

Result<std::unique_ptr<LocalPostgres>> LocalPostgres::start(LocalPostgresOptions options) {
  std::unique_ptr<LocalPostgres> pg(new LocalPostgres());
  pg->options_ = std::move(options);
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-pg.XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr)
    return unavailable(std::string("mkdtemp: ") + std::strerror(errno));
  pg->dir_ = pattern;
  pg->log_file_ = pattern + "/postgres.log";
  if (::geteuid() == 0) {
    passwd* user = ::getpwnam("postgres");
    if (user == nullptr) {
      return unavailable(
          "no 'postgres' user to run the server as (Debian: apt-get install postgresql)");
    }
    if (::chown(pattern.c_str(), user->pw_uid, user->pw_gid) != 0)
      return unavailable("chown " + pattern + ": " + std::strerror(errno));
  }
  auto port = free_loopback_port();
  if (!port) return unavailable(port.error().message());
  pg->port_ = *port;

  const std::string bin = pg->options_.bin_dir + "/";
  auto initdb = Subprocess::spawn_to_file(
      pg->as_postgres({bin + "initdb", "-D", pattern + "/data", "-A", "trust", "-U", "postgres",
                       "-E", "UTF8", "--locale=C", "--no-sync"}),
      pg->log_file_);
  if (!initdb) {
    return unavailable(initdb.error().message() + " (Debian: apt-get install postgresql)");
  }
  auto initdb_exit = (*initdb)->wait(pg->options_.start_timeout);
  if (initdb_exit != 0) {
    return unavailable("initdb failed; its output ends with:\n" + file_tail(pg->log_file_, 2000));
  }

  std::vector<std::string> args = {
      bin + "postgres", "-D", pattern + "/data",           "-p", std::to_string(pg->port_), "-k",
      pattern,          "-c", "listen_addresses=127.0.0.1"};
  for (const auto& setting : pg->options_.settings) {
    args.push_back("-c");
    args.push_back(setting);
  }
  auto process = Subprocess::spawn_to_file(pg->as_postgres(std::move(args)), pg->log_file_);
  if (!process) return process.error();
  pg->process_ = std::move(*process);
  const Readiness readiness = wait_until_ready(*pg->process_, pg->options_.start_timeout, [&] {
    return PQping(pg->conninfo().c_str()) == PQPING_OK;
  });
  if (readiness == Readiness::kReady) return pg;
  if (readiness == Readiness::kExited) {
    pg->process_.reset();
    return unavailable("postgres exited at start; its log ends with:\n" +
                       file_tail(pg->log_file_, 2000));
  }
  return unavailable("postgres did not answer within " +
                     std::to_string(pg->options_.start_timeout / 1s) + " s; its log ends with:\n" +
                     file_tail(pg->log_file_, 2000));
}

std::string LocalPostgres::conninfo() const {
  return "host=" + dir_ + " port=" + std::to_string(port_) + " user=postgres dbname=postgres";
}

LocalPostgres::~LocalPostgres() {
  if (process_) {
    process_->signal(SIGINT);  // fast shutdown: no waiting for clients
    if (!process_->wait(10s)) process_->signal(SIGKILL);
    process_->wait(10s);
    process_.reset();
  }
  std::error_code ignored;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
}

}  // namespace keel::testing

#include "keel/testing/local_etcd.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "keel/coord/coordinator.h"
#include "keel/http/client.h"

namespace keel::testing {

Result<std::unique_ptr<LocalEtcd>> LocalEtcd::start(LocalEtcdOptions options) {
  std::unique_ptr<LocalEtcd> etcd(new LocalEtcd());
  etcd->options_ = std::move(options);
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-etcd.XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return Error(coord::errc::unavailable, std::string("mkdtemp: ") + std::strerror(errno));
  }
  etcd->temp_dir_ = pattern;
  etcd->data_dir_ = etcd->options_.data_dir.empty() ? pattern + "/data" : etcd->options_.data_dir;
  etcd->log_file_ = pattern + "/etcd.log";
  auto client_port = free_loopback_port();
  auto peer_port = free_loopback_port();
  if (!client_port) return Error(coord::errc::unavailable, client_port.error().message());
  if (!peer_port) return Error(coord::errc::unavailable, peer_port.error().message());
  etcd->client_url_ = "http://127.0.0.1:" + std::to_string(*client_port);
  etcd->peer_url_ = "http://127.0.0.1:" + std::to_string(*peer_port);
  if (auto launched = etcd->launch(); !launched) return launched.error();
  return etcd;
}

Status LocalEtcd::launch() {
  std::vector<std::string> args = {options_.binary,
                                   "--name=keel",
                                   "--data-dir=" + data_dir_,
                                   "--listen-client-urls=" + client_url_,
                                   "--advertise-client-urls=" + client_url_,
                                   "--listen-peer-urls=" + peer_url_,
                                   "--initial-advertise-peer-urls=" + peer_url_,
                                   "--initial-cluster=keel=" + peer_url_,
                                   "--initial-cluster-state=new",
                                   "--logger=zap",
                                   "--log-level=warn",
                                   "--log-outputs=" + log_file_};
  args.insert(args.end(), options_.extra_flags.begin(), options_.extra_flags.end());
  auto process = Subprocess::spawn_to_file(std::move(args), log_file_);
  if (!process) {
    return Error(coord::errc::unavailable,
                 process.error().message() + " (Debian: apt-get install etcd-server)");
  }
  process_ = std::move(*process);
  auto url = http::parse_url(client_url_);
  const Readiness readiness = wait_until_ready(*process_, options_.start_timeout, [&] {
    auto connection = http::Connection::open(*url, 200ms);
    if (!connection) return false;
    auto answer = (*connection)->post("/v3/maintenance/status", "{}", 500ms);
    return answer && answer->status == 200;
  });
  if (readiness == Readiness::kReady) return {};
  if (readiness == Readiness::kExited) {
    process_.reset();
    return Error(coord::errc::unavailable,
                 "etcd exited at start; its log ends with:\n" + file_tail(log_file_, 2000));
  }
  kill();
  return Error(coord::errc::unavailable,
               "etcd did not answer within " + std::to_string(options_.start_timeout / 1s) +
                   " s; its log ends with:\n" + file_tail(log_file_, 2000));
}

void LocalEtcd::stop() {
  if (!process_) return;
  process_->signal(SIGTERM);
  if (!process_->wait(5s)) kill();
  process_.reset();
}

void LocalEtcd::kill() {
  if (!process_) return;
  process_->signal(SIGKILL);
  process_->wait(10s);
  process_.reset();
}

Status LocalEtcd::restart() {
  stop();
  return launch();
}

LocalEtcd::~LocalEtcd() {
  stop();
  std::error_code ignored;
  if (!temp_dir_.empty()) std::filesystem::remove_all(temp_dir_, ignored);
}

}  // namespace keel::testing

#include "keel/coord/local_etcd.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "keel/coord/coordinator.h"
#include "keel/http/client.h"

namespace keel::coord {
namespace {

// A port the kernel just handed out as free (bound and released at once).
Result<int> free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error(errc::unavailable, std::string("socket: ") + std::strerror(errno));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    return Error(errc::unavailable, std::string("bind: ") + std::strerror(errno));
  }
  ::close(fd);
  return static_cast<int>(ntohs(address.sin_port));
}

std::string tail(const std::string& path, std::size_t bytes) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  std::string all = text.str();
  return all.size() > bytes ? all.substr(all.size() - bytes) : all;
}

}  // namespace

Result<std::unique_ptr<LocalEtcd>> LocalEtcd::start(LocalEtcdOptions options) {
  std::unique_ptr<LocalEtcd> etcd(new LocalEtcd());
  etcd->options_ = std::move(options);
  std::string pattern = (std::filesystem::temp_directory_path() / "keel-etcd.XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return Error(errc::unavailable, std::string("mkdtemp: ") + std::strerror(errno));
  }
  etcd->temp_dir_ = pattern;
  etcd->data_dir_ = etcd->options_.data_dir.empty() ? pattern + "/data" : etcd->options_.data_dir;
  etcd->log_file_ = pattern + "/etcd.log";
  auto client_port = free_port();
  auto peer_port = free_port();
  if (!client_port) return client_port.error();
  if (!peer_port) return peer_port.error();
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
    return Error(errc::unavailable,
                 process.error().message() + " (Debian: apt-get install etcd-server)");
  }
  process_ = std::move(*process);
  auto url = http::parse_url(client_url_);
  const auto deadline = std::chrono::steady_clock::now() + options_.start_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!process_->running()) {
      process_.reset();
      return Error(errc::unavailable,
                   "etcd exited at start; its log ends with:\n" + tail(log_file_, 2000));
    }
    if (auto connection = http::Connection::open(*url, 200ms)) {
      auto answer = (*connection)->post("/v3/maintenance/status", "{}", 500ms);
      if (answer && answer->status == 200) return {};
    }
    std::this_thread::sleep_for(20ms);
  }
  kill();
  return Error(errc::unavailable, "etcd did not answer within " +
                                      std::to_string(options_.start_timeout / 1s) +
                                      " s; its log ends with:\n" + tail(log_file_, 2000));
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

}  // namespace keel::coord

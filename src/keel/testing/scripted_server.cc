#include "keel/testing/scripted_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "keel/core/text.h"

namespace keel::testing {
namespace {

// Reads until `done(buffer)` or EOF/error; returns what came.
template <typename Done>
std::string read_until(int fd, std::string& buffer, Done done) {
  char chunk[65536];
  while (!done(buffer)) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
  return buffer;
}

}  // namespace

int connect_to(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  timeval timeout{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return fd;
}

bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

int Message::status() const {
  if (start_line.size() < 12 || start_line.compare(0, 5, "HTTP/") != 0) return 0;
  return std::atoi(start_line.substr(9, 3).c_str());
}

std::string Message::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

// Parses one HTTP/1.1 message from `buffer` (reading more from fd as needed): content-length,
// chunked, or (for responses) until close. Consumes it from the buffer.
Message read_message(int fd, std::string& buffer, bool response, bool head) {
  Message message;
  read_until(fd, buffer, [](const std::string& b) { return b.find("\r\n\r\n") != b.npos; });
  std::size_t end = buffer.find("\r\n\r\n");
  if (end == std::string::npos) return message;
  std::string head_text = buffer.substr(0, end);
  buffer.erase(0, end + 4);
  std::size_t line_end = head_text.find("\r\n");
  message.start_line = head_text.substr(0, line_end);
  for (std::size_t pos = line_end; pos != std::string::npos && pos < head_text.size();) {
    std::size_t next = head_text.find("\r\n", pos + 2);
    std::string line =
        head_text.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
    std::size_t colon = line.find(':');
    if (colon != std::string::npos) {
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      message.headers[ascii_lower(line.substr(0, colon))] = value;
    }
    pos = next;
  }
  const int status = message.status();
  if (head || (response && (status == 204 || status == 304 || status / 100 == 1))) {
    message.complete = true;
    return message;
  }
  if (ascii_lower(message.header("transfer-encoding")) == "chunked") {
    for (;;) {
      read_until(fd, buffer, [](const std::string& b) { return b.find("\r\n") != b.npos; });
      std::size_t size_end = buffer.find("\r\n");
      if (size_end == std::string::npos) return message;
      std::size_t size = std::stoul(buffer.substr(0, size_end), nullptr, 16);
      buffer.erase(0, size_end + 2);
      read_until(fd, buffer, [&](const std::string& b) { return b.size() >= size + 2; });
      if (buffer.size() < size + 2) return message;
      message.body += buffer.substr(0, size);
      buffer.erase(0, size + 2);
      if (size == 0) break;
    }
    message.complete = true;
  } else if (auto length = message.header("content-length"); !length.empty()) {
    std::size_t size = std::stoul(length);
    read_until(fd, buffer, [&](const std::string& b) { return b.size() >= size; });
    if (buffer.size() < size) return message;
    message.body = buffer.substr(0, size);
    buffer.erase(0, size);
    message.complete = true;
  } else if (response) {
    read_until(fd, buffer, [](const std::string&) { return false; });
    message.body = std::move(buffer);
    buffer.clear();
    message.complete = true;
  } else {
    message.complete = true;
  }
  return message;
}

ScriptedServer::ScriptedServer(std::string name, Behaviour behaviour)
    : name_(std::move(name)), behaviour_(behaviour) {
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address);
  ::listen(listener_, 128);
  socklen_t length = sizeof address;
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

ScriptedServer::~ScriptedServer() { stop(); }

void ScriptedServer::stop() {
  if (stopped_.exchange(true)) return;
  ::shutdown(listener_, SHUT_RDWR);
  ::close(listener_);
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mutex_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& thread : threads) thread.join();
}

void ScriptedServer::set_body(std::string body, std::string content_type) {
  std::lock_guard lock(mutex_);
  body_ = std::move(body);
  content_type_ = std::move(content_type);
}

Message ScriptedServer::last_request() {
  std::lock_guard lock(mutex_);
  return last_;
}

void ScriptedServer::accept_loop() {
  for (;;) {
    int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return;
    ++connections_;
    std::lock_guard lock(mutex_);
    open_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void ScriptedServer::serve(int fd) {
  std::string buffer;
  for (;;) {
    Message request = read_message(fd, buffer, false);
    if (!request.complete) break;
    ++requests_;
    {
      std::lock_guard lock(mutex_);
      last_ = request;
    }
    const Behaviour behaviour = behaviour_;
    if (behaviour == Behaviour::kReset) break;
    if (behaviour == Behaviour::kHang) {
      char c;
      while (::recv(fd, &c, 1, 0) > 0) {
      }
      break;
    }
    if (behaviour == Behaviour::kSlow) std::this_thread::sleep_for(slow_delay_.load());
    std::string status = behaviour == Behaviour::kFail ? "503 Service Unavailable" : "200 OK";
    std::string body = name_;
    std::string content_type = "text/plain";
    {
      std::lock_guard lock(mutex_);
      if (!body_.empty()) {
        body = body_;
        content_type = content_type_;
      }
    }
    if (behaviour == Behaviour::kEcho) body = request.body;
    // A hop-by-hop header named in Connection: a proxy must not pass it on.
    std::string response = "HTTP/1.1 " + status +
                           "\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nContent-Type: " + content_type + "\r\nX-Upstream: " + name_ +
                           "\r\nConnection: keep-alive, x-secret\r\nX-Secret: hop\r\n\r\n" + body;
    if (!send_all(fd, response)) break;
  }
  ::shutdown(fd, SHUT_RDWR);
  std::lock_guard lock(mutex_);
  open_.erase(std::find(open_.begin(), open_.end(), fd));
  ::close(fd);
}

}  // namespace keel::testing

// A plain HTTP/1.1 server and client on loopback sockets, without Beast, for the proxy's tests
// and `keel demo`: upstreams whose behaviour can be switched while they run (healthy, failing,
// slow, resetting, never answering, echoing), and a raw client that sends any bytes and
// parses what comes back. Deliberately small and independent of the proxy's own HTTP code, so
// that the proxy is checked against something it does not share.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace keel::testing {

// A connected socket to 127.0.0.1:port with a 10 s receive timeout, or -1.
int connect_to(std::uint16_t port);
bool send_all(int fd, std::string_view data);

struct Message {
  std::string start_line;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  bool complete = false;
  int status() const;  // 0 unless a response line
  std::string header(const std::string& name) const;
};

// Reads one message from `fd` (with what is left in `buffer` from before): Content-Length,
// chunked, or for a response without either, until the close. Consumes it from `buffer`.
Message read_message(int fd, std::string& buffer, bool response, bool head = false);

enum class Behaviour {
  kOk,     // 200, the server's name as the body
  kFail,   // 503
  kSlow,   // 200 after `slow_delay`
  kReset,  // closes the connection instead of answering
  kHang,   // never answers
  kEcho,   // 200, the request's body as the body
};

// A server on a free loopback port, a thread per connection.
class ScriptedServer {
 public:
  explicit ScriptedServer(std::string name, Behaviour behaviour = Behaviour::kOk);
  ~ScriptedServer();  // stop()
  ScriptedServer(const ScriptedServer&) = delete;
  ScriptedServer& operator=(const ScriptedServer&) = delete;

  // Closes the listener and every connection, and joins their threads.
  void stop();
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void set(Behaviour behaviour) { behaviour_ = behaviour; }
  void set_slow_delay(std::chrono::milliseconds delay) { slow_delay_ = delay; }
  // What kOk and kSlow answer instead of the name (with this Content-Type).
  void set_body(std::string body, std::string content_type);
  int requests() const { return requests_; }
  int connections() const { return connections_; }
  Message last_request();

 private:
  void accept_loop();
  void serve(int fd);

  std::string name_;
  std::atomic<Behaviour> behaviour_;
  std::atomic<std::chrono::milliseconds> slow_delay_{std::chrono::milliseconds(300)};
  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::thread acceptor_;
  std::atomic<bool> stopped_{false};
  std::atomic<int> requests_{0};
  std::atomic<int> connections_{0};
  std::mutex mutex_;
  std::vector<int> open_;
  std::vector<std::thread> threads_;
  Message last_;
  std::string body_;  // guarded by mutex_; empty: the name
  std::string content_type_;
};

}  // namespace keel::testing

// keel::http::Connection against a scripted server on a loopback socket: whole and streamed
// (chunked) answers, keep-alive reuse, timeouts, cancel from another thread, refused
// connections and answers that are not HTTP.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>

#include "keel/http/client.h"

namespace keel::http {
namespace {

// Accepts one connection and runs `script` on it (with the socket).
class ScriptedServer {
 public:
  explicit ScriptedServer(std::function<void(int)> script) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    EXPECT_EQ(::listen(listener_, 4), 0);
    socklen_t length = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this, script = std::move(script)] {
      int connection = ::accept(listener_, nullptr, nullptr);
      if (connection < 0) return;
      script(connection);
      ::close(connection);
    });
  }
  ~ScriptedServer() {
    ::shutdown(listener_, SHUT_RDWR);
    thread_.join();
    ::close(listener_);
  }
  Url url() const { return *parse_url("127.0.0.1:" + std::to_string(port_)); }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::thread thread_;
};

// Reads one request (headers and a Content-Length body) from `fd`.
std::string read_request(int fd) {
  std::string data;
  char buffer[4096];
  while (true) {
    auto end = data.find("\r\n\r\n");
    if (end != std::string::npos) {
      auto at = data.find("Content-Length: ");
      std::size_t length = at == std::string::npos ? 0 : std::stoul(data.substr(at + 16));
      if (data.size() >= end + 4 + length) return data;
    }
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n <= 0) return data;
    data.append(buffer, static_cast<std::size_t>(n));
  }
}

void write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = ::write(fd, text.data(), text.size());
    if (n <= 0) return;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

TEST(ParseUrl, AcceptsHostPortWithOrWithoutScheme) {
  auto url = parse_url("http://127.0.0.1:2379/");
  ASSERT_TRUE(url);
  EXPECT_EQ(url->host, "127.0.0.1");
  EXPECT_EQ(url->port, "2379");
  EXPECT_EQ(parse_url("localhost:80")->text, "http://localhost:80");
}

TEST(ParseUrl, RejectsWhatItCannotUse) {
  for (const char* bad : {"https://a:1", "a", "a:", ":80", "a:x", "a:70000", "http://a:1/v3"}) {
    auto url = parse_url(bad);
    ASSERT_FALSE(url) << bad;
    EXPECT_TRUE(url.error().is(errc::invalid_url));
    EXPECT_NE(url.error().message().find(bad), std::string::npos) << url.error().message();
  }
}

TEST(Connection, PostsAndReusesTheConnection) {
  std::string first_request;
  ScriptedServer server([&](int fd) {
    first_request = read_request(fd);
    write_all(fd,
              "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    read_request(fd);
    write_all(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found");
  });
  auto connection = Connection::open(server.url(), 1s);
  ASSERT_TRUE(connection) << connection.error().to_string();
  auto first = (*connection)->post("/v3/kv/range", R"({"key":"Zm9v"})", 1s);
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_EQ(first->status, 200u);
  EXPECT_EQ(first->body, "{}");
  EXPECT_EQ(first->content_type, "application/json");
  EXPECT_NE(first_request.find("POST /v3/kv/range HTTP/1.1"), std::string::npos);
  EXPECT_NE(first_request.find(R"({"key":"Zm9v"})"), std::string::npos);
  auto second = (*connection)->post("/v3/other", "{}", 1s);
  ASSERT_TRUE(second) << second.error().to_string();
  EXPECT_EQ(second->status, 404u);
  EXPECT_EQ(second->body, "Not Found");
}

TEST(Connection, StreamsAChunkedBodyPieceByPiece) {
  ScriptedServer server([&](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    write_all(fd, "6\r\n{\"a\":1\r\n");
    std::this_thread::sleep_for(20ms);  // the client sees the first piece on its own
    write_all(fd, "2\r\n}\n\r\n0\r\n\r\n");
  });
  auto connection = Connection::open(server.url(), 1s);
  ASSERT_TRUE(connection);
  auto status = (*connection)->start_stream("/v3/watch", "{}", 1s);
  ASSERT_TRUE(status) << status.error().to_string();
  EXPECT_EQ(*status, 200u);
  std::string body;
  while (true) {
    auto more = (*connection)->read_some(body);
    ASSERT_TRUE(more) << more.error().to_string();
    if (!*more) break;
  }
  EXPECT_EQ(body, "{\"a\":1}\n");
}

TEST(Connection, TimesOutWhenNoAnswerComes) {
  ScriptedServer server([&](int fd) {
    read_request(fd);
    char byte;
    (void)::read(fd, &byte, 1);  // until the client gives up and closes
  });
  auto connection = Connection::open(server.url(), 1s);
  ASSERT_TRUE(connection);
  auto response = (*connection)->post("/slow", "{}", 50ms);
  ASSERT_FALSE(response);
  EXPECT_TRUE(response.error().is(errc::timeout)) << response.error().to_string();
  EXPECT_FALSE((*connection)->usable());
}

TEST(Connection, CancelEndsABlockedStreamRead) {
  ScriptedServer server([&](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    char byte;
    (void)::read(fd, &byte, 1);
  });
  auto connection = Connection::open(server.url(), 1s);
  ASSERT_TRUE(connection);
  ASSERT_TRUE((*connection)->start_stream("/v3/watch", "{}", 1s));
  std::thread canceller([&] {
    std::this_thread::sleep_for(20ms);
    (*connection)->cancel();
  });
  std::string body;
  auto more = (*connection)->read_some(body);
  canceller.join();
  ASSERT_FALSE(more);
  EXPECT_TRUE(more.error().is(errc::cancelled)) << more.error().to_string();
}

TEST(Connection, AStreamThatGoesSilentForItsIdleTimeoutIsDead) {
  ScriptedServer server([&](int fd) {
    read_request(fd);
    write_all(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n: h\r\n");
    char byte;
    (void)::read(fd, &byte, 1);  // then nothing, with the connection open (half-open, as seen)
  });
  auto connection = Connection::open(server.url(), 1s);
  ASSERT_TRUE(connection);
  ASSERT_TRUE((*connection)->start_stream("/v3/watch", "{}", 1s));
  std::string body;
  Result<bool> more = true;
  for (int reads = 0; reads < 10 && more && *more; ++reads)  // the heartbeat, then silence
    more = (*connection)->read_some(body, 200ms);
  EXPECT_EQ(body, ": h");
  ASSERT_FALSE(more);
  EXPECT_TRUE(more.error().is(errc::timeout)) << more.error().to_string();
  (*connection)->cancel();  // lets the script's read end
}

TEST(Connection, ReportsARefusedConnection) {
  int port;
  {
    ScriptedServer closed([](int) {});  // find a free port, then free it
    port = std::stoi(closed.url().port);
    auto poke = Connection::open(closed.url(), 1s);
  }
  auto connection = Connection::open(*parse_url("127.0.0.1:" + std::to_string(port)), 1s);
  ASSERT_FALSE(connection);
  EXPECT_TRUE(connection.error().is(errc::connect_failed));
  EXPECT_NE(connection.error().message().find("refused"), std::string::npos)
      << connection.error().message();
}

TEST(Connection, RejectsAnAnswerThatIsNotHttp) {
  ScriptedServer server([&](int fd) {
    read_request(fd);
    write_all(fd, "-ERR unknown command 'POST'\r\n");
  });
  auto connection = Connection::open(server.url(), 1s);
  ASSERT_TRUE(connection);
  auto response = (*connection)->post("/v3/kv/range", "{}", 1s);
  ASSERT_FALSE(response);
  EXPECT_TRUE(response.error().is(errc::bad_response)) << response.error().to_string();
}

}  // namespace
}  // namespace keel::http

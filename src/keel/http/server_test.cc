// http::Server on a loopback port, spoken to with raw sockets (keel_testing's client, which
// shares no code with the server): whole and streamed answers, answers from another thread,
// bodies by length and chunked, limits, bad requests, HTTP/1.0, and stop() with streams open.
#include "keel/http/server.h"
#include "keel/http/client.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <future>
#include <thread>

#include "keel/testing/scripted_server.h"

namespace keel::http {
namespace {

using testing::connect_to;
using testing::read_message;

class ServerTest : public ::testing::Test {
 protected:
  void serve(Handler handler, ServerOptions options = {}) {
    auto bound = Server::bind(std::move(options), std::move(handler), clock_);
    ASSERT_TRUE(bound) << bound.error().message();
    server_ = std::move(*bound);
    server_->start();
  }
  int connect() { return connect_to(server_->bound().port); }
  // Sends `request` on a new connection and reads one response.
  testing::Message ask(std::string_view request) {
    int fd = connect();
    EXPECT_TRUE(testing::send_all(fd, request));
    std::string buffer;
    auto message = read_message(fd, buffer, true);
    ::close(fd);
    return message;
  }

  SteadyClock clock_;
  std::unique_ptr<Server> server_;
};

Handler echo() {
  return respond_with([](const Request& request) {
    Response response = Response::text(
        200, request.method + " " + request.path + " q=" + request.query + " body=" + request.body);
    response.headers.emplace_back("x-host", std::string(request.header("HOST")));
    return response;
  });
}

TEST_F(ServerTest, AnswersAndKeepsTheConnectionAlive) {
  serve(echo());
  int fd = connect();
  std::string buffer;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(testing::send_all(fd, "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"));
    auto message = read_message(fd, buffer, true);
    ASSERT_TRUE(message.complete);
    EXPECT_EQ(message.status(), 200);
    EXPECT_EQ(message.body, "GET /a/b q=x=1 body=");
    EXPECT_EQ(message.header("x-host"), "h");
    EXPECT_FALSE(message.header("date").empty());
    EXPECT_EQ(message.header("connection"), "");
  }
  ::close(fd);
}

TEST_F(ServerTest, ReadsBodiesByLengthAndChunked) {
  serve(echo());
  auto sized = ask("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(sized.body, "POST /p q= body=hello");
  auto chunked =
      ask("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
          "3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\nTrailer: x\r\n\r\n");
  EXPECT_EQ(chunked.body, "POST /p q= body=hello");
}

TEST_F(ServerTest, AnswersExpectContinueBeforeTheBody) {
  serve(echo());
  int fd = connect();
  ASSERT_TRUE(testing::send_all(
      fd, "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"));
  std::string buffer;
  auto interim = read_message(fd, buffer, true, true);
  EXPECT_EQ(interim.status(), 100);
  ASSERT_TRUE(testing::send_all(fd, "ok"));
  auto final_answer = read_message(fd, buffer, true);
  EXPECT_EQ(final_answer.body, "POST /p q= body=ok");
  ::close(fd);
}

TEST_F(ServerTest, RefusesWhatBreaksTheLimitsOrTheGrammar) {
  ServerOptions options;
  options.limits.max_body_bytes = 4;
  options.limits.max_header_bytes = 1024;
  serve(echo(), options);
  EXPECT_EQ(ask("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello").status(), 413);
  EXPECT_EQ(ask("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n0\r\n\r\n")
                .status(),
            413);
  EXPECT_EQ(ask("GET / HTTP/1.1\r\nHost: h\r\nX: " + std::string(2000, 'a') + "\r\n\r\n").status(),
            431);
  auto garbage = ask("NOT HTTP\r\n\r\n");
  EXPECT_EQ(garbage.status(), 400);
  EXPECT_EQ(garbage.header("connection"), "close");
  EXPECT_EQ(ask("BREW / HTTP/1.1\r\nHost: h\r\n\r\n").status(), 501);
  EXPECT_EQ(
      ask("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n").status(),
      400);
}

TEST_F(ServerTest, Http10ClosesUnlessAskedToKeepAlive) {
  serve(echo());
  auto answer = ask("GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(answer.start_line.substr(0, 8), "HTTP/1.0");
  EXPECT_EQ(answer.header("connection"), "close");
  auto kept = ask("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_EQ(kept.header("connection"), "keep-alive");
}

TEST_F(ServerTest, HeadGetsTheLengthWithoutTheBody) {
  serve(respond_with([](const Request&) { return Response::text(200, "twelve bytes"); }));
  int fd = connect();
  ASSERT_TRUE(
      testing::send_all(fd, "HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  std::string buffer;
  auto head = read_message(fd, buffer, true, true);
  EXPECT_EQ(head.header("content-length"), "12");
  EXPECT_EQ(head.body, "");
  auto get = read_message(fd, buffer, true);
  EXPECT_EQ(get.body, "twelve bytes");  // nothing of the HEAD's body came before it
  ::close(fd);
}

TEST_F(ServerTest, AHandlerMayAnswerFromAnotherThread) {
  std::vector<std::thread> threads;
  std::mutex mutex;
  serve([&](Request& request, Responder responder) {
    std::lock_guard lock(mutex);
    threads.emplace_back([path = request.path, responder = std::move(responder)]() mutable {
      std::this_thread::sleep_for(20ms);
      responder.respond(Response::json(201, "{\"path\":\"" + path + "\"}"));
    });
  });
  auto answer = ask("GET /later HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(answer.status(), 201);
  EXPECT_EQ(answer.header("content-type"), "application/json");
  EXPECT_EQ(answer.body, "{\"path\":\"/later\"}");
  std::lock_guard lock(mutex);
  for (auto& thread : threads) thread.join();
}

TEST_F(ServerTest, ADroppedResponderIsA500) {
  serve([](Request&, Responder) {});
  EXPECT_EQ(ask("GET / HTTP/1.1\r\nHost: h\r\n\r\n").status(), 500);
}

TEST_F(ServerTest, StreamsAChunkedBodyAsItIsWritten) {
  std::promise<Responder> given;
  serve([&](Request&, Responder responder) {
    responder.start_stream(200, "text/event-stream");
    responder.write("data: 1\n\n", 1024);
    given.set_value(std::move(responder));
  });
  int fd = connect();
  ASSERT_TRUE(testing::send_all(fd, "GET /events HTTP/1.1\r\nHost: h\r\n\r\n"));
  Responder responder = given.get_future().get();
  EXPECT_TRUE(responder.write("data: 2\n\n", 1024));
  EXPECT_FALSE(responder.write(std::string(2000, 'x'), 1024)) << "over max_queued";
  responder.end();
  std::string buffer;
  auto message = read_message(fd, buffer, true);
  ASSERT_TRUE(message.complete);
  EXPECT_EQ(message.header("transfer-encoding"), "chunked");
  EXPECT_EQ(message.header("content-type"), "text/event-stream");
  EXPECT_EQ(message.body, "data: 1\n\ndata: 2\n\n");
  ::close(fd);
}

// A stream asked for and refused with an ordinary answer (Content-Length): the client's stream
// reads the status and the body (Boost 1.74 took "no body limit" for a limit below any length).
TEST_F(ServerTest, AStreamRefusedWithABodyIsReadByTheClient) {
  serve([](Request&, Responder responder) {
    responder.respond(Response::json(421, R"({"error":"wrong_node"})"));
  });
  auto url = parse_url("http://127.0.0.1:" + std::to_string(server_->bound().port));
  ASSERT_TRUE(url.ok());
  auto connection = Connection::open(*url, 5s);
  ASSERT_TRUE(connection.ok()) << connection.error().to_string();
  auto status = (*connection)->start_stream("GET", "/events", "", {}, 5s);
  ASSERT_TRUE(status.ok()) << status.error().to_string();
  EXPECT_EQ(*status, 421u);
  std::string body;
  for (;;) {
    auto more = (*connection)->read_some(body, 5s);
    ASSERT_TRUE(more.ok()) << more.error().to_string();
    if (!*more) break;
  }
  EXPECT_EQ(body, R"({"error":"wrong_node"})");
}

TEST_F(ServerTest, AClientThatGoesAwayClosesItsStream) {
  std::promise<Responder> given;
  std::atomic<bool> closed{false};
  serve([&](Request&, Responder responder) {
    responder.start_stream(200, "text/event-stream");
    responder.on_close([&] { closed = true; });
    given.set_value(std::move(responder));
  });
  int fd = connect();
  ASSERT_TRUE(testing::send_all(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  Responder responder = given.get_future().get();
  ::close(fd);
  // Writes fail once the kernel has seen the reset; the stream then reports closed.
  for (int i = 0; i < 500 && !responder.closed(); ++i) {
    responder.write(std::string(4096, 'x'), 1 << 20);
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(responder.closed());
  for (int i = 0; i < 100 && !closed; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(closed);
}

TEST_F(ServerTest, StopEndsOpenStreamsAndWaitsForItsThreads) {
  std::promise<Responder> given;
  std::atomic<bool> closed{false};
  serve([&](Request&, Responder responder) {
    responder.start_stream(200, "text/event-stream");
    responder.write("data: first\n\n", 1024);
    responder.on_close([&] { closed = true; });
    given.set_value(std::move(responder));
  });
  int fd = connect();
  ASSERT_TRUE(testing::send_all(fd, "GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
  Responder responder = given.get_future().get();
  server_->stop(2s);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(responder.closed());
  EXPECT_FALSE(responder.write("late", 1024));
  std::string buffer;
  auto message = read_message(fd, buffer, true);
  EXPECT_TRUE(message.complete) << "the chunked body was ended properly";
  EXPECT_EQ(message.body, "data: first\n\n");
  ::close(fd);
}

TEST_F(ServerTest, ParamsArePercentDecoded) {
  serve(respond_with([](const Request& request) {
    return Response::text(200, request.param("name").value_or("<none>") + "|" +
                                   request.param("bad").value_or("<bad>") + "|" +
                                   request.param("missing").value_or("<none>"));
  }));
  EXPECT_EQ(ask("GET /?name=a%20b+c&bad=%zz HTTP/1.1\r\nHost: h\r\n\r\n").body,
            "a b c|<bad>|<none>");
  EXPECT_EQ(percent_decode("%4"), std::nullopt);
  EXPECT_EQ(percent_decode("%41%42"), "AB");
}

TEST_F(ServerTest, BindsEveryWorkerToTheSamePort) {
  ServerOptions options;
  options.workers = 2;
  serve(echo(), options);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(ask("GET / HTTP/1.1\r\nHost: h\r\n\r\n").status(), 200);
  }
}

}  // namespace
}  // namespace keel::http

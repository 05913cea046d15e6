// keel node (in this process, on a temp dir and a free port) spoken to over raw sockets: every
// route of docs/api.md with its errors, pages and filters on $all, SSE catch-up then live with
// no gap or duplicate, Last-Event-ID, a slow subscriber dropped with a final event, consumer
// groups (acks, nacks, parking, replay, a silent member's deliveries going to another) and
// group definitions and progress surviving a restart.
#include "keel/node/node.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "keel/testing/scripted_server.h"

namespace keel::node {
namespace {

using Json = nlohmann::json;
using testing::connect_to;
using testing::Message;
using testing::read_message;
using testing::send_all;

class NodeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("keel_node_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    config_.data_dir = dir_.string();
    config_.listen = {"127.0.0.1", 0};
    config_.store.durability = eventlog::Durability::kNone;  // the crash test covers fsync
    config_.member_timeout = 300ms;
    config_.heartbeat = 200ms;
  }
  void TearDown() override {
    if (node_) node_->stop();
    std::filesystem::remove_all(dir_);
  }
  void start() {
    auto started = Node::start(config_, clock_);
    ASSERT_TRUE(started) << started.error().message();
    node_ = std::move(*started);
    port_ = node_->api().port;
  }
  void restart() {
    node_->stop();
    node_.reset();
    start();
  }

  Message call(const std::string& method, const std::string& target, const std::string& body = "",
               const std::string& extra = "") {
    int fd = connect_to(port_);
    EXPECT_GE(fd, 0);
    std::string request = method + " " + target + " HTTP/1.1\r\nHost: node\r\n" + extra;
    if (!body.empty() || method == "POST" || method == "PUT") {
      if (extra.find("Content-Type") == std::string::npos) {
        request += "Content-Type: application/json\r\n";
      }
      request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    }
    request += "\r\n" + body;
    EXPECT_TRUE(send_all(fd, request));
    std::string buffer;
    Message response = read_message(fd, buffer, true);
    ::close(fd);
    return response;
  }
  Json call_json(const std::string& method, const std::string& target, const std::string& body,
                 int expected_status) {
    Message response = call(method, target, body);
    EXPECT_EQ(response.status(), expected_status)
        << method << " " << target << ": " << response.body;
    if (response.body.empty()) return Json();
    return Json::parse(response.body, nullptr, false);
  }
  Json append(const std::string& stream, const std::string& body, int status = 200) {
    return call_json("POST", "/v1/streams/" + stream, body, status);
  }

  // An open SSE subscription: reads frames as they come.
  class Sse {
   public:
    Sse(std::uint16_t port, const std::string& target, const std::string& extra = "") {
      fd_ = connect_to(port);
      send_all(fd_, "GET " + target + " HTTP/1.1\r\nHost: node\r\n" + extra + "\r\n");
      // The head comes once the node has placed the subscription (`from=end` is resolved):
      // what is appended after this is the subscriber's.
      while (!head_done_ && read_more()) {
      }
    }
    ~Sse() { ::close(fd_); }
    // The next frame's fields ("id", "event", "data"; comments skipped), or empty at the end.
    std::map<std::string, std::string> next() {
      for (;;) {
        auto end = text_.find("\n\n");
        if (end != std::string::npos) {
          std::string frame = text_.substr(0, end);
          text_.erase(0, end + 2);
          if (frame.rfind(":", 0) == 0) continue;  // a comment (heartbeat)
          std::map<std::string, std::string> fields;
          std::size_t at = 0;
          while (at < frame.size()) {
            auto line_end = frame.find('\n', at);
            std::string line = frame.substr(at, line_end - at);
            auto colon = line.find(": ");
            if (colon != std::string::npos) fields[line.substr(0, colon)] += line.substr(colon + 2);
            if (line_end == std::string::npos) break;
            at = line_end + 1;
          }
          return fields;
        }
        if (!read_more()) return {};
      }
    }
    std::string head;

   private:
    // Reads raw bytes and strips the head and the chunk framing.
    bool read_more() {
      char buffer[65536];
      ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return false;
      raw_.append(buffer, static_cast<std::size_t>(n));
      if (!head_done_) {
        auto end = raw_.find("\r\n\r\n");
        if (end == std::string::npos) return true;
        head = raw_.substr(0, end);
        raw_.erase(0, end + 4);
        head_done_ = true;
      }
      for (;;) {  // chunked: "<hex>\r\n<data>\r\n"
        auto line_end = raw_.find("\r\n");
        if (line_end == std::string::npos) return true;
        std::size_t size = std::stoul(raw_.substr(0, line_end), nullptr, 16);
        if (size == 0) return !text_.empty();
        if (raw_.size() < line_end + 2 + size + 2) return true;
        text_.append(raw_, line_end + 2, size);
        raw_.erase(0, line_end + 2 + size + 2);
      }
    }
    int fd_ = -1;
    bool head_done_ = false;
    std::string raw_;
    std::string text_;
  };

  std::filesystem::path dir_;
  NodeConfig config_;
  SteadyClock clock_;
  std::unique_ptr<Node> node_;
  std::uint16_t port_ = 0;
};

TEST_F(NodeTest, AppendsAndReadsStreamsAndTheLog) {
  start();
  Json one =
      append("order-1", R"({"type":"OrderPlaced","data":{"total":5},"metadata":{"by":"t"}})");
  EXPECT_EQ(one["first_version"], 0);
  EXPECT_EQ(one["last_position"], 0);
  Json batch = append("order-1",
                      R"({"expected_version":0,"events":[{"type":"ItemAdded","data":{"sku":"a"}},
                          {"type":"ItemAdded","data":"plain text"}]})");
  EXPECT_EQ(batch["first_version"], 1);
  EXPECT_EQ(batch["last_version"], 2);
  append("payment-7", R"({"type":"Paid","data":{}})");

  Json page = call_json("GET", "/v1/streams/order-1?limit=2", "", 200);
  ASSERT_EQ(page["events"].size(), 2u);
  EXPECT_EQ(page["events"][0]["data"]["total"], 5);
  EXPECT_EQ(page["events"][0]["metadata"]["by"], "t");
  EXPECT_EQ(page["next"]["from"], 2);
  Json rest = call_json("GET", "/v1/streams/order-1?from=2", "", 200);
  ASSERT_EQ(rest["events"].size(), 1u);
  EXPECT_EQ(rest["events"][0]["data"], "plain text");
  EXPECT_EQ(rest["events"][0]["data_format"], "json");  // a JSON string is JSON
  EXPECT_TRUE(rest["next"].is_null());
  Json backwards = call_json("GET", "/v1/streams/order-1?direction=backwards&limit=1", "", 200);
  EXPECT_EQ(backwards["events"][0]["version"], 2);

  // $all by filter, paged until next is null.
  std::vector<std::string> streams;
  std::string target = "/v1/all?category=order&limit=1";
  for (int pages = 0; pages < 10; ++pages) {
    Json all = call_json("GET", target, "", 200);
    for (const auto& event : all["events"]) streams.push_back(event["stream"]);
    if (all["next"].is_null()) break;
    target =
        "/v1/all?category=order&limit=1&from=" + std::to_string(all["next"]["from"].get<int>());
  }
  EXPECT_EQ(streams, (std::vector<std::string>{"order-1", "order-1", "order-1"}));
  Json typed = call_json("GET", "/v1/all?type=Paid", "", 200);
  ASSERT_EQ(typed["events"].size(), 1u);
  EXPECT_EQ(typed["events"][0]["stream"], "payment-7");
  Json last = call_json("GET", "/v1/all?direction=backwards&limit=1", "", 200);
  EXPECT_EQ(last["events"][0]["type"], "Paid");
}

TEST_F(NodeTest, ConflictsAndRepeatedIdsAnswerAsTheStoreDecides) {
  start();
  const std::string event = R"({"id":"3f0b7a0e-8a4e-4d1b-9d9c-3c1f6a2b9e01","type":"A","data":1})";
  Json first = append("s-1", event);
  Json again = append("s-1", event);
  EXPECT_EQ(again["first_position"], first["first_position"]);
  EXPECT_EQ(again["duplicate"], true);
  Json conflict = append("s-1", R"({"expected_version":7,"events":[{"type":"B","data":2}]})", 409);
  EXPECT_EQ(conflict["error"], "wrong_expected_version");
  EXPECT_EQ(conflict["actual_version"], 0);
  Json none = append(
      "s-2", R"({"expected_version":"stream_exists","events":[{"type":"B","data":2}]})", 409);
  EXPECT_EQ(none["actual_version"], -1);
}

TEST_F(NodeTest, BadRequestsGetJsonErrorsWithTheRightStatus) {
  config_.http.max_body_bytes = 4096;
  start();
  EXPECT_EQ(append("s-1", "{not json", 400)["error"], "bad_json");
  EXPECT_EQ(append("s-1", R"({"type":5,"data":1})", 400)["error"], "invalid_argument");
  EXPECT_EQ(append("$system", R"({"type":"A","data":1})", 403)["error"], "system_stream");
  EXPECT_EQ(call_json("GET", "/v2/nothing", "", 404)["error"], "not_found");
  Message wrong_method = call("PATCH", "/v1/streams/s-1");
  EXPECT_EQ(wrong_method.status(), 405);
  EXPECT_NE(wrong_method.header("allow").find("POST"), std::string::npos);
  Message too_big = call("POST", "/v1/streams/s-1", std::string(5000, ' '));
  EXPECT_EQ(too_big.status(), 413);
  EXPECT_EQ(Json::parse(too_big.body)["error"], "payload_too_large");
  Message text =
      call("POST", "/v1/streams/s-1", R"({"type":"A","data":1})", "Content-Type: text/plain\r\n");
  EXPECT_EQ(text.status(), 415);
  Message garbage = [&] {
    int fd = connect_to(port_);
    send_all(fd, "NOT HTTP\r\n\r\n");
    std::string buffer;
    Message m = read_message(fd, buffer, true);
    ::close(fd);
    return m;
  }();
  EXPECT_EQ(garbage.status(), 400);
  EXPECT_EQ(Json::parse(garbage.body)["error"], "bad_request");
  // Nothing of that reached the store.
  EXPECT_TRUE(call_json("GET", "/v1/streams/s-1", "", 200)["events"].empty());
}

TEST_F(NodeTest, MetadataAndDeletesHideEvents) {
  start();
  for (int i = 0; i < 5; ++i) append("m-1", R"({"type":"A","data":1})");
  EXPECT_EQ(call("PUT", "/v1/streams/m-1/metadata", R"({"max_count":2})").status(), 204);
  Json metadata = call_json("GET", "/v1/streams/m-1/metadata", "", 200);
  EXPECT_EQ(metadata["max_count"], 2);
  EXPECT_EQ(call_json("GET", "/v1/streams/m-1", "", 200)["events"].size(), 2u);
  EXPECT_EQ(call("DELETE", "/v1/streams/m-1").status(), 204);
  EXPECT_TRUE(call_json("GET", "/v1/streams/m-1", "", 200)["events"].empty());
  append("h-1", R"({"type":"A","data":1})");
  EXPECT_EQ(call("DELETE", "/v1/streams/h-1?hard=true").status(), 204);
  EXPECT_EQ(call_json("GET", "/v1/streams/h-1", "", 410)["error"], "stream_deleted");
}

TEST_F(NodeTest, SubscriptionsCatchUpThenGoLiveWithoutGapOrDuplicate) {
  start();
  for (int i = 0; i < 300; ++i) append("live-1", R"({"type":"A","data":1})");
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    for (int i = 0; i < 300; ++i) append("live-1", R"({"type":"A","data":1})");
    writing = false;
  });
  Sse stream(port_, "/v1/streams/live-1/subscribe");
  Sse all(port_, "/v1/all/subscribe?category=live");
  for (std::uint64_t expected = 0; expected < 600; ++expected) {
    auto frame = stream.next();
    ASSERT_EQ(frame["id"], std::to_string(expected));
    EXPECT_EQ(frame["event"], "A");
    auto event = Json::parse(frame["data"]);
    EXPECT_EQ(event["version"], expected);
    auto from_all = all.next();
    EXPECT_EQ(from_all["id"], std::to_string(expected)) << "positions are versions here";
  }
  writer.join();
  EXPECT_NE(stream.head.find("text/event-stream"), std::string::npos);
}

TEST_F(NodeTest, LastEventIdResumesAfterTheLastEventSeen) {
  start();
  for (int i = 0; i < 10; ++i) append("r-1", R"({"type":"A","data":1})");
  Sse resumed(port_, "/v1/streams/r-1/subscribe?from=start", "Last-Event-ID: 6\r\n");
  EXPECT_EQ(resumed.next()["id"], "7");
  EXPECT_EQ(resumed.next()["id"], "8");
  Sse from_end(port_, "/v1/all/subscribe?from=end");
  append("r-1", R"({"type":"B","data":1})");
  auto frame = from_end.next();
  EXPECT_EQ(frame["event"], "B");
  EXPECT_EQ(frame["id"], "10");
}

TEST_F(NodeTest, ASlowSubscriberIsToldAndDisconnectedNotBuffered) {
  config_.limits.subscriber_buffer_bytes = 64 * 1024;
  start();
  Sse slow(port_, "/v1/streams/big-1/subscribe");
  const std::string payload(16 * 1024, 'x');
  // 12.8 MB while the subscriber reads nothing: more than any socket buffers and its 64 KiB.
  for (int i = 0; i < 800; ++i) {
    append("big-1", R"({"type":"A","data":")" + payload + "\"}");
  }
  // Read it all now: the events it got, then the final `dropped` event, then the end.
  std::map<std::string, std::string> frame, last_event;
  int events = 0;
  while (!(frame = slow.next()).empty()) {
    if (frame["event"] == "A") {
      ++events;
      last_event = frame;
    } else {
      break;
    }
  }
  EXPECT_EQ(frame["event"], "dropped");
  auto reason = Json::parse(frame["data"]);
  EXPECT_EQ(reason["reason"], "slow_consumer");
  EXPECT_EQ(std::to_string(reason["last_id"].get<int>()), last_event["id"]);
  EXPECT_LT(events, 800);
  EXPECT_NE(node_->metrics_text().find("keel_node_subscribers_dropped_total 1"), std::string::npos);
}

TEST_F(NodeTest, ConsumerGroupsShareAckParkAndReplay) {
  start();
  for (int i = 0; i < 4; ++i) append("job-" + std::to_string(i), R"({"type":"Job","data":1})");
  const std::string definition =
      R"({"categories":["job"],"max_deliveries":2,"retry_backoff_ms":0})";
  Json group = call_json("PUT", "/v1/groups/workers", definition, 200);
  EXPECT_EQ(group["name"], "workers");
  call_json("PUT", "/v1/groups/workers", definition, 200);  // idempotent
  EXPECT_EQ(call_json("PUT", "/v1/groups/workers", R"({"categories":["other"]})", 409)["error"],
            "conflict");
  Json polled = call_json("POST", "/v1/groups/workers/poll",
                          R"({"member":"w1","max":10,"wait_ms":2000})", 200);
  ASSERT_EQ(polled["deliveries"].size(), 4u);
  std::vector<std::uint64_t> ids;
  for (const auto& delivery : polled["deliveries"]) ids.push_back(delivery["id"]);
  Json acked = call_json("POST", "/v1/groups/workers/ack",
                         Json{{"member", "w1"}, {"ids", {ids[0], ids[1], ids[2]}}}.dump(), 200);
  EXPECT_EQ(acked["settled"].size(), 3u);
  Json parked = call_json(
      "POST", "/v1/groups/workers/nack",
      Json{{"member", "w1"}, {"ids", {ids[3]}}, {"action", "park"}, {"reason", "bad"}}.dump(), 200);
  EXPECT_EQ(parked["settled"].size(), 1u);
  Json parked_page;
  for (int i = 0; i < 100; ++i) {  // parking is written by the group's thread
    parked_page = call_json("GET", "/v1/groups/workers/parked", "", 200);
    if (!parked_page["events"].empty()) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(parked_page["events"].size(), 1u);
  EXPECT_EQ(call_json("POST", "/v1/groups/workers/parked/replay", "", 200)["replayed"], 1);
  Json again =
      call_json("POST", "/v1/groups/workers/poll", R"({"member":"w1","wait_ms":2000})", 200);
  ASSERT_EQ(again["deliveries"].size(), 1u);
  EXPECT_EQ(again["deliveries"][0]["replayed"], true);
  Json stats = call_json("GET", "/v1/groups/workers", "", 200);
  EXPECT_EQ(stats["stats"]["acked"], 3);
  EXPECT_EQ(call_json("GET", "/v1/groups", "", 200)["groups"].size(), 1u);
  EXPECT_EQ(call("DELETE", "/v1/groups/workers").status(), 204);
  EXPECT_EQ(call_json("GET", "/v1/groups/workers", "", 404)["error"], "not_found");
  EXPECT_EQ(call_json("POST", "/v1/groups/workers/poll", R"({"member":"w1"})", 404)["error"],
            "not_found");
}

TEST_F(NodeTest, ASilentMembersDeliveriesGoToAnother) {
  start();
  for (int i = 0; i < 3; ++i) append("task-1", R"({"type":"T","data":1})");
  call_json("PUT", "/v1/groups/g", R"({"categories":["task"],"ack_timeout_ms":60000})", 200);
  Json first =
      call_json("POST", "/v1/groups/g/poll", R"({"member":"dies","max":10,"wait_ms":2000})", 200);
  ASSERT_EQ(first["deliveries"].size(), 3u);
  // "dies" never comes back: after member_timeout (300 ms) it has left, long before the ack
  // timeout, and its deliveries go to the next member.
  Json second =
      call_json("POST", "/v1/groups/g/poll", R"({"member":"lives","max":10,"wait_ms":5000})", 200);
  ASSERT_EQ(second["deliveries"].size(), 3u);
  EXPECT_EQ(second["deliveries"][0]["attempt"], 2);
}

TEST_F(NodeTest, ANewSessionUnderAMembersNameGetsWhatTheOldProcessHeldAtOnce) {
  start();
  for (int i = 0; i < 3; ++i) append("task-1", R"({"type":"T","data":1})");
  call_json("PUT", "/v1/groups/g", R"({"categories":["task"],"ack_timeout_ms":60000})", 200);
  Json first = call_json("POST", "/v1/groups/g/poll",
                         R"({"member":"w","session":"a","max":10,"wait_ms":2000})", 200);
  ASSERT_EQ(first["deliveries"].size(), 3u);
  // The process of session "a" died; its replacement polls under the same name. The name stays
  // busy (no member timeout applies) and the ack timeout is a minute away: only the new session
  // can bring the deliveries back this soon.
  Json second = call_json("POST", "/v1/groups/g/poll",
                          R"({"member":"w","session":"b","max":10,"wait_ms":5000})", 200);
  ASSERT_EQ(second["deliveries"].size(), 3u);
  EXPECT_EQ(second["deliveries"][0]["attempt"], 2);
  EXPECT_EQ(second["deliveries"][0]["event"]["version"], 0);  // in order
  // The old deliveries are no longer anyone's; the same session polling again gets nothing new.
  Json stale =
      call_json("POST", "/v1/groups/g/ack",
                Json{{"member", "w"}, {"ids", {first["deliveries"][0]["id"]}}}.dump(), 200);
  EXPECT_EQ(stale["failed"].size(), 1u);
  Json again = call_json("POST", "/v1/groups/g/poll",
                         R"({"member":"w","session":"b","max":10,"wait_ms":100})", 200);
  EXPECT_EQ(again["deliveries"].size(), 0u);
  Json acked = call_json("POST", "/v1/groups/g/ack",
                         Json{{"member", "w"},
                              {"ids",
                               {second["deliveries"][0]["id"], second["deliveries"][1]["id"],
                                second["deliveries"][2]["id"]}}}
                             .dump(),
                         200);
  EXPECT_EQ(acked["settled"].size(), 3u);
  call_json("POST", "/v1/groups/g/poll", R"({"member":"w","session":""})", 400);
}

TEST_F(NodeTest, GroupsAndTheirProgressSurviveARestart) {
  start();
  for (int i = 0; i < 3; ++i) append("p-1", R"({"type":"P","data":1})");
  call_json("PUT", "/v1/groups/keep", R"({"categories":["p"],"checkpoint_after_acks":1})", 200);
  Json polled =
      call_json("POST", "/v1/groups/keep/poll", R"({"member":"m","max":1,"wait_ms":2000})", 200);
  ASSERT_EQ(polled["deliveries"].size(), 1u);
  call_json("POST", "/v1/groups/keep/ack",
            Json{{"member", "m"}, {"ids", {polled["deliveries"][0]["id"]}}}.dump(), 200);
  restart();
  Json after = call_json("GET", "/v1/groups/keep", "", 200);
  EXPECT_EQ(after["categories"][0], "p");
  Json rest =
      call_json("POST", "/v1/groups/keep/poll", R"({"member":"m","max":10,"wait_ms":2000})", 200);
  ASSERT_EQ(rest["deliveries"].size(), 2u);
  EXPECT_EQ(rest["deliveries"][0]["event"]["version"], 1);
}

TEST_F(NodeTest, OperationalEndpoints) {
  config_.admin = http::HostPort{"127.0.0.1", 0};
  start();
  EXPECT_EQ(call_json("GET", "/healthz", "", 200)["status"], "ok");
  EXPECT_EQ(call_json("GET", "/ready", "", 200)["ready"], true);
  append("x-1", R"({"type":"A","data":1})");
  Message metrics = call("GET", "/metrics");
  EXPECT_NE(metrics.body.find("keel_thread_pool_bulkhead_calls_total"), std::string::npos);
  auto admin = [&](const std::string& method, const std::string& target) {
    int fd = connect_to(node_->admin()->port);
    send_all(fd, method + " " + target + " HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
    std::string buffer;
    Message answer = read_message(fd, buffer, true);
    ::close(fd);
    return answer;
  };
  EXPECT_EQ(admin("GET", "/metrics").status(), 200);
  // The console: its page with the stream's event, the stream listing, and the API's reads
  // (not its writes) for the stream browser.
  Message page = admin("GET", "/");
  EXPECT_EQ(page.header("content-type"), "text/html; charset=utf-8");
  EXPECT_NE(page.body.find("data-kind=\"node\""), std::string::npos);
  EXPECT_NE(page.body.find("<td>x-1<td>"), std::string::npos) << page.body;
  EXPECT_EQ(Json::parse(admin("GET", "/console/streams?prefix=x-").body),
            Json::parse(R"({"streams":[{"name":"x-1","events":1}],"more":false})"));
  EXPECT_EQ(admin("GET", "/console/streams?limit=0").status(), 400);
  EXPECT_EQ(Json::parse(admin("GET", "/v1/streams/x-1").body)["events"][0]["data"], 1);
  EXPECT_EQ(admin("POST", "/v1/streams/x-1").status(), 404) << "no writes on the admin listener";
  EXPECT_EQ(admin("GET", "/console/console.js").status(), 200);
}

TEST_F(NodeTest, StopEndsSubscriptionsWithAFinalEvent) {
  start();
  append("e-1", R"({"type":"A","data":1})");
  Sse open(port_, "/v1/streams/e-1/subscribe");
  EXPECT_EQ(open.next()["id"], "0");
  node_->stop();
  auto frame = open.next();
  EXPECT_EQ(frame["event"], "shutdown");
  EXPECT_EQ(Json::parse(frame["data"])["last_id"], 0);
  EXPECT_TRUE(open.next().empty()) << "and the stream ends";
}

}  // namespace
}  // namespace keel::node

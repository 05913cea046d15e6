// `keel node` killed with SIGKILL while several clients append over HTTP, 25 rounds on one data
// directory. After each restart every append a client saw acknowledged is there, byte for byte
// and in order; an append whose answer was lost is retried with the same event id and expected
// version, and is then there exactly once (never twice). At the end `keel eventlog verify`
// finds no damage.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "keel/testing/scripted_server.h"
#include "keel/testing/subprocess.h"

namespace keel {
namespace {

using Json = nlohmann::json;
using testing::Subprocess;

constexpr int kRounds = 25;
constexpr int kClients = 4;

std::string event_id(int client, std::uint64_t seq) {
  char text[40];
  std::snprintf(text, sizeof text, "%08x-0000-4000-8000-%012llx", client + 1,
                static_cast<unsigned long long>(seq + 1));
  return text;
}

struct Answer {
  int status = 0;  // 0: no answer (the node died)
  std::string body;
};

Answer http(std::uint16_t port, const std::string& method, const std::string& target,
            const std::string& body = "") {
  int fd = testing::connect_to(port);
  if (fd < 0) return {};
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: n\r\n";
  if (!body.empty()) {
    request +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n" + body;
  Answer answer;
  if (testing::send_all(fd, request)) {
    std::string buffer;
    auto message = testing::read_message(fd, buffer, true);
    if (message.complete) answer = {message.status(), message.body};
  }
  ::close(fd);
  return answer;
}

struct Client {
  int index = 0;
  std::string stream;
  std::vector<std::string> acknowledged;  // payloads, by version
  std::optional<std::string> pending;     // sent, answer lost: retried after the restart
};

// Appends version acknowledged.size() with its id; true when the node acknowledged it.
bool append(std::uint16_t port, Client& client, const std::string& payload) {
  const std::uint64_t version = client.acknowledged.size();
  Json body = {{"expected_version", version == 0 ? Json("no_stream") : Json(version - 1)},
               {"events",
                {{{"id", event_id(client.index, version)},
                  {"type", "Wrote"},
                  {"data", {{"payload", payload}}}}}}};
  Answer answer = http(port, "POST", "/v1/streams/" + client.stream, body.dump());
  if (answer.status == 200) {
    client.acknowledged.push_back(payload);
    client.pending.reset();
    return true;
  }
  EXPECT_TRUE(answer.status == 0 || answer.status == 503)
      << "append " << client.stream << "@" << version << ": " << answer.status << " "
      << answer.body;
  client.pending = payload;
  return false;
}

class NodeCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("keel_node_crash_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Subprocess> start_node() {
    auto port = testing::free_loopback_port();
    EXPECT_TRUE(port);
    port_ = static_cast<std::uint16_t>(*port);
    auto node = Subprocess::spawn_to_file(
        {KEEL_BINARY, "--log-level", "warn", "node", "--data-dir", dir_.string(), "--listen",
         "127.0.0.1:" + std::to_string(port_), "--durability", "every_commit"},
        log_path());
    EXPECT_TRUE(node) << node.error().message();
    // Generous: under a sanitizer on a busy machine, recovery after kill -9 takes seconds.
    for (int i = 0; i < 3000; ++i) {
      if (http(port_, "GET", "/ready").status == 200) return std::move(*node);
      std::this_thread::sleep_for(10ms);
    }
    ADD_FAILURE() << "keel node did not become ready in 30 s (its log: " << log_path() << ")";
    return std::move(*node);
  }

  std::string log_path() const {
    return (dir_.parent_path() / ("keel_node_crash_" + std::to_string(::getpid()) + ".log"))
        .string();
  }

  std::filesystem::path dir_;
  std::uint16_t port_ = 0;
};

TEST_F(NodeCrashTest, AcknowledgedAppendsSurviveKill9AndRetriesNeverDuplicate) {
  std::vector<Client> clients(kClients);
  for (int c = 0; c < kClients; ++c) clients[c] = {c, "crash-" + std::to_string(c), {}, {}};
  std::mt19937 random(42);
  std::uint64_t acknowledged_total = 0;
  for (int round = 0; round < kRounds; ++round) {
    auto node = start_node();
    // First, the appends whose answers were lost in the last crash: the same id and expected
    // version again. Either the store had them (the first result comes back) or not (written
    // now): once, either way.
    for (auto& client : clients) {
      if (client.pending) {
        const std::string payload = *client.pending;
        ASSERT_TRUE(append(port_, client, payload)) << "retry after restart, round " << round;
      }
    }
    // Everything acknowledged so far is there, byte for byte, once.
    for (const auto& client : clients) {
      std::vector<std::string> stored;
      for (std::uint64_t from = 0;;) {
        Answer page =
            http(port_, "GET",
                 "/v1/streams/" + client.stream + "?limit=1000&from=" + std::to_string(from));
        ASSERT_EQ(page.status, 200) << page.body;
        Json json = Json::parse(page.body);
        for (const auto& event : json["events"]) {
          stored.push_back(event["data"]["payload"]);
          EXPECT_EQ(event["id"], event_id(client.index, event["version"]));
        }
        if (json["next"].is_null()) break;
        from = json["next"]["from"];
      }
      ASSERT_EQ(stored, client.acknowledged) << client.stream << " after round " << round;
    }
    // Appends from every client at once, then SIGKILL at a random moment.
    std::atomic<bool> go{true};
    std::vector<std::thread> writers;
    for (auto& client : clients) {
      writers.emplace_back([&, &client = client] {
        for (int i = 0; go; ++i) {
          const std::string payload =
              "r" + std::to_string(round) + "-" + std::to_string(i) + std::string(i % 64, 'x');
          if (!append(port_, client, payload)) break;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50 + random() % 250));
    node->signal(SIGKILL);
    node->wait(10s);
    go = false;
    for (auto& writer : writers) writer.join();
  }
  for (const auto& client : clients) acknowledged_total += client.acknowledged.size();
  EXPECT_GT(acknowledged_total, 100u) << "the rounds appended something";
  auto node = start_node();
  node->signal(SIGTERM);
  EXPECT_EQ(node->wait(30s), 0);
  std::string output;
  auto verify =
      Subprocess::spawn({KEEL_BINARY, "eventlog", "verify", dir_.string()},
                        [&](std::string_view line) { output.append(line).push_back('\n'); });
  ASSERT_TRUE(verify);
  EXPECT_EQ((*verify)->wait(60s), 0) << output;
}

}  // namespace
}  // namespace keel

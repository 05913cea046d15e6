// The consumer-group member process node_group_members_test starts (and kills): polls GROUP of
// the `keel node` at URL as MEMBER with keel::NodeClient, acks each delivery on its own, in the
// order received, and reports on stdout, one line per write(2):
//   got ID STREAM VERSION ATTEMPT T   after a poll, each delivery in the order the node sent them
//   ack ID STREAM VERSION T           before the ack of delivery ID is sent
//   acked ID                          the node took the ack
//   refused ID MESSAGE                the node refused it (the delivery was no longer this
//   member's) ack_error ID MESSAGE              no answer: whether the node took it is unknown
//   poll_error MESSAGE                a poll failed (tried again)
//   stall HELD                        stopped on purpose, holding HELD unacked deliveries
// T is steady_clock (CLOCK_MONOTONIC) in ns, one clock for every process of the machine, so
// that the test can put the lines of different members in one order. The `ack` line is out
// before the ack is sent: a member killed after it may or may not have acked, never acked
// without a line saying so.
//
//   node_group_member URL GROUP MEMBER [STALL_AFTER_ACKS STALL_AT]
//
// SIGTERM ends it between batches (exit 0), never between the node taking an ack and its
// `acked` line: the test stops the survivors that way and reads every outcome.
//
// With STALL_AFTER_ACKS, once that many acks went through, the member stops at the first batch
// that lets it stop at STALL_AT, prints `stall` and waits to be killed:
//   poll    after a poll returned (every delivery of the batch held)
//   mid     after the first half of a batch of two or more was acked
//   intent  after the `ack` line of a batch's first delivery, before that ack is sent
//   sent    after the node took the first ack of a batch of two or more, before `acked`
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "keel/node/api.h"
#include "keel/node/client.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

// One line in one write(2): a kill leaves whole lines only.
void say(const std::string& line) {
  std::string text = line + "\n";
  const char* at = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    ssize_t n = ::write(STDOUT_FILENO, at, left);
    if (n <= 0) std::_Exit(4);  // the test is gone
    at += n;
    left -= static_cast<std::size_t>(n);
  }
}

[[noreturn]] void stall(std::size_t held) {
  say("stall " + std::to_string(held));
  for (;;) ::pause();  // until SIGKILL
}

std::string one_line(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

volatile sig_atomic_t stopping = 0;

}  // namespace

int main(int argc, char** argv) {
  struct sigaction on_term = {};
  on_term.sa_handler = [](int) { stopping = 1; };
  ::sigaction(SIGTERM, &on_term, nullptr);
  if (argc != 4 && argc != 6) {
    std::fprintf(stderr, "usage: %s URL GROUP MEMBER [STALL_AFTER_ACKS poll|mid|intent|sent]\n",
                 argv[0]);
    return 2;
  }
  const std::string url = argv[1], group = argv[2], member = argv[3];
  const bool stalls = argc == 6;
  const std::uint64_t stall_after = stalls ? std::strtoull(argv[4], nullptr, 10) : 0;
  const std::string stall_at = stalls ? argv[5] : "";
  if (stalls && stall_at != "poll" && stall_at != "mid" && stall_at != "intent" &&
      stall_at != "sent") {
    std::fprintf(stderr, "node_group_member: unknown stall point %s\n", stall_at.c_str());
    return 2;
  }
  auto client = keel::NodeClient::connect({.url = url, .timeout = 10s});
  if (!client) {
    std::fprintf(stderr, "node_group_member: %s\n", client.error().message().c_str());
    return 3;
  }
  std::uint64_t acks = 0;
  while (!stopping) {
    auto polled = (*client)->poll(group, member, 10, 500ms);
    if (!polled) {
      say("poll_error " + one_line(polled.error().message()));
      std::this_thread::sleep_for(50ms);
      continue;
    }
    const std::vector<keel::pubsub::Delivery>& batch = *polled;
    if (batch.empty()) continue;
    for (const auto& d : batch) {
      say("got " + std::to_string(d.id) + " " + d.event.stream + " " +
          std::to_string(d.event.version) + " " + std::to_string(d.attempt) + " " +
          std::to_string(now_ns()));
    }
    // Where this batch stops, if it is the one: the index of the delivery it stops at.
    std::size_t stop_at = batch.size();
    if (stalls && acks >= stall_after) {
      if (stall_at == "poll" || stall_at == "intent") stop_at = 0;
      if ((stall_at == "mid" || stall_at == "sent") && batch.size() >= 2) {
        stop_at = stall_at == "mid" ? batch.size() / 2 : 0;
      }
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const auto& d = batch[i];
      if (i == stop_at && (stall_at == "poll" || stall_at == "mid")) stall(batch.size() - i);
      say("ack " + std::to_string(d.id) + " " + d.event.stream + " " +
          std::to_string(d.event.version) + " " + std::to_string(now_ns()));
      if (i == stop_at && stall_at == "intent") stall(batch.size() - i);
      const std::uint64_t id = d.id;
      keel::Status acked = (*client)->ack(group, member, {&id, 1});
      if (i == stop_at && stall_at == "sent") stall(batch.size() - i - 1);
      if (acked) {
        ++acks;
        say("acked " + std::to_string(d.id));
      } else if (acked.error().is(keel::node::errc::invalid_argument)) {
        say("refused " + std::to_string(d.id) + " " + one_line(acked.error().message()));
      } else {
        say("ack_error " + std::to_string(d.id) + " " + one_line(acked.error().message()));
      }
    }
  }
  return 0;
}

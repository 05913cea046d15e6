#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "keel/cli/demo.h"
#include "keel/testing/candidates.h"
#include "keel/testing/local_etcd.h"

namespace keel::cli {
namespace {

using namespace keel::testing;
using Kind = CandidateEvent::Kind;

double ms_since(std::chrono::steady_clock::time_point start,
                std::chrono::steady_clock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

int fail(const std::string& message) {
  std::fprintf(stderr, "keel demo (leader election): %s\n", message.c_str());
  return 1;
}

}  // namespace

int run_election_demo(const DemoOptions&) {
  std::printf("\nLeader Election: three `keel ctl elect` processes on a local etcd, TTL 2 s\n");
  auto etcd = LocalEtcd::start();
  if (!etcd) {
    return fail(etcd.error().message() +
                "\n(etcd comes from Debian's etcd-server package; scripts/install-deps installs "
                "it)");
  }
  std::error_code error;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", error).string();
  if (error) return fail("cannot find this program's path: " + error.message());
  Candidates candidates({.keel_binary = self,
                         .endpoint = (*etcd)->endpoint(),
                         .election = "demo/leader",
                         .ttl = 2s,
                         .write_interval = 250ms,
                         .writes_after_loss = 3});
  for (int i = 0; i < 3; ++i) {
    if (auto added = candidates.add(); !added) return fail(added.error().message());
  }
  auto settled = candidates.wait_settled(3, 15s);
  if (!settled) return fail(settled.error().message());
  int leader = *settled;
  // The token of `candidate`'s latest election.
  auto token_of = [&](int candidate) {
    long long token = 0;
    for (const auto& event : candidates.events()) {
      if (event.candidate == candidate && event.kind == Kind::kElected) token = event.token;
    }
    return token;
  };
  std::printf(
      "  etcd %s: candidate-%d leads with fencing token %lld and writes "
      "demo/leader-resource every 250 ms, guarded by that token\n",
      (*etcd)->endpoint().c_str(), leader, token_of(leader));
  std::this_thread::sleep_for(700ms);

  // 1. kill -9: the others wait for the lease to expire.
  std::size_t from = candidates.size();
  auto signalled = std::chrono::steady_clock::now();
  candidates.process(leader).signal(SIGKILL);
  auto next = candidates.wait_for(Candidates::elected_other_than(leader), from, 15s);
  if (!next) return fail("no candidate took over after kill -9:\n" + candidates.dump());
  std::printf(
      "  kill -9 candidate-%d -> candidate-%d elected after %.0f ms (token %lld; the "
      "lease had to expire)\n",
      leader, next->candidate, ms_since(signalled, next->seen),
      static_cast<long long>(next->token));
  leader = next->candidate;
  std::this_thread::sleep_for(700ms);

  // 2. SIGSTOP past the TTL: a successor takes over; the paused one wakes with an old token.
  from = candidates.size();
  signalled = std::chrono::steady_clock::now();
  candidates.process(leader).signal(SIGSTOP);
  next = candidates.wait_for(Candidates::elected_other_than(leader), from, 15s);
  if (!next) return fail("no candidate took over from a paused leader:\n" + candidates.dump());
  std::printf("  SIGSTOP candidate-%d -> candidate-%d elected after %.0f ms (token %lld)\n", leader,
              next->candidate, ms_since(signalled, next->seen),
              static_cast<long long>(next->token));
  std::this_thread::sleep_for(1s);
  candidates.process(leader).signal(SIGCONT);
  std::printf("  SIGCONT candidate-%d, which still holds token %lld; what it prints:\n", leader,
              token_of(leader));
  if (!candidates.wait_for(Candidates::is(Kind::kCampaigning, leader), from, 10s)) {
    return fail("the paused leader never campaigned again:\n" + candidates.dump());
  }
  for (const auto& event : candidates.events()) {
    if (event.candidate == leader && event.seen > signalled && event.kind != Kind::kOther) {
      std::printf("    candidate-%d: %s\n", leader, event.line.c_str());
    }
  }
  leader = next->candidate;
  std::this_thread::sleep_for(700ms);

  // 3. Graceful: SIGTERM resigns, and the next candidate's watch fires at once.
  from = candidates.size();
  signalled = std::chrono::steady_clock::now();
  candidates.process(leader).signal(SIGTERM);
  next = candidates.wait_for(Candidates::elected_other_than(leader), from, 15s);
  if (!next) return fail("no candidate took over after a resign:\n" + candidates.dump());
  std::printf("  SIGTERM candidate-%d (it resigns) -> candidate-%d elected after %.0f ms\n", leader,
              next->candidate, ms_since(signalled, next->seen));

  int accepted = 0;
  int rejected = 0;
  for (const auto& event : candidates.events()) {
    accepted += event.kind == Kind::kWriteAccepted;
    rejected += event.kind == Kind::kWriteRejected;
  }
  const int stale = candidates.stale_writes_accepted();
  std::printf("  fenced writes: %d accepted, %d rejected, %d accepted from a stale token\n",
              accepted, rejected, stale);
  return stale == 0 ? 0 : 1;
}

}  // namespace keel::cli

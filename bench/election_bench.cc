// Leader-election figures for bench/election.sh, from one run against one local etcd:
//   keel kill -9   three `keel ctl elect` candidates (TTL 2 s, fenced writes every 20 ms); the
//                  leader is SIGKILLed at a random phase of its keep-alive cycle; time until
//                  another candidate prints that it is elected. A new candidate replaces it.
//   keel resign    the same with SIGTERM: the leader resigns (revokes its lease).
//   keel pause     the leader is SIGSTOPped past its TTL, then SIGCONTed: it must print that it
//                  lost, and the old-token writes it then tries must all be rejected.
//   etcdctl lease  the protocol's floor at the same TTL: A = `etcdctl lease grant TTL` +
//                  `etcdctl put --lease NAME/<lease>` + `etcdctl lease keep-alive` (SIGKILLed);
//                  B = `etcdctl elect NAME B`; time until B prints.
//   etcdctl resign A and B both `etcdctl elect`; A gets SIGTERM (it resigns).
// Stale writes accepted (by revision order or after a loss) are counted across every keel trial.
// Prints a table and, as its last line, one JSON object.
//
//   build/bench/election_bench --keel build/keel [--trials 20] [--ttl-ms 2000]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "keel/core/random.h"
#include "keel/testing/candidates.h"
#include "keel/testing/local_etcd.h"

namespace {

using namespace keel;
using namespace keel::testing;
using Wall = std::chrono::steady_clock;
using Kind = CandidateEvent::Kind;

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "election_bench: %s\n", message.c_str());
  std::exit(1);
}

double ms(Wall::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Series {
  std::vector<double> values;
  double percentile(double p) const {
    if (values.empty()) return -1;
    auto sorted = values;
    std::sort(sorted.begin(), sorted.end());
    return sorted[static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1) + 0.5)];
  }
  double max() const {
    return values.empty() ? -1 : *std::max_element(values.begin(), values.end());
  }
};

struct Bench {
  std::string keel;
  std::string endpoint;
  int trials = 20;
  Duration ttl = 2s;
  Random random{static_cast<std::uint64_t>(::getpid())};
  int stale_writes_accepted = 0;
  int stale_writes_rejected = 0;

  // A random point in the keep-alive cycle (renewals every TTL/3), so that trials sample it.
  void random_phase() { std::this_thread::sleep_for(200ms + ttl / 3 * random.uniform01()); }

  // Kills (or stops, or terminates) the leader `trials` times; each time a fresh candidate
  // joins so that three stay in the race.
  Series keel_trials(const std::string& mode, int signal_number, int count) {
    Candidates candidates({.keel_binary = keel,
                           .endpoint = endpoint,
                           .election = "bench/" + mode + "-" + std::to_string(::getpid()),
                           .ttl = ttl,
                           .writes_after_loss = signal_number == SIGSTOP ? 5 : 0});
    for (int i = 0; i < 3; ++i) {
      if (auto added = candidates.add(); !added) die(added.error().message());
    }
    auto settled = candidates.wait_settled(3, 15s);
    if (!settled) die(settled.error().message());
    int leader = *settled;
    Series series;
    for (int trial = 0; trial < count; ++trial) {
      random_phase();
      const std::size_t from = candidates.size();
      const auto signalled = Wall::now();
      candidates.process(leader).signal(signal_number);
      auto next = candidates.wait_for(Candidates::elected_other_than(leader), from, ttl * 3 + 10s);
      if (!next)
        die(mode + " trial " + std::to_string(trial) + ": no new leader\n" + candidates.dump());
      series.values.push_back(ms(next->seen - signalled));
      std::fprintf(stderr, "keel %s trial %d: %.0f ms\n", mode.c_str(), trial + 1,
                   series.values.back());
      if (signal_number == SIGSTOP) {
        // Past its TTL, then awake: it must find out, and its old-token writes must fail.
        std::this_thread::sleep_for(ttl);
        candidates.process(leader).signal(SIGCONT);
        if (!candidates.wait_for(Candidates::is(Kind::kLost, leader), from, 10s)) {
          die("the paused leader never printed that it lost\n" + candidates.dump());
        }
        // It re-campaigns after its five rejected writes; wait until it does.
        candidates.wait_for(Candidates::is(Kind::kCampaigning, leader), from, 10s);
        for (const auto& event : candidates.events()) {
          if (event.candidate == leader && event.kind == Kind::kWriteRejected &&
              event.seen > signalled) {
            ++stale_writes_rejected;
          }
        }
      } else {
        auto added = candidates.add();
        if (!added) die(added.error().message());
        if (!candidates.wait_for(Candidates::is(Kind::kCampaigning, *added), 0, 10s)) {
          die("a new candidate never campaigned\n" + candidates.dump());
        }
      }
      leader = next->candidate;
      std::this_thread::sleep_for(200ms);  // the newcomer's campaign reaches its watch
    }
    stale_writes_accepted += candidates.stale_writes_accepted();
    return series;
  }

  // Runs etcdctl with `args`, returns its output (exits on failure).
  std::string etcdctl(std::vector<std::string> args) {
    args.insert(args.begin(), {"etcdctl", "--endpoints=" + endpoint});
    std::string output;
    std::mutex mutex;
    auto process = Subprocess::spawn(args, [&](std::string_view line) {
      std::lock_guard lock(mutex);
      output += std::string(line) + "\n";
    });
    if (!process) die(process.error().message());
    auto code = (*process)->wait(30s);
    process->reset();
    if (code != 0) die("etcdctl " + args[2] + " failed: " + output);
    return output;
  }

  // `etcdctl elect NAME VALUE`, noting when it first prints (it prints once elected).
  struct Elect {
    std::mutex mutex;
    std::optional<Wall::time_point> elected;
    std::unique_ptr<Subprocess> process;
  };
  std::unique_ptr<Elect> elect(const std::string& name, const std::string& value) {
    auto e = std::make_unique<Elect>();
    auto process = Subprocess::spawn({"etcdctl", "--endpoints=" + endpoint, "elect", name, value},
                                     [raw = e.get()](std::string_view) {
                                       std::lock_guard lock(raw->mutex);
                                       if (!raw->elected) raw->elected = Wall::now();
                                     });
    if (!process) die(process.error().message());
    e->process = std::move(*process);
    return e;
  }
  std::optional<Wall::time_point> wait_elected(Elect& e, Duration timeout) {
    const auto deadline = Wall::now() + timeout;
    for (;;) {
      {
        std::lock_guard lock(e.mutex);
        if (e.elected || Wall::now() >= deadline) return e.elected;
      }
      std::this_thread::sleep_for(1ms);
    }
  }
  // Waits until `count` keys exist under the election prefix (B's campaign key is written).
  void wait_keys(const std::string& name, int count) {
    for (int i = 0; i < 500; ++i) {
      auto keys = etcdctl({"get", "--prefix", name + "/", "--keys-only"});
      if (std::count(keys.begin(), keys.end(), '/') >= count) return;
      std::this_thread::sleep_for(20ms);
    }
    die("the etcdctl candidate never campaigned in " + name);
  }

  Series etcdctl_lease_trials(int count) {
    Series series;
    const auto ttl_s = std::to_string(std::chrono::ceil<std::chrono::seconds>(ttl).count());
    for (int trial = 0; trial < count; ++trial) {
      const std::string name =
          "bench/etcdctl-lease-" + std::to_string(::getpid()) + "-" + std::to_string(trial);
      // "lease 694d7c4c7e8a1d0f granted with TTL(2s)"
      auto granted = etcdctl({"lease", "grant", ttl_s});
      char lease[32] = {};
      if (std::sscanf(granted.c_str(), "lease %31s granted", lease) != 1) {
        die("unexpected etcdctl lease grant output: " + granted);
      }
      etcdctl({"put", std::string("--lease=") + lease, name + "/" + lease, "A"});
      auto keeper = Subprocess::spawn(
          {"etcdctl", "--endpoints=" + endpoint, "lease", "keep-alive", lease}, nullptr);
      if (!keeper) die(keeper.error().message());
      auto b = elect(name, "B");
      wait_keys(name, 2);
      random_phase();
      if (wait_elected(*b, 0s)) die("the etcdctl candidate was elected before A was killed");
      const auto killed = Wall::now();
      (*keeper)->signal(SIGKILL);
      auto elected = wait_elected(*b, ttl * 3 + 10s);
      if (!elected) die("etcdctl lease trial: B was never elected");
      series.values.push_back(ms(*elected - killed));
      std::fprintf(stderr, "etcdctl lease trial %d: %.0f ms\n", trial + 1, series.values.back());
      b->process->signal(SIGTERM);
      b->process->wait(10s);
    }
    return series;
  }

  Series etcdctl_resign_trials(int count) {
    Series series;
    for (int trial = 0; trial < count; ++trial) {
      const std::string name =
          "bench/etcdctl-resign-" + std::to_string(::getpid()) + "-" + std::to_string(trial);
      auto a = elect(name, "A");
      if (!wait_elected(*a, 10s)) die("etcdctl elect A was never elected");
      auto b = elect(name, "B");
      wait_keys(name, 2);
      std::this_thread::sleep_for(200ms);
      const auto signalled = Wall::now();
      a->process->signal(SIGTERM);
      auto elected = wait_elected(*b, 10s);
      if (!elected) die("etcdctl resign trial: B was never elected");
      series.values.push_back(ms(*elected - signalled));
      std::fprintf(stderr, "etcdctl resign trial %d: %.0f ms\n", trial + 1, series.values.back());
      b->process->signal(SIGTERM);
      b->process->wait(10s);
    }
    return series;
  }
};

std::string affinity() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return "unknown";
  std::string cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &set)) cpus += (cpus.empty() ? "" : ",") + std::to_string(cpu);
  }
  return cpus;
}

}  // namespace

int main(int argc, char** argv) {
  Bench bench;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--keel") {
      bench.keel = argv[i + 1];
    } else if (flag == "--trials") {
      bench.trials = std::atoi(argv[i + 1]);
    } else if (flag == "--ttl-ms") {
      bench.ttl = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    } else {
      die("unknown flag " + flag +
          " (usage: election_bench --keel PATH [--trials N] [--ttl-ms MS])");
    }
  }
  if (bench.keel.empty() || ::access(bench.keel.c_str(), X_OK) != 0) {
    die("--keel must name the keel executable (e.g. build/keel)");
  }
  if (bench.trials < 1) die("--trials must be at least 1");
  auto etcd = LocalEtcd::start();
  if (!etcd) die(etcd.error().message());
  bench.endpoint = (*etcd)->endpoint();
  const double ttl_ms = ms(bench.ttl);
  std::printf("etcd %s (pid %d), TTL %.0f ms, %d trials per mode\n", bench.endpoint.c_str(),
              (*etcd)->pid(), ttl_ms, bench.trials);
  std::printf("CPU placement: etcd, candidates and etcdctl unpinned on CPUs %s (%ld online)\n",
              affinity().c_str(), sysconf(_SC_NPROCESSORS_ONLN));
  std::fflush(stdout);

  const Series keel_kill = bench.keel_trials("kill", SIGKILL, bench.trials);
  const Series keel_resign = bench.keel_trials("resign", SIGTERM, bench.trials);
  const int pause_trials = std::max(1, bench.trials / 4);
  const Series keel_pause = bench.keel_trials("pause", SIGSTOP, pause_trials);
  const Series etcdctl_lease = bench.etcdctl_lease_trials(bench.trials);
  const Series etcdctl_resign = bench.etcdctl_resign_trials(std::max(1, bench.trials / 2));

  std::printf("\n%-34s %7s %9s %9s\n", "hand-over (signal -> new leader)", "trials", "p50_ms",
              "max_ms");
  auto row = [](const char* name, const Series& s) {
    std::printf("%-34s %7zu %9.0f %9.0f\n", name, s.values.size(), s.percentile(0.5), s.max());
  };
  row("keel kill -9", keel_kill);
  row("etcdctl lease kill -9 (floor)", etcdctl_lease);
  row("keel SIGSTOP past the TTL", keel_pause);
  row("keel resign (SIGTERM)", keel_resign);
  row("etcdctl elect resign (SIGTERM)", etcdctl_resign);
  const double ratio = keel_kill.percentile(0.5) / etcdctl_lease.percentile(0.5);
  std::printf("\nkeel / etcdctl kill -9 p50: %.3f (target <= 1.15); TTL + 0.6 s = %.0f ms\n", ratio,
              ttl_ms + 600);
  std::printf("stale writes: %d accepted (target 0), %d rejected after SIGCONT\n",
              bench.stale_writes_accepted, bench.stale_writes_rejected);
  std::printf(
      "{\"ttl_ms\":%.0f,\"trials\":%d,\"keel_failover_p50_ms\":%.0f,\"keel_failover_max_ms\":%.0f,"
      "\"etcdctl_lease_failover_p50_ms\":%.0f,\"etcdctl_lease_failover_max_ms\":%.0f,"
      "\"keel_vs_etcdctl_failover_p50_ratio\":%.3f,\"keel_pause_failover_p50_ms\":%.0f,"
      "\"keel_resign_p50_ms\":%.1f,\"keel_resign_max_ms\":%.1f,\"etcdctl_resign_p50_ms\":%.1f,"
      "\"stale_writes_accepted\":%d,\"stale_writes_rejected\":%d}\n",
      ttl_ms, bench.trials, keel_kill.percentile(0.5), keel_kill.max(),
      etcdctl_lease.percentile(0.5), etcdctl_lease.max(), ratio, keel_pause.percentile(0.5),
      keel_resign.percentile(0.5), keel_resign.max(), etcdctl_resign.percentile(0.5),
      bench.stale_writes_accepted, bench.stale_writes_rejected);
  return 0;
}

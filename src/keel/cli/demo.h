// `keel demo`: shows the patterns working, with faults injected. Each capability adds a part.
#pragma once

#include <spdlog/spdlog.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "keel/core/log.h"
#include "keel/core/result.h"

namespace keel::testing {
class Subprocess;
}

namespace keel::cli {

// While it lives, an area's log says only errors: for a demo part that narrates the events the
// area would also log, so that the log lines do not land in the middle of its output.
class QuietLog {
 public:
  explicit QuietLog(std::string_view area) : logger_(log::get(area)), level_(logger_->level()) {
    logger_->set_level(spdlog::level::err);
  }
  ~QuietLog() { logger_->set_level(level_); }
  QuietLog(const QuietLog&) = delete;
  QuietLog& operator=(const QuietLog&) = delete;

 private:
  std::shared_ptr<spdlog::logger> logger_;
  spdlog::level::level_enum level_;
};

struct DemoOptions {
  int seconds = 15;
  std::uint64_t seed = 1;
  // YAML with the resilience policies' settings; empty uses the built-in ones.
  std::string config_path;
  // Run only this part (resilience, balance, eventlog, node, cqrs, proxy, strangler,
  // election, cluster); empty: all.
  std::string only;
  // After the parts, keep a proxy and a node running under load, with faults in a cycle, and
  // print their consoles' URLs (until Ctrl-C).
  bool console = false;
};

// A caller protected by bulkhead, circuit breaker, retry and timeout from a flaky, slow
// in-process dependency. Prints a line a second and a summary. Returns the process exit code.
int run_resilience_demo(const DemoOptions& options);

// Linkerd's load-balancing experiment on Keel's policies: a table and a latency histogram for
// round_robin, least_request and peak_ewma when one endpoint stalls.
int run_balance_demo(const DemoOptions& options);

// An event-sourced shopping cart: commands, the events they append, the stream as stored, a
// restart, and the state rebuilt from the events.
int run_eventlog_demo(const DemoOptions& options);

// Three `keel ctl elect` processes on a local etcd: the leader is killed, paused and made to
// resign; prints each hand-over time and the paused leader's rejected stale writes.
int run_election_demo(const DemoOptions& options);

// keel proxy in front of three local upstreams, one failing, one slowing down, then all failing
// and recovering: a line a second with answers, errors, ejections, the breaker and retries.
int run_proxy_demo(const DemoOptions& options);

// A route moving from legacy to modern: shadow diffs with the noise baseline, a canary, modern,
// and a rollback when modern starts failing.
int run_strangler_demo(const DemoOptions& options);

// Three `keel node`s on a local etcd share the slots; a fourth joins and a rebalance moves slots
// to it while clients append: a line a second with appends, redirects, the epoch and the move.
int run_cluster_demo(const DemoOptions& options);
// `keel demo --console`: a proxy and a node under load with faults in a cycle, to watch in
// their consoles; runs until SIGINT or SIGTERM.
int run_console_demo(const DemoOptions& options);

// A `keel node` process driven with `keel ctl` and `curl`: appends, a conflict, an idempotent
// retry, reads, a live tail, a consumer group polled and acked over HTTP, its metrics.
int run_node_demo(const DemoOptions& options);

// A child process a demo started: SIGTERM and a wait when it goes out of scope, whatever
// happened (Subprocess's own destructor then SIGKILLs one that did not stop).
struct DemoChild {
  std::unique_ptr<testing::Subprocess> process;
  ~DemoChild();
};
// Starts `keel node` (this binary) on a free loopback port, data in DIR/node, log in
// DIR/node.log; its URL once it answers.
Result<std::string> start_demo_node(const std::string& dir, DemoChild& node);

// The orders example: commands, a projection into SQLite with read-your-writes, a consumer
// group of three workers with one killed and a poison event parked, and a rebuild; then the
// same commands on a `keel node` process, projected by another process (below).
int run_cqrs_demo(const DemoOptions& options);

// `keel orders-projection --node URL --db FILE` (hidden; the CQRS demo starts it): the orders
// projection as a process of its own, following a node into SQLite until SIGTERM. Prints
// "at N" whenever every event below position N is in the read model.
int run_orders_projection(const std::string& node_url, const std::string& db_path);

}  // namespace keel::cli

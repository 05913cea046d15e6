// The cluster's rebalance simulated from 3 to 30 nodes: the real Controller (its move state
// machine and its etcd transactions, on the in-process coordinator) on the manual clock, with
// simulated disks and network. A node joins a balanced cluster, and a node is drained; for
// each size: slots and bytes moved, moves, how long the rebalance takes, and the fence of one
// move (the copy of what was written to its slots since the catch-up). What a 2-core machine
// cannot show with real processes: how these grow with the cluster.
//
//   cluster_simulation [--gib-per-node 8] [--write-mib-s 20] [--copy-mib-s 200] [--etcd-ms 2]
//                      [--slots 4096] [--max-slots-per-move 16] [--sizes 3,5,10,20,30]
//
// Model: data is spread evenly over slots; each node takes writes at --write-mib-s spread over
// its slots; a copy streams at --copy-mib-s (the lesser of the source's disk read, the network
// and the target's disk write); every etcd transaction and node-to-node call costs --etcd-ms.
// The last line is one JSON object of the figures.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <map>
#include <sstream>

#include "bench_util.h"
#include "keel/cluster/controller.h"
#include "keel/coord/election.h"
#include "keel/coord/in_process_coordinator.h"
#include "keel/coord/membership.h"

namespace {

using namespace keel;

struct Model {
  double bytes_per_slot = 0;
  double write_bytes_per_slot_s = 0;
  double copy_bytes_s = 0;
  Duration rtt = 2ms;
};

// Copies take the time the model says, on the manual clock.
class SimulatedDriver final : public cluster::MoveDriver {
 public:
  SimulatedDriver(ManualClock& clock, const Model& model) : clock_(clock), model_(model) {}
  Status copy(const cluster::Move& move, const cluster::NodeInfo&, const cluster::NodeInfo&,
              bool until_fenced) override {
    const double slots = move.last - move.first + 1;
    double bytes;
    if (!until_fenced) {
      // The slots' data, then rounds of what was written meanwhile until the rest is small.
      bytes = slots * model_.bytes_per_slot;
      double seconds = bytes / model_.copy_bytes_s;
      for (int round = 0; round < 3; ++round) {
        const double written = seconds * slots * model_.write_bytes_per_slot_s;
        bytes += written;
        seconds = written / model_.copy_bytes_s;
      }
      last_catch_up_s_ = seconds;
    } else {
      // What came in between the last catch-up and the fence.
      bytes = last_catch_up_s_ * slots * model_.write_bytes_per_slot_s;
    }
    bytes_moved += bytes;
    const Duration took = std::chrono::duration_cast<Duration>(
                              std::chrono::duration<double>(bytes / model_.copy_bytes_s)) +
                          2 * model_.rtt;
    clock_.advance(took);
    return {};
  }
  double bytes_moved = 0;

 private:
  ManualClock& clock_;
  const Model& model_;
  double last_catch_up_s_ = 0;
};

struct Outcome {
  std::uint64_t slots = 0;
  std::uint64_t moves = 0;
  double bytes = 0;
  double seconds = 0;
  double fence_p99_ms = 0;
};

// A cluster of `nodes` balanced over `slots`, then the goal `change` gives; runs the
// controller until the map reaches it.
Outcome simulate(int nodes, std::uint32_t slots, std::uint32_t per_move, const Model& model,
                 bool join) {
  ManualClock clock;
  coord::InProcessCoordinator store(clock);
  cluster::Keys keys{"sim"};
  coord::Membership members(store, clock, keys.members(), 3600s);
  std::vector<std::unique_ptr<coord::Registration>> registrations;
  std::vector<std::string> ids;
  for (int i = 0; i < nodes + (join ? 1 : 0); ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "n%02d", i);
    ids.push_back(id);
    cluster::NodeInfo info{id, std::string("http://") + id, "", ""};
    auto joined = members.join({id, info.api, info.to_json()});
    if (!joined) {
      std::fprintf(stderr, "join: %s\n", joined.error().message().c_str());
      std::exit(1);
    }
    registrations.push_back(std::move(*joined));
  }
  coord::Elector elector(store, clock, keys.controller(), {.ttl = 3600s});
  auto leadership = elector.campaign("n00");
  SimulatedDriver driver(clock, model);
  cluster::Controller controller(
      store, **leadership, driver, keys,
      {.slot_count = slots, .initial_nodes = 1, .max_slots_per_move = per_move});
  // The balanced map over the first `nodes`, then the goal.
  std::vector<std::string> first(ids.begin(), ids.begin() + nodes);
  auto map = shard::SlotMap::create(first, {}, slots);
  (void)store.put(keys.map(), map->to_json());
  std::vector<std::string> after = ids;
  if (!join) after.erase(after.begin() + nodes - 1);  // drain the last
  auto goal = map->rebalance(after, {});
  (void)store.put(keys.goal(), goal->to_json());
  Outcome out;
  const auto diff = shard::SlotMap::diff(*map, *goal);
  if (!diff) std::exit(1);
  for (const auto& move : *diff) {
    out.slots += move.last_slot - move.first_slot + 1;
  }
  const TimePoint start = clock.now();
  std::vector<double> fences;
  TimePoint fenced_at = start;
  for (int step = 0; step < 1000000; ++step) {
    clock.advance(model.rtt);  // the step's read of the state
    auto done = controller.step();
    if (!done) {
      std::fprintf(stderr, "controller step failed: %s\n", done.error().message().c_str());
      break;
    }
    clock.advance(model.rtt);  // its write
    if (*done == cluster::Controller::Step::kFenced) fenced_at = clock.now();
    if (*done == cluster::Controller::Step::kFlipped) {
      ++out.moves;
      fences.push_back(std::chrono::duration<double, std::milli>(clock.now() - fenced_at).count());
    }
    if (*done == cluster::Controller::Step::kIdle) break;
  }
  std::sort(fences.begin(), fences.end());
  out.bytes = driver.bytes_moved;
  out.seconds = std::chrono::duration<double>(clock.now() - start).count();
  out.fence_p99_ms = bench::percentile(fences, 0.99);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"The cluster's rebalance, simulated from 3 to 30 nodes"};
  double gib_per_node = 8, write_mib_s = 20, copy_mib_s = 200, etcd_ms = 2;
  std::uint32_t slots = 4096, per_move = 16;
  std::string sizes_text = "3,5,10,20,30";
  app.add_option("--gib-per-node", gib_per_node);
  app.add_option("--write-mib-s", write_mib_s, "Writes each node takes");
  app.add_option("--copy-mib-s", copy_mib_s, "How fast a move copies");
  app.add_option("--etcd-ms", etcd_ms, "One etcd transaction or node call");
  app.add_option("--slots", slots);
  app.add_option("--max-slots-per-move", per_move);
  app.add_option("--sizes", sizes_text);
  CLI11_PARSE(app, argc, argv);

  std::map<std::string, double> figures;
  std::printf("%-6s %-8s %-7s %-7s %-10s %-12s %-14s\n", "nodes", "change", "slots", "moves",
              "GiB moved", "seconds", "fence p99 ms");
  std::stringstream sizes(sizes_text);
  for (std::string item; std::getline(sizes, item, ',');) {
    const int nodes = std::stoi(item);
    Model model;
    model.bytes_per_slot = gib_per_node * nodes * (1ull << 30) / slots;
    model.write_bytes_per_slot_s = write_mib_s * nodes * (1 << 20) / slots;
    model.copy_bytes_s = copy_mib_s * (1 << 20);
    model.rtt =
        std::chrono::duration_cast<Duration>(std::chrono::duration<double, std::milli>(etcd_ms));
    for (bool join : {true, false}) {
      const Outcome o = simulate(nodes, slots, per_move, model, join);
      const std::string change = join ? "join" : "drain";
      std::printf("%-6d %-8s %-7llu %-7llu %-10.2f %-12.1f %-14.1f\n", nodes, change.c_str(),
                  static_cast<unsigned long long>(o.slots),
                  static_cast<unsigned long long>(o.moves), o.bytes / (1ull << 30), o.seconds,
                  o.fence_p99_ms);
      const std::string prefix = change + "_" + std::to_string(nodes) + "_nodes_";
      figures[prefix + "gib_moved"] = o.bytes / (1ull << 30);
      figures[prefix + "rebalance_s"] = o.seconds;
      figures[prefix + "fence_p99_ms"] = o.fence_p99_ms;
      figures[prefix + "slots_moved"] = static_cast<double>(o.slots);
    }
  }
  bench::print_figures_line(figures);
  return 0;
}

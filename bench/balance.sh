#!/usr/bin/env bash
# Load balancing and sharding figures: pick() and placement micro-benchmarks, placement
# quality (balance and disruption), and the Linkerd-style stalled-endpoint simulation.
# Prints tables, then one JSON line with every figure.
#
#   bench/balance.sh [BUILD_DIR]      (make bench runs it on build/)
set -euo pipefail
build=${1:-build}
min_time=${MIN_TIME:-0.5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); single-threaded figures"
for name in balance/load_balancer_benchmark shard/placement_benchmark; do
  "$build/src/keel/$name" --benchmark_min_time="$min_time" --benchmark_repetitions=3 \
    --benchmark_report_aggregates_only=true --benchmark_out="$out/$(basename "$name").json" \
    --benchmark_out_format=json >/dev/null
done
"$build/bench/placement_quality" | tee "$out/placement.txt"
echo
"$build/bench/lb_simulation" | tee "$out/simulation.txt"
echo

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
ns = {}
for f in ("load_balancer_benchmark.json", "placement_benchmark.json"):
    for b in json.load(open(os.path.join(out, f)))["benchmarks"]:
        if b.get("aggregate_name") == "median":
            ns[b["run_name"].replace("/real_time", "")] = b["real_time"]
print(f"{'micro-benchmark (median of 3)':44} {'ns':>8}")
for name, value in ns.items():
    print(f"{name:44} {value:8.1f}")
last = lambda name: json.loads(open(os.path.join(out, name)).read().strip().splitlines()[-1])
simulation = last("simulation.txt")
figures = {
    "pick_round_robin_ns": round(ns["BM_Pick/round_robin"], 1),
    "pick_round_robin_weighted_ns": round(ns["BM_Pick/round_robin_weighted"], 1),
    "pick_least_request_ns": round(ns["BM_Pick/least_request"], 1),
    "pick_peak_ewma_ns": round(ns["BM_Pick/peak_ewma"], 1),
    "pick_ring_hash_ns": round(ns["BM_Pick/ring_hash"], 1),
    "pick_maglev_ns": round(ns["BM_Pick/maglev"], 1),
    "ring_lookup_100_nodes_ns": round(ns["BM_HashRingLookup"], 1),
    "jump_10_buckets_ns": round(ns["BM_JumpConsistentHash/10"], 1),
    "jump_1000_buckets_ns": round(ns["BM_JumpConsistentHash/1000"], 1),
    "placement": last("placement.txt"),
    "simulation": simulation,
    "peak_ewma_vs_round_robin_p999_ratio": round(
        simulation["round_robin"]["p999_ms"] / simulation["peak_ewma"]["p999_ms"], 1),
    # Three endpoints, one stalled for 10 s then healthy again; and none stalled.
    "peak_ewma_stall_recovery_ms": simulation["peak_ewma"]["three_stall_recovery_ms"],
    "peak_ewma_three_stall_vs_round_robin_p999_ratio": round(
        simulation["round_robin"]["three_stall_p999_ms"]
        / simulation["peak_ewma"]["three_stall_p999_ms"], 1),
    "peak_ewma_healthy_max_share_deviation_points": max(
        simulation["peak_ewma"]["three_healthy_max_share_deviation_points"],
        simulation["peak_ewma"]["three_quiet_max_share_deviation_points"]),
}
print(json.dumps(figures))
PY

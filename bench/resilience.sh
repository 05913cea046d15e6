#!/usr/bin/env bash
# Resilience micro-benchmarks: Keel's circuit breaker against a hand-written mutex breaker in
# the same binary, and the bulkhead and rate limiter. Prints a table, then one JSON line.
#
#   bench/resilience.sh [BUILD_DIR]      (make bench runs it on build/)
set -euo pipefail
build=${1:-build}
dir="$build/src/keel/resilience"
min_time=${MIN_TIME:-1}
repetitions=${REPETITIONS:-3}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "each figure: median of $repetitions runs of ${min_time}s; 2-thread runs use both CPUs, unpinned"

for name in circuit_breaker_benchmark bulkhead_benchmark rate_limiter_benchmark; do
  "$dir/$name" --benchmark_min_time="$min_time" --benchmark_repetitions="$repetitions" \
    --benchmark_report_aggregates_only=true --benchmark_format=json \
    --benchmark_out="$out/$name.json" --benchmark_out_format=json >/dev/null
done

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for f in sorted(os.listdir(out)):
    for b in json.load(open(os.path.join(out, f)))["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"]
        # ns per call on one thread's clock: wall time x threads / iterations, so that the
        # 2-thread figure reads as the cost of one call while another thread calls too.
        threads = b.get("threads", 1)
        ns = b["real_time"] * threads
        calls_per_s = b.get("items_per_second") or 1e9 / b["real_time"]
        rows[name] = {"ns_per_call": ns, "calls_per_s": calls_per_s}
print(f"{'benchmark':66} {'ns/call':>8} {'Mcalls/s':>9}")
for name, r in rows.items():
    print(f"{name:66} {r['ns_per_call']:8.1f} {r['calls_per_s']/1e6:9.1f}")

def get(name, key="ns_per_call"):
    return rows.get(name, {}).get(key, float("nan"))

figures = {
    "breaker_closed_1t_ns": round(get("BM_KeelClosedAcquireRecord/real_time/threads:1"), 1),
    "breaker_closed_2t_ns": round(get("BM_KeelClosedAcquireRecord/real_time/threads:2"), 1),
    "mutex_breaker_closed_1t_ns": round(get("BM_MutexClosedAcquireRecord/real_time/threads:1"), 1),
    "mutex_breaker_closed_2t_ns": round(get("BM_MutexClosedAcquireRecord/real_time/threads:2"), 1),
    "breaker_open_reject_1t_ns": round(get("BM_KeelOpenReject/real_time/threads:1"), 1),
    "breaker_closed_2t_calls_per_s": round(get("BM_KeelClosedAcquireRecord/real_time/threads:2", "calls_per_s")),
    "mutex_breaker_closed_2t_calls_per_s": round(get("BM_MutexClosedAcquireRecord/real_time/threads:2", "calls_per_s")),
    "bulkhead_acquire_release_1t_ns": round(get("BM_SemaphoreBulkheadTryAcquireRelease/real_time"), 1),
    "bulkhead_acquire_release_2t_ns": round(get("BM_SemaphoreBulkheadTryAcquireReleaseShared/real_time/threads:2"), 1),
    "token_bucket_1t_ns": round(get("BM_TokenBucketTryAcquire/real_time/threads:1"), 1),
    "adaptive_limiter_1t_ns": round(get("BM_ConcurrencyLimiterAcquireRecord/real_time"), 1),
}
figures["breaker_vs_mutex_1t_ratio"] = round(figures["mutex_breaker_closed_1t_ns"] / figures["breaker_closed_1t_ns"], 2)
figures["breaker_vs_mutex_2t_ratio"] = round(figures["breaker_closed_2t_calls_per_s"] / figures["mutex_breaker_closed_2t_calls_per_s"], 2)
print(json.dumps(figures))
PY

#!/usr/bin/env bash
# Resilience micro-benchmarks: Keel's circuit breaker against a hand-written mutex breaker in
# the same binary, and the bulkhead and rate limiter. Prints a table (median and min..max over
# the repetitions), then one JSON line.
#
#   bench/resilience.sh [BUILD_DIR]      (make bench runs it on build/)
#
# MIN_TIME (s per repetition, default 1), REPETITIONS (default 5); KEEL_BENCH_PIN=0 leaves the
# breaker benchmark's threads unpinned. The machine's load average is printed before and after:
# other work on the CPUs (a build) shows up as a wide min..max, mostly in the 2-thread rows.
set -euo pipefail
build=${1:-build}
dir="$build/src/keel/resilience"
min_time=${MIN_TIME:-1}
repetitions=${REPETITIONS:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "load average before: $load_before"
echo "each figure: median and min..max of $repetitions runs of ${min_time}s;" \
  "breaker threads pinned one per CPU unless KEEL_BENCH_PIN=0 (placement in the last column)"

for name in circuit_breaker_benchmark bulkhead_benchmark rate_limiter_benchmark; do
  "$dir/$name" --benchmark_min_time="$min_time" --benchmark_repetitions="$repetitions" \
    --benchmark_display_aggregates_only=true --benchmark_format=json \
    --benchmark_out="$out/$name.json" --benchmark_out_format=json >/dev/null
done
load_after=$(load)
echo "load average after: $load_after"

python3 - "$out" "$load_before" "$load_after" <<'PY'
import json, os, statistics, sys
out, load_before, load_after = sys.argv[1:4]
runs = {}
labels = {}
for f in sorted(os.listdir(out)):
    for b in json.load(open(os.path.join(out, f)))["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        name = b["run_name"]
        # ns per call on one thread's clock: wall time x threads / iterations, so that the
        # 2-thread figure reads as the cost of one call while another thread calls too.
        threads = b.get("threads", 1)
        ns = b["real_time"] * threads
        calls_per_s = b.get("items_per_second") or 1e9 / b["real_time"]
        runs.setdefault(name, []).append((ns, calls_per_s))
        labels[name] = b.get("label", "")

def spread(values):
    return statistics.median(values), min(values), max(values)

rows = {}
for name, rs in runs.items():
    rows[name] = {"ns": spread([r[0] for r in rs]), "calls": spread([r[1] for r in rs])}

print(f"{'benchmark':64} {'ns/call (min..max)':>24} {'Mcalls/s (min..max)':>26}  placement")
for name, r in rows.items():
    ns, calls = r["ns"], r["calls"]
    ns_text = f"{ns[0]:.1f} ({ns[1]:.1f}..{ns[2]:.1f})"
    calls_text = f"{calls[0]/1e6:.1f} ({calls[1]/1e6:.1f}..{calls[2]/1e6:.1f})"
    print(f"{name:64} {ns_text:>24} {calls_text:>26}  {labels[name]}")

nan = float("nan")
def get(name, key="ns"):
    return rows[name][key] if name in rows else (nan, nan, nan)

figures = {}
def figure(key, name, kind="ns"):
    median, low, high = get(name, kind)
    digits = 1 if kind == "ns" else 0
    figures[key] = round(median, digits) if digits else round(median)
    figures[key + "_range"] = [round(low, digits), round(high, digits)] if digits else [round(low), round(high)]

closed = "BM_KeelClosedAcquireRecord/real_time/threads:"
mutex = "BM_MutexClosedAcquireRecord/real_time/threads:"
figure("breaker_closed_1t_ns", closed + "1")
figure("breaker_closed_2t_ns", closed + "2")
figure("mutex_breaker_closed_1t_ns", mutex + "1")
figure("mutex_breaker_closed_2t_ns", mutex + "2")
figure("breaker_open_reject_1t_ns", "BM_KeelOpenReject/real_time/threads:1")
figure("breaker_closed_1t_calls_per_s", closed + "1", "calls")
figure("breaker_closed_2t_calls_per_s", closed + "2", "calls")
figure("mutex_breaker_closed_1t_calls_per_s", mutex + "1", "calls")
figure("mutex_breaker_closed_2t_calls_per_s", mutex + "2", "calls")
figure("breaker_time_window_1t_ns", "BM_KeelTimeWindowAcquireRecord/real_time/threads:1")
figure("breaker_time_window_2t_ns", "BM_KeelTimeWindowAcquireRecord/real_time/threads:2")
figure("bulkhead_acquire_release_1t_ns", "BM_SemaphoreBulkheadTryAcquireRelease/real_time")
figure("bulkhead_acquire_release_2t_ns", "BM_SemaphoreBulkheadTryAcquireReleaseShared/real_time/threads:2")
figure("token_bucket_1t_ns", "BM_TokenBucketTryAcquire/real_time/threads:1")
figure("adaptive_limiter_1t_ns", "BM_ConcurrencyLimiterAcquireRecord/real_time")

# Medians over medians; the range pairs Keel's worst run with the baseline's best and the other
# way round (the runs are not paired, so this is the widest the ratio could honestly be).
for threads in ("1", "2"):
    keel, base = get(closed + threads, "calls"), get(mutex + threads, "calls")
    key = f"breaker_vs_mutex_{threads}t_ratio"
    figures[key] = round(keel[0] / base[0], 2)
    figures[key + "_range"] = [round(keel[1] / base[2], 2), round(keel[2] / base[1], 2)]
figures["breaker_pinned"] = labels.get(closed + "2", "").startswith("pinned")
figures["repetitions"] = len(runs.get(closed + "2", []))
figures["load_average_before"] = load_before
figures["load_average_after"] = load_after
print(json.dumps(figures))
PY

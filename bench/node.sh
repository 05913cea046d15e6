#!/usr/bin/env bash
# `keel node` (the event store over HTTP/JSON) beside Redis 7 Streams and NATS JetStream 2.9,
# one run, side by side on loopback, each pair at equal durability:
#   Keel durability every_commit (fdatasync before each acknowledgement) vs Redis appendfsync always;
#   Keel durability interval (acknowledged after write, fdatasync every 100 ms) vs Redis
#   appendfsync everysec and vs JetStream (file storage; nats-server 2.9 cannot fsync per message).
# Measures, with build/bench/node_bench as every client:
#   1. append throughput: 1 and 16 concurrent clients (CLIENT_COUNTS), batch 1 and 100
#      (BATCHES), payload 100 B and 1 KiB (PAYLOADS), each client on its own keep-alive
#      connection and its own stream. Keel: POST /v1/streams/{stream} with `batch` events per
#      request; Redis: XADD pipelined `batch` deep; JetStream: libnats, js_Publish for batch 1,
#      else windows of `batch` async publishes waited for together. events/s and request p99;
#      for Keel also how its store grouped them: keel_eventlog_{appends,commits,syncs}_total
#      read from the node's /metrics before and after each case, so appends (requests) per
#      group commit and per fdatasync, beside the disk's own rate of 4 KiB O_DSYNC writes (as
#      bench/eventlog.sh measures it);
#   2. end-to-end latency append → subscriber at E2E_RATE events/s from E2E_PRODUCERS producers
#      (send time in the payload): Keel an SSE subscriber on /v1/all/subscribe?category=tick,
#      Redis XREADGROUP BLOCK + XACK; p50/p99/p99.9/max, for both durability pairs;
#   3. consumer-group throughput: GROUP_EVENTS events loaded, then GROUP_MEMBERS member
#      PROCESSES ack every event (Keel PUT /v1/groups/g, POST poll max=100 wait_ms=100, POST ack
#      with each poll's ids; Redis XREADGROUP COUNT 100 + XACK; JetStream a durable pull
#      consumer, Fetch 100 + an ack per message), Keel interval vs Redis everysec vs JetStream;
#   4. memory of an idle subscriber: keel node's RSS before and after IDLE_SUBSCRIBERS idle SSE
#      subscriptions (KiB each), beside redis-server's per client blocked in XREAD BLOCK 0.
# Servers (keel node, redis-server, nats-server) run on SERVER_CPU, node_bench on CLIENT_CPU
# (taskset), each server on a free port with its data in a temp dir under TMPBASE.
# Prints tables, then as its LAST line one JSON object of every figure, units in the names,
# with ratios keel_vs_redis_* and keel_vs_jetstream_* (Keel / anchor).
#
#   bench/node.sh [BUILD_DIR]            (BUILD_DIR defaults to build; needs keel, node_bench)
#
# Environment: TMPBASE=/var/tmp (a real disk: fsync on tmpfs means nothing), SERVER_CPU=1,
#   CLIENT_CPU=0 (either empty: not pinned), APPEND_SECONDS=3 (per append case),
#   CLIENT_COUNTS="1 16", BATCHES="1 100", PAYLOADS="100 1024", E2E_RATE=10000,
#   E2E_SECONDS=5, E2E_PRODUCERS=16, GROUP_EVENTS=1000000, GROUP_MEMBERS=3,
#   IDLE_SUBSCRIBERS=1000, RUN_TIMEOUT_S=180 (one node_bench).
# Needs curl, python3, redis-server, nats-server and libnats (node_bench built with it):
# `scripts/install-deps bench`. A missing anchor is reported and its figures left out. Uses only
# 127.0.0.1 and free ports, stops only the processes it started (by PID), removes its temp dir.
set -euo pipefail

BUILD_DIR=${1:-build}
TMPBASE=${TMPBASE:-/var/tmp}
SERVER_CPU=${SERVER_CPU-1}
CLIENT_CPU=${CLIENT_CPU-0}
APPEND_SECONDS=${APPEND_SECONDS:-3}
CLIENT_COUNTS=${CLIENT_COUNTS:-"1 16"}
BATCHES=${BATCHES:-"1 100"}
PAYLOADS=${PAYLOADS:-"100 1024"}
E2E_RATE=${E2E_RATE:-10000}
E2E_SECONDS=${E2E_SECONDS:-5}
E2E_PRODUCERS=${E2E_PRODUCERS:-16}
GROUP_EVENTS=${GROUP_EVENTS:-1000000}
GROUP_MEMBERS=${GROUP_MEMBERS:-3}
IDLE_SUBSCRIBERS=${IDLE_SUBSCRIBERS:-1000}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-180}

log() { printf '[node.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

KEEL=$BUILD_DIR/keel
BENCH=$BUILD_DIR/bench/node_bench
[ -x "$KEEL" ] || die "$KEEL not found. Build it: ninja -C $BUILD_DIR keel node_bench"
[ -x "$BENCH" ] || die "$BENCH not found. Build it: ninja -C $BUILD_DIR keel node_bench"
KEEL=$(cd "$(dirname "$KEEL")" && pwd)/keel
BENCH=$(cd "$(dirname "$BENCH")" && pwd)/node_bench
command -v python3 >/dev/null || die "python3 missing: run scripts/install-deps bench"
command -v curl >/dev/null || die "curl missing: run scripts/install-deps bench"
HAVE_REDIS=1
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  HAVE_REDIS=0
  log "redis-server or redis-cli missing (scripts/install-deps bench): no Redis figures"
fi
HAVE_NATS=1
command -v nats-server >/dev/null || {
  HAVE_NATS=0
  log "nats-server missing (scripts/install-deps bench): no JetStream figures"
}

# ---------------------------------------------------------------- temp dir, processes, ports
fstype=$(require_disk "$TMPBASE")
TMPD=$(mktemp -d -p "$TMPBASE" keel_node_bench.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM

pick_port KPORT 22113
pick_port RPORT 26379
pick_port NPORT 24222

PINNING="not pinned"
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ] && [ -n "$SERVER_CPU" ] &&
  [ -n "$CLIENT_CPU" ] && taskset -c "$SERVER_CPU" true 2>/dev/null &&
  taskset -c "$CLIENT_CPU" true 2>/dev/null; then
  PINNING="servers (keel node, redis-server, nats-server) on CPU $SERVER_CPU, node_bench (every client) on CPU $CLIENT_CPU (taskset)"
else
  SERVER_CPU=""
  CLIENT_CPU=""
fi
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }

# 1000 idle subscriptions need as many descriptors on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_SUBSCRIBERS * 4 + 256)) ]; then
  log "open files limit $(ulimit -n) is low for IDLE_SUBSCRIBERS=$IDLE_SUBSCRIBERS"
fi

# The whole disk under TMPBASE (for the record: its write cache mode).
DISK=$(basename "$(findmnt -n -o SOURCE --target "$TMPBASE" 2>/dev/null)" 2>/dev/null || true)
if [ -n "$DISK" ] && [ -e "/sys/class/block/$DISK/partition" ]; then
  DISK=$(basename "$(readlink -f "/sys/class/block/$DISK/..")")
fi

RESULTS="$TMPD/results.tsv" # key <tab> JSON object from node_bench (or a hand-made one)
: >"$RESULTS"
result() { printf '%s\t%s\n' "$1" "$2" >>"$RESULTS"; }

# bench KEY ARGS...: runs node_bench on CLIENT_CPU and records its last line under KEY.
bench() {
  local key=$1 out rc=0
  shift
  # shellcheck disable=SC2046  # $(pin) splits into "taskset -c N" on purpose
  out=$($(pin "$CLIENT_CPU") timeout --kill-after=10 "$RUN_TIMEOUT_S" "$BENCH" "$@" 2>"$TMPD/bench.err") || rc=$?
  if [ -s "$TMPD/bench.err" ]; then sed "s/^/[node.sh] $key: /" "$TMPD/bench.err" | head -n 20 >&2; fi
  if [ "$rc" -ne 0 ]; then
    log "$key: node_bench $1 exited with status $rc; no figures"
    return 0
  fi
  out=$(tail -n 1 <<<"$out")
  result "$key" "$out"
  log "$key: $out"
}

# ---------------------------------------------------------------- servers
KEEL_PID=""
KEEL_LOGS=()
# start_keel DURABILITY NAME: a fresh data dir, config with the bench's limits.
start_keel() {
  local durability=$1 name=$2
  mkdir -p "$TMPD/$name"
  cat >"$TMPD/$name.yaml" <<YAML
data_dir: $TMPD/$name/data
listen: 127.0.0.1:$KPORT
workers: 2
append_threads: 16
durability: $durability
sync_interval_ms: 100
drain_ms: 2000
limits:
  max_subscribers: $((IDLE_SUBSCRIBERS + 64))
YAML
  KEEL_LOGS+=("$TMPD/$name.log")
  # shellcheck disable=SC2046
  $(pin "$SERVER_CPU") "$KEEL" node -c "$TMPD/$name.yaml" 2>"$TMPD/$name.log" &
  KEEL_PID=$!
  PIDS+=("$KEEL_PID")
  for _ in $(seq 100); do
    curl -fsS --max-time 1 "http://127.0.0.1:$KPORT/ready" >/dev/null 2>&1 && return 0
    kill -0 "$KEEL_PID" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$TMPD/$name.log" >&2 || true
  die "keel node ($name) did not become ready on 127.0.0.1:$KPORT"
}
# stop_keel PID NAME: SIGTERM so that the node drains, then waits for it; a note if it had died
# before, or does not exit cleanly.
NODE_PROBLEMS="$TMPD/node_problems.txt"
: >"$NODE_PROBLEMS"
stop_keel() {
  local pid=$1 name=$2 rc=0
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || rc=$?
    echo "$name: keel node had exited before the end of its part (status $rc)" >>"$NODE_PROBLEMS"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: keel node did not stop within 15 s of SIGTERM; killed" >>"$NODE_PROBLEMS"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || rc=$?
  [ "$rc" -eq 0 ] || echo "$name: keel node exited with status $rc after SIGTERM" >>"$NODE_PROBLEMS"
  rm -rf "$TMPD/$name/data"
}

REDIS_PID=""
start_redis() {
  local fsync=$1
  rm -rf "$TMPD/redis"
  mkdir -p "$TMPD/redis"
  # shellcheck disable=SC2046
  $(pin "$SERVER_CPU") redis-server --bind 127.0.0.1 --port "$RPORT" --protected-mode yes \
    --dir "$TMPD/redis" --appendonly yes --appendfsync "$fsync" --save '' \
    --auto-aof-rewrite-percentage 0 --maxclients $((IDLE_SUBSCRIBERS + 256)) --daemonize no \
    --logfile "$TMPD/redis-$fsync.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do
    redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG || die "redis-server did not answer on 127.0.0.1:$RPORT"
  [ "$(redis-cli -p "$RPORT" config get appendfsync | tail -n 1)" = "$fsync" ] || die "redis did not take appendfsync $fsync"
}
stop_redis() {
  stop_pid "$REDIS_PID" TERM
  rm -rf "$TMPD/redis"
}

payload_label() { if [ "$1" = 1024 ]; then echo 1KiB; else echo "${1}B"; fi; }
# keel_store_counters PORT: "APPENDS COMMITS SYNCS", the store's keel_eventlog_*_total from the
# node's /metrics (nothing when they cannot be read).
keel_store_counters() {
  curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
    awk '$1 == "keel_eventlog_appends_total" { a = $2 } $1 == "keel_eventlog_commits_total" { c = $2 }
         $1 == "keel_eventlog_syncs_total" { s = $2 }
         END { if (a != "" && c != "" && s != "") printf "%.0f %.0f %.0f\n", a, c, s }' || true
}
# append_cases SYSTEM_KEY TARGET PORT; for Keel also the store's counters over each case, under
# SYSTEM_KEY_store_LABEL.
append_cases() {
  local key=$1 target=$2 port=$3 clients batch size label before after
  for batch in $BATCHES; do
    for size in $PAYLOADS; do
      for clients in $CLIENT_COUNTS; do
        label="b${batch}_$(payload_label "$size")_c${clients}"
        before=""
        if [ "$target" = keel ]; then before=$(keel_store_counters "$port"); fi
        bench "${key}_append_$label" append --target "$target" --port "$port" --clients "$clients" \
          --batch "$batch" --size "$size" --seconds "$APPEND_SECONDS" --prefix "a_$label"
        if [ "$target" = keel ]; then
          after=$(keel_store_counters "$port")
          if [ -n "$before" ] && [ -n "$after" ]; then
            result "${key}_store_$label" "$(awk -v b="$before" -v a="$after" 'BEGIN {
              split(b, x, " "); split(a, y, " ")
              printf "{\"appends\": %.0f, \"commits\": %.0f, \"syncs\": %.0f}", y[1] - x[1], y[2] - x[2], y[3] - x[3] }')"
          else
            log "${key}_append_$label: keel_eventlog_*_total not on /metrics; no store counters"
          fi
        fi
      done
    done
  done
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
echo "keel: $KEEL ($(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo "data: $TMPD ($fstype on ${DISK:-?}, write cache: $(cat "/sys/block/$DISK/queue/write_cache" 2>/dev/null || echo '?'))"
echo "placement: $PINNING"
echo "versions: $([ "$HAVE_REDIS" = 1 ] && redis-server --version | sed 's/.*v=\([^ ]*\).*/Redis \1/'), $([ "$HAVE_NATS" = 1 ] && echo "nats-server $(nats-server --version | awk '{print $2}')")"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
result load_start "{\"value\": $(cut -d' ' -f1 /proc/loadavg)}"

# ---------------------------------------------------------------- the disk
dd_seconds() { LC_ALL=C timeout 300 dd "$@" 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) t = $(i - 1); print t }' | tr -d ,; }
synced_s=$(dd_seconds if=/dev/zero of="$TMPD/disk.probe" bs=4k count=2000 oflag=dsync) || synced_s=""
rm -f "$TMPD/disk.probe"
result disk "{\"synced_writes_per_s\": $(awk -v t="$synced_s" 'BEGIN { if (t > 0) printf "%.0f", 2000 / t; else print "null" }')}"
log "disk: $(tail -n 1 "$RESULTS")"

# ---------------------------------------------------------------- 1, 2: appends, end-to-end
for pair in every_commit:always interval:everysec; do
  durability=${pair%%:*}
  fsync=${pair##*:}
  log "keel node, durability $durability"
  start_keel "$durability" "keel-$durability"
  append_cases "keel_$durability" keel "$KPORT"
  bench "keel_${durability}_e2e" e2e --target keel --port "$KPORT" --rate "$E2E_RATE" \
    --seconds "$E2E_SECONDS" --producers "$E2E_PRODUCERS"
  stop_keel "$KEEL_PID" "keel-$durability"
  if [ "$HAVE_REDIS" = 1 ]; then
    log "redis-server, appendfsync $fsync"
    start_redis "$fsync"
    append_cases "redis_$fsync" redis "$RPORT"
    bench "redis_${fsync}_e2e" e2e --target redis --port "$RPORT" --rate "$E2E_RATE" \
      --seconds "$E2E_SECONDS" --producers "$E2E_PRODUCERS"
    if [ "$fsync" = everysec ]; then
      bench redis_group group --target redis --port "$RPORT" --events "$GROUP_EVENTS" --members "$GROUP_MEMBERS"
    fi
    stop_redis
  fi
done

if [ "$HAVE_NATS" = 1 ]; then
  log "nats-server -js"
  mkdir -p "$TMPD/nats"
  # shellcheck disable=SC2046
  $(pin "$SERVER_CPU") nats-server -js -a 127.0.0.1 -p "$NPORT" -sd "$TMPD/nats" >"$TMPD/nats.log" 2>&1 &
  NATS_PID=$!
  PIDS+=("$NATS_PID")
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$NPORT") 2>/dev/null && break
    sleep 0.1
  done
  append_cases jetstream jetstream "$NPORT"
  bench jetstream_group group --target jetstream --port "$NPORT" --events "$GROUP_EVENTS" --members "$GROUP_MEMBERS"
  stop_pid "$NATS_PID" TERM
  rm -rf "$TMPD/nats"
fi

# ---------------------------------------------------------------- 3, 4: groups, idle (fresh servers)
if [ "$HAVE_REDIS" = 1 ]; then
  log "redis-server, idle clients"
  start_redis everysec
  bench redis_idle idle --target redis --port "$RPORT" --pid "$REDIS_PID" --count "$IDLE_SUBSCRIBERS"
  stop_redis
fi
log "keel node, consumer group"
start_keel interval keel-group
bench keel_group group --target keel --port "$KPORT" --events "$GROUP_EVENTS" --members "$GROUP_MEMBERS"
stop_keel "$KEEL_PID" keel-group
log "keel node, idle subscriptions"
start_keel interval keel-idle
bench keel_idle idle --target keel --port "$KPORT" --pid "$KEEL_PID" --count "$IDLE_SUBSCRIBERS"
stop_keel "$KEEL_PID" keel-idle

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
result load_end "{\"value\": $(cut -d' ' -f1 /proc/loadavg)}"

# What the nodes said on stderr beyond their start and stop lines.
for f in "${KEEL_LOGS[@]}"; do
  grep -v -e '^keel node: serving' -e '^keel node: stopping' -e '^keel node: stopped' "$f" 2>/dev/null |
    head -n 20 | sed "s|^|$(basename "$f" .log): |" >>"$NODE_PROBLEMS" || true
done
echo

# ---------------------------------------------------------------- tables and the JSON line
python3 - "$RESULTS" "$NODE_PROBLEMS" "$BATCHES" "$PAYLOADS" "$CLIENT_COUNTS" "$E2E_RATE" "$PINNING" <<'PY'
import json, sys

results_path, problems_path, batches, payloads, client_counts, e2e_rate, pinning = sys.argv[1:8]
runs = {}
for line in open(results_path):
    key, _, text = line.rstrip("\n").partition("\t")
    try:
        runs[key] = json.loads(text)
    except ValueError:
        pass
figures = {}

def put(name, value, digits=4):
    if value is None:
        return
    if isinstance(value, float):
        value = float(f"{value:.{digits}g}") if abs(value) < 1e4 else round(value)
    figures[name] = value

def get(key, field):
    return runs.get(key, {}).get(field)

def ratio(a, b):
    return None if a is None or not b else float(f"{a / b:.4g}")

def label(size):
    return "1KiB" if size == "1024" else f"{size}B"

cases = [f"b{b}_{label(s)}_c{c}" for b in batches.split() for s in payloads.split()
         for c in client_counts.split()]
systems = [("keel_every_commit", "keel_every_commit"), ("redis_always", "redis_always"),
           ("keel_interval", "keel_interval"), ("redis_everysec", "redis_everysec"),
           ("jetstream", "jetstream")]

put("disk_synced_writes_per_s", get("disk", "synced_writes_per_s"))
put("load_avg_1min_start", get("load_start", "value"))
put("load_avg_1min_end", get("load_end", "value"))
for case in cases:
    for prefix, key in systems:
        run = runs.get(f"{key}_append_{case}")
        if not run:
            continue
        put(f"{prefix}_append_{case}_events_per_s", run.get("events_per_s"))
        put(f"{prefix}_append_{case}_request_p99_ms", run.get("request_p99_ms"))
        if run.get("failed"):
            put(f"{prefix}_append_{case}_failed_requests", run.get("failed"))
        for k, v in run.items():
            if k.startswith("failed_status_"):
                put(f"{prefix}_append_{case}_{k.replace('failed_status_', 'status_')}_requests", v)
    k = lambda d: figures.get(f"keel_{d}_append_{case}_events_per_s")
    put(f"keel_vs_redis_always_{case}", ratio(k("every_commit"), figures.get(f"redis_always_append_{case}_events_per_s")))
    put(f"keel_vs_redis_everysec_{case}", ratio(k("interval"), figures.get(f"redis_everysec_append_{case}_events_per_s")))
    put(f"keel_vs_jetstream_{case}", ratio(k("interval"), figures.get(f"jetstream_append_{case}_events_per_s")))

for system, durability in [("keel", "every_commit"), ("redis", "always"), ("keel", "interval"), ("redis", "everysec")]:
    run = runs.get(f"{system}_{durability}_e2e")
    if not run:
        continue
    for q in ("p50", "p99", "p999", "max"):
        put(f"{system}_e2e_{durability}_{q}_ms", run.get(f"{q}_ms"))
    put(f"{system}_e2e_{durability}_append_p99_ms", run.get("append_p99_ms"))
    put(f"{system}_e2e_{durability}_append_max_ms", run.get("append_max_ms"))
    put(f"{system}_e2e_{durability}_achieved_events_per_s", run.get("achieved_events_per_s"))
    if run.get("failed"):
        put(f"{system}_e2e_{durability}_failed_appends", run.get("failed"))
    if run.get("received", 0) < run.get("sent", 0):
        put(f"{system}_e2e_{durability}_events_missing", run["sent"] - run["received"])
put("e2e_rate_events_per_s", float(e2e_rate))
for durability, anchor in [("every_commit", "always"), ("interval", "everysec")]:
    for q in ("p50", "p99", "p999"):
        put(f"keel_vs_redis_e2e_{anchor}_{q}", ratio(figures.get(f"keel_e2e_{durability}_{q}_ms"),
                                                   figures.get(f"redis_e2e_{anchor}_{q}_ms")))

for system in ("keel", "redis", "jetstream"):
    run = runs.get(f"{system}_group")
    if not run:
        continue
    put(f"{system}_group_events_per_s", run.get("events_per_s"))
    put(f"{system}_group_load_events_per_s", run.get("load_events_per_s"))
    if not run.get("complete", 1):
        put(f"{system}_group_incomplete_acked_events", run.get("acked"))
    if run.get("polls_503"):
        put(f"{system}_group_polls_503", run.get("polls_503"))
    if run.get("failed"):
        put(f"{system}_group_failed", run.get("failed"))
put("keel_vs_redis_group", ratio(figures.get("keel_group_events_per_s"), figures.get("redis_group_events_per_s")))
put("keel_vs_jetstream_group", ratio(figures.get("keel_group_events_per_s"), figures.get("jetstream_group_events_per_s")))

if runs.get("keel_idle"):
    put("keel_idle_subscriber_kib", runs["keel_idle"].get("kib_each"))
    put("keel_idle_rss_before_kib", runs["keel_idle"].get("rss_before_kib"))
if runs.get("redis_idle"):
    put("redis_idle_blocked_client_kib", runs["redis_idle"].get("kib_each"))
put("keel_vs_redis_idle_subscriber", ratio(figures.get("keel_idle_subscriber_kib"), figures.get("redis_idle_blocked_client_kib")))

# How Keel's store grouped each append case: from its counters' deltas over the case.
for case in cases:
    for durability in ("every_commit", "interval"):
        store = runs.get(f"keel_{durability}_store_{case}")
        if not store:
            continue
        put(f"keel_{durability}_{case}_appends_per_commit", ratio(store.get("appends"), store.get("commits")))
        put(f"keel_{durability}_{case}_appends_per_sync", ratio(store.get("appends"), store.get("syncs")))
        seconds = get(f"keel_{durability}_append_{case}", "seconds")
        if seconds and store.get("syncs") is not None:
            put(f"keel_{durability}_{case}_syncs_per_s", store["syncs"] / seconds)

def show(v, fmt="{:,.0f}"):
    return "-" if v is None else fmt.format(v)

print("append throughput, events/s (request p99 ms); ratio = keel / anchor at equal durability")
print(f"  {'case':16} {'keel every_commit':>22} {'redis always':>20} {'ratio':>6} | {'keel interval':>20} {'redis everysec':>20} {'ratio':>6} {'jetstream':>20} {'ratio':>6}")
for case in cases:
    cells = []
    for prefix, _ in systems:
        e = figures.get(f"{prefix}_append_{case}_events_per_s")
        p = figures.get(f"{prefix}_append_{case}_request_p99_ms")
        cells.append("-" if e is None else f"{e:,.0f} ({p:.2f})")
    r = lambda n: show(figures.get(n), "{:.3g}")
    print(f"  {case:16} {cells[0]:>22} {cells[1]:>20} {r(f'keel_vs_redis_always_{case}'):>6} | {cells[2]:>20} "
          f"{cells[3]:>20} {r(f'keel_vs_redis_everysec_{case}'):>6} {cells[4]:>20} {r(f'keel_vs_jetstream_{case}'):>6}")
failures = {k: v for k, v in figures.items() if k.endswith("_failed_requests") or "_status_" in k}
if failures:
    print("  failed requests: " + ", ".join(f"{k}={v}" for k, v in sorted(failures.items())))
print()
print(f"end-to-end append -> subscriber at {float(e2e_rate):,.0f} events/s (achieved), ms")
print(f"  {'system':24} {'achieved/s':>10} {'p50':>8} {'p99':>8} {'p99.9':>8} {'max':>8}   {'append ack p99':>14} {'max':>8}")
for system, durability, what in [("keel", "every_commit", "SSE"), ("redis", "always", "XREADGROUP"),
                                 ("keel", "interval", "SSE"), ("redis", "everysec", "XREADGROUP")]:
    n = f"{system}_e2e_{durability}"
    if f"{n}_p50_ms" not in figures:
        continue
    print(f"  {system + ' ' + durability + ' ' + what:24} {show(figures.get(n + '_achieved_events_per_s')):>10} "
          + " ".join(f"{show(figures.get(f'{n}_{q}_ms'), '{:.3f}'):>8}" for q in ("p50", "p99", "p999", "max"))
          + f"   {show(figures.get(n + '_append_p99_ms'), '{:.3f}'):>14} {show(figures.get(n + '_append_max_ms'), '{:.3f}'):>8}")
print()
print("consumer group, GROUP_MEMBERS member processes acking every event, events/s")
for system, how in [("keel", "interval, poll max 100 wait_ms 100 + ack per poll"),
                    ("redis", "everysec, XREADGROUP COUNT 100 + XACK per read"),
                    ("jetstream", "pull consumer, Fetch 100 + ack per message")]:
    v = figures.get(f"{system}_group_events_per_s")
    extra = ""
    if figures.get(f"{system}_group_polls_503"):
        extra += f"  ({figures[f'{system}_group_polls_503']:.0f} polls answered 503)"
    if f"{system}_group_incomplete_acked_events" in figures:
        extra += "  (INCOMPLETE)"
    print(f"  {system:10} {show(v):>10}   {how}{extra}")
print(f"  ratios: keel/redis {show(figures.get('keel_vs_redis_group'), '{:.3g}')}, keel/jetstream {show(figures.get('keel_vs_jetstream_group'), '{:.3g}')}")
print()
print("idle subscriber, server RSS growth per connection")
print(f"  keel node, idle SSE subscription:      {show(figures.get('keel_idle_subscriber_kib'), '{:.2f}')} KiB "
      f"(RSS before {show(figures.get('keel_idle_rss_before_kib'))} KiB)")
print(f"  redis-server, client in XREAD BLOCK 0:  {show(figures.get('redis_idle_blocked_client_kib'), '{:.2f}')} KiB")
print()
print(f"keel store's group commit per append case (keel_eventlog_{{appends,commits,syncs}}_total on /metrics "
      f"before and after each case; an append is one request; the disk does "
      f"{show(figures.get('disk_synced_writes_per_s'))} 4 KiB O_DSYNC writes/s)")
print(f"  {'case':16} {'durability':12} {'appends/commit':>14} {'appends/fdatasync':>17} {'fdatasync/s':>11}")
for case in cases:
    for durability in ("every_commit", "interval"):
        n = f"keel_{durability}_{case}"
        if f"{n}_appends_per_commit" not in figures and f"{n}_appends_per_sync" not in figures:
            continue
        print(f"  {case:16} {durability:12} {show(figures.get(n + '_appends_per_commit'), '{:,.2f}'):>14} "
              f"{show(figures.get(n + '_appends_per_sync'), '{:,.2f}'):>17} {show(figures.get(n + '_syncs_per_s')):>11}")
print()
problems = [l.rstrip("\n") for l in open(problems_path) if l.strip()]
# Everything that went wrong on Keel's side: refused or failed requests, missing events.
keel_trouble = {k: v for k, v in figures.items() if k.startswith("keel_") and v and (
    k.endswith(("_failed_requests", "_polls_503", "_group_failed", "_failed_appends",
                "_events_missing", "_incomplete_acked_events")) or "_status_" in k)}
print("keel node: " + ("no errors, no 503s, clean exits" if not problems and not keel_trouble else
                       "what went wrong:"))
for k, v in sorted(keel_trouble.items()):
    print(f"  {k} = {v}")
for p in problems:
    print("  " + p)
print(f"placement: {pinning}")
print(json.dumps(figures))
PY

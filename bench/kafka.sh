#!/usr/bin/env bash
# keel node's Kafka listener driven by librdkafka (build/bench/kafka_bench), with, in the same
# run and on the same CPUs, the node's HTTP API (batches of 100) and Redis 7 Streams (pipelined
# XADD, 100 deep) as references (both through build/bench/node_bench).
#
# Durability pairs (one node holds every replica, so acks=1 and acks=all differ only by what the
# node does before it answers):
#   acks=1   → keel node durability interval (answered after the write, fdatasync every 100 ms;
#              Kafka's own default: no fsync per message); Redis appendfsync everysec;
#   acks=all → keel node durability every_commit (fdatasync before every answer, shared by the
#              appends in flight); Redis appendfsync always.
# Cases: produce messages of 100 B (PRODUCE_MESSAGES) and 1 KiB (PRODUCE_MESSAGES_1K) with
# librdkafka's default batching and with linger.ms=5, to a fresh topic of PARTITIONS partitions:
# messages/s, MB/s and produce p50/p99 (produce() to delivery report: it includes the time a
# message waits in librdkafka's queue, which a producer faster than the broker fills); consume
# the 100 B topic from the start (assigned partitions, no group): messages/s and MB/s.
# keel node runs on SERVER_CPU, every client on CLIENT_CPU (taskset). Prints a table, then as its
# LAST line one JSON object of every figure, units in the names.
#
#   bench/kafka.sh [BUILD_DIR]      (needs keel, kafka_bench, node_bench in BUILD_DIR; redis-server)
#
# Environment: TMPBASE=/var/tmp (a real disk), SERVER_CPU=1, CLIENT_CPU=0 (either empty: not
#   pinned), PARTITIONS=3, PRODUCE_MESSAGES=1000000, PRODUCE_MESSAGES_1K=600000,
#   REFERENCE_SECONDS=3, RUN_TIMEOUT_S=300.
set -euo pipefail

BUILD_DIR=${1:-build}
TMPBASE=${TMPBASE:-/var/tmp}
SERVER_CPU=${SERVER_CPU-1}
CLIENT_CPU=${CLIENT_CPU-0}
PARTITIONS=${PARTITIONS:-3}
PRODUCE_MESSAGES=${PRODUCE_MESSAGES:-1000000}
PRODUCE_MESSAGES_1K=${PRODUCE_MESSAGES_1K:-600000}
REFERENCE_SECONDS=${REFERENCE_SECONDS:-3}
RUN_TIMEOUT_S=${RUN_TIMEOUT_S:-300}

log() { printf '[kafka.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

for tool in keel bench/kafka_bench bench/node_bench; do
  [ -x "$BUILD_DIR/$tool" ] || die "$BUILD_DIR/$tool not found. Build it: ninja -C $BUILD_DIR keel kafka_bench node_bench"
done
KEEL=$(cd "$BUILD_DIR" && pwd)/keel
KBENCH=$(cd "$BUILD_DIR/bench" && pwd)/kafka_bench
NBENCH=$(cd "$BUILD_DIR/bench" && pwd)/node_bench
command -v curl >/dev/null || die "curl missing: run scripts/install-deps bench"
HAVE_REDIS=1
command -v redis-server >/dev/null || {
  HAVE_REDIS=0
  log "redis-server missing (scripts/install-deps bench): no Redis figures"
}

fstype=$(require_disk "$TMPBASE")
TMPD=$(mktemp -d -p "$TMPBASE" keel_kafka_bench.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM
pick_port HPORT 23113
pick_port KPORT 29092
pick_port RPORT 26479

PINNING="not pinned"
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ] && [ -n "$SERVER_CPU" ] &&
  [ -n "$CLIENT_CPU" ] && taskset -c "$SERVER_CPU" true 2>/dev/null &&
  taskset -c "$CLIENT_CPU" true 2>/dev/null; then
  PINNING="servers (keel node, redis-server) on CPU $SERVER_CPU, clients (kafka_bench, node_bench) on CPU $CLIENT_CPU"
else
  SERVER_CPU=""
  CLIENT_CPU=""
fi
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }

RESULTS="$TMPD/results.tsv"
: >"$RESULTS"
# run KEY PROGRAM ARGS...: a client on CLIENT_CPU; its last line recorded under KEY.
run() {
  local key=$1 out rc=0
  shift
  # shellcheck disable=SC2046
  out=$($(pin "$CLIENT_CPU") timeout --kill-after=10 "$RUN_TIMEOUT_S" "$@" 2>"$TMPD/client.err") || rc=$?
  if [ -s "$TMPD/client.err" ]; then sed "s/^/[kafka.sh] $key: /" "$TMPD/client.err" | head -n 10 >&2; fi
  if [ "$rc" -ne 0 ]; then
    log "$key: $(basename "$1") exited with status $rc; no figures"
    return 0
  fi
  printf '%s\t%s\n' "$key" "$(tail -n 1 <<<"$out")" >>"$RESULTS"
  log "$key: $(head -n 1 <<<"$out")"
}

NODE_PID=""
start_node() {
  local durability=$1
  rm -rf "$TMPD/node"
  mkdir -p "$TMPD/node"
  cat >"$TMPD/node.yaml" <<YAML
data_dir: $TMPD/node/data
listen: 127.0.0.1:$HPORT
durability: $durability
sync_interval_ms: 100
kafka:
  listen: 127.0.0.1:$KPORT
  default_partitions: $PARTITIONS
YAML
  # shellcheck disable=SC2046
  $(pin "$SERVER_CPU") "$KEEL" node -c "$TMPD/node.yaml" 2>"$TMPD/node-$durability.log" &
  NODE_PID=$!
  PIDS+=("$NODE_PID")
  for _ in $(seq 100); do
    curl -fsS --max-time 1 "http://127.0.0.1:$HPORT/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "keel node did not become ready (see $TMPD/node-$durability.log)"
}
REDIS_PID=""
start_redis() {
  rm -rf "$TMPD/redis"
  mkdir -p "$TMPD/redis"
  # shellcheck disable=SC2046
  $(pin "$SERVER_CPU") redis-server --bind 127.0.0.1 --port "$RPORT" --dir "$TMPD/redis" \
    --appendonly yes --appendfsync "$1" --save '' --daemonize no --logfile "$TMPD/redis.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do
    redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.1
  done
  die "redis-server did not answer"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
echo "keel: $KEEL ($(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?')), librdkafka $(pkg-config --modversion rdkafka 2>/dev/null || echo '?')"
echo "data: $TMPD ($fstype)"
echo "placement: $PINNING"

for pair in "1 interval everysec" "all every_commit always"; do
  read -r acks durability fsync <<<"$pair"
  start_node "$durability"
  for size in 100 1024; do
    messages=$PRODUCE_MESSAGES
    label=100B
    if [ "$size" = 1024 ]; then
      messages=$PRODUCE_MESSAGES_1K
      label=1KiB
    fi
    run "produce_acks${acks}_${label}_default" "$KBENCH" produce --bootstrap "127.0.0.1:$KPORT" \
      --topic "p-$label-default" --messages "$messages" --size "$size" --acks "$acks"
    run "produce_acks${acks}_${label}_linger5" "$KBENCH" produce --bootstrap "127.0.0.1:$KPORT" \
      --topic "p-$label-linger" --messages "$messages" --size "$size" --acks "$acks" --linger 5
  done
  if [ "$acks" = 1 ]; then
    run "consume_100B" "$KBENCH" consume --bootstrap "127.0.0.1:$KPORT" --topic p-100B-default \
      --messages "$PRODUCE_MESSAGES"
  fi
  run "http_acks${acks}_100B_b100" "$NBENCH" append --target keel --port "$HPORT" --clients 16 \
    --batch 100 --size 100 --seconds "$REFERENCE_SECONDS" --prefix "h$acks"
  stop_pid "$NODE_PID" TERM
  if [ "$HAVE_REDIS" = 1 ]; then
    start_redis "$fsync"
    run "redis_${fsync}_100B_b100" "$NBENCH" append --target redis --port "$RPORT" --clients 16 \
      --batch 100 --size 100 --seconds "$REFERENCE_SECONDS" --prefix "r$acks"
    stop_pid "$REDIS_PID" TERM
  fi
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [line.rstrip("\n").split("\t", 1) for line in open(sys.argv[1]) if "\t" in line]
results = {k: json.loads(v) for k, v in rows}
figures = {}
print(f"{'case':38} {'msg/s':>12} {'MB/s':>8} {'p50 ms':>9} {'p99 ms':>9}")
for key, r in results.items():
    rate = r.get("messages_per_s", r.get("events_per_s", 0))
    mb = r.get("mb_per_s", 0)
    print(f"{key:38} {rate:12.0f} {mb:8.1f} {r.get('p50_ms', float('nan')):9.2f} {r.get('p99_ms', float('nan')):9.2f}")
    for name, value in r.items():
        figures[f"{key}_{name}"] = value
for acks, fsync in (("1", "everysec"), ("all", "always")):
    kafka = results.get(f"produce_acks{acks}_100B_default", {}).get("messages_per_s")
    http = results.get(f"http_acks{acks}_100B_b100", {}).get("events_per_s")
    redis = results.get(f"redis_{fsync}_100B_b100", {}).get("events_per_s")
    if kafka and http:
        figures[f"kafka_vs_http_acks{acks}_100B_ratio"] = round(kafka / http, 3)
    if kafka and redis:
        figures[f"kafka_vs_redis_{fsync}_100B_ratio"] = round(kafka / redis, 3)
print(json.dumps(figures, sort_keys=True))
PY

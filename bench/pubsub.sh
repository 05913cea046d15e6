#!/usr/bin/env bash
# Pub/sub and CQRS figures from one run (issue: Publish/Subscribe and CQRS on the event store):
#   Keel   live delivery append → handler p50/p99 at RATE events/s, catch-up events/s, consumer
#          group events/s with an ack per event, projection events/s into SQLite and into a
#          PostgreSQL 15 that pubsub_bench starts itself;
#   Redis  7 streams in the same process run: XADD at the same RATE read by XREADGROUP (BLOCK)
#          and XACKed, and a 3-consumer group reading the same number of entries.
# Redis runs with appendonly yes, appendfsync everysec, pinned to SERVER_CPU; pubsub_bench (both
# sides' clients, and Keel itself, which is in-process) to CLIENT_CPU when pinning is possible.
# Keel's comparable durability is `interval` (acknowledged after write, fsync every 100 ms).
# Prints pubsub_bench's table, then as its last line its JSON object of figures.
#
#   bench/pubsub.sh [BUILD_DIR]          (BUILD_DIR defaults to build)
#
# Environment: TMPBASE=/var/tmp (a real disk), RATE=10000, SECONDS_LIVE=5, EVENTS=1000000,
#   GROUP_EVENTS=200000, PROJECTION_EVENTS=200000, SERVER_CPU and CLIENT_CPU (default empty:
#   not pinned, because Keel's side is one process whose appender, subscriber and group threads
#   need both CPUs as much as Redis's server and clients do; set both to pin).
set -euo pipefail

BUILD_DIR=${1:-build}
TMPBASE=${TMPBASE:-/var/tmp}
RATE=${RATE:-10000}
SECONDS_LIVE=${SECONDS_LIVE:-5}
EVENTS=${EVENTS:-1000000}
GROUP_EVENTS=${GROUP_EVENTS:-200000}
PROJECTION_EVENTS=${PROJECTION_EVENTS:-200000}
SERVER_CPU=${SERVER_CPU-}
CLIENT_CPU=${CLIENT_CPU-}

log() { printf '[pubsub.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

BIN="$BUILD_DIR/bench/pubsub_bench"
[ -x "$BIN" ] || die "$BIN not found. Build it: cmake --build $BUILD_DIR --target pubsub_bench"
command -v redis-server >/dev/null || die "redis-server missing: run scripts/install-deps"

TMPD=$(mktemp -d -p "$TMPBASE" keel_pubsub_bench.XXXXXX)
REDIS_PID=""
cleanup() {
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    kill "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
RPORT=16390
while ! port_free "$RPORT"; do RPORT=$((RPORT + 1)); done

PINNING="not pinned"
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
if [ -n "$SERVER_CPU" ] && [ -n "$CLIENT_CPU" ] && [ "$(nproc)" -ge 2 ] &&
  taskset -c "$SERVER_CPU" true 2>/dev/null && taskset -c "$CLIENT_CPU" true 2>/dev/null; then
  PINNING="redis-server on CPU $SERVER_CPU, pubsub_bench (Keel and both clients) on CPU $CLIENT_CPU"
else
  SERVER_CPU=""
  CLIENT_CPU=""
fi

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "placement: $PINNING"
echo "redis: $(redis-server --version | sed 's/.*v=\([^ ]*\).*/Redis \1/'), appendonly yes, appendfsync everysec"
mkdir -p "$TMPD/redis" "$TMPD/keel"
# shellcheck disable=SC2046  # $(pin) splits into "taskset -c N" on purpose
$(pin "$SERVER_CPU") redis-server --bind 127.0.0.1 --port "$RPORT" --protected-mode yes \
  --dir "$TMPD/redis" --appendonly yes --appendfsync everysec --save '' \
  --auto-aof-rewrite-percentage 0 --daemonize no --logfile "$TMPD/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
  redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG && break
  sleep 0.1
done
redis-cli -p "$RPORT" ping 2>/dev/null | grep -q PONG || die "redis-server did not answer on port $RPORT"

# shellcheck disable=SC2046
$(pin "$CLIENT_CPU") timeout 900 "$BIN" --dir "$TMPD/keel" --rate "$RATE" --seconds "$SECONDS_LIVE" \
  --events "$EVENTS" --group-events "$GROUP_EVENTS" --projection-events "$PROJECTION_EVENTS" \
  --redis-port "$RPORT" 2> >(grep -v ' warning \[' >&2)

#!/usr/bin/env bash
# The Keel cluster: `keel node`s sharing a slot map through a real etcd on loopback, with
# build/bench/cluster_bench as the client (keel::NodeClient: follows 421 redirects, retries a
# write to a fenced slot). One run measures:
#   1. append throughput and p99 through the client on a cluster of 1 node and of 3 nodes
#      (CLIENTS clients, STREAMS streams, one event of SIZE bytes per append, LOAD_SECONDS s);
#   2. a rebalance under that load: 3 nodes, n0 first given SETUP_SLOTS of n2's slots (so the
#      rebalance has data to move), then LOAD_SECONDS of load "before", `keel ctl cluster rebalance`,
#      and the load "during" until the map reaches the goal: p99 during / before (target <= 2),
#      and the fence of each move (phase fenced -> flip, as the controller reports it; target
#      p99 <= 100 ms);
#   3. build/bench/cluster_simulation: the same controller on the manual clock, 3 to 30 nodes.
# The nodes run with durability DURABILITY on SERVER_CPU, the client on CLIENT_CPU (taskset):
# on a 2-core machine three nodes share one core, so "3 nodes" shows the cost of routing and
# redirects, not scaling; the simulation shows how a rebalance grows with the cluster.
# Prints tables, then as its LAST line one JSON object of the figures, units in the names.
#
#   bench/cluster.sh [BUILD_DIR]     (BUILD_DIR defaults to build)
#
# Environment: TMPBASE=/var/tmp, SERVER_CPU=1, CLIENT_CPU=0 (empty: not pinned), CLIENTS=16,
#   STREAMS=4096, SIZE=100, LOAD_SECONDS=5, SETUP_SLOTS=1024, DURABILITY=interval, SLOTS=4096,
#   MAX_SLOTS_PER_MOVE=16. Needs etcd (`scripts/install-deps test`). Uses only 127.0.0.1 and free
#   ports, stops only the processes it started, removes its temp dir.
set -euo pipefail

BUILD_DIR=${1:-build}
TMPBASE=${TMPBASE:-/var/tmp}
SERVER_CPU=${SERVER_CPU-1}
CLIENT_CPU=${CLIENT_CPU-0}
CLIENTS=${CLIENTS:-16}
STREAMS=${STREAMS:-4096}
SIZE=${SIZE:-100}
LOAD_SECONDS=${LOAD_SECONDS:-5}
SETUP_SLOTS=${SETUP_SLOTS:-1024}
DURABILITY=${DURABILITY:-interval}
SLOTS=${SLOTS:-4096}
MAX_SLOTS_PER_MOVE=${MAX_SLOTS_PER_MOVE:-16}

log() { printf '[cluster.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
PIDS=()
TMPD=$(mktemp -d "$TMPBASE/keel-cluster-bench.XXXXXX")
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

KEEL=$BUILD_DIR/keel
BENCH=$BUILD_DIR/bench/cluster_bench
SIM=$BUILD_DIR/bench/cluster_simulation
for f in "$KEEL" "$BENCH" "$SIM"; do [ -x "$f" ] || die "$f is missing: build first (cmake --build $BUILD_DIR)"; done
command -v etcd >/dev/null || die "etcd is missing: scripts/install-deps test"
# Only as `server_pin CMD &`: exec, so that $! is the server's own PID (stop_pid reaches it).
server_pin() { if [ -n "$SERVER_CPU" ]; then exec taskset -c "$SERVER_CPU" "$@"; else exec "$@"; fi; }
client_pin() { if [ -n "$CLIENT_CPU" ]; then taskset -c "$CLIENT_CPU" "$@"; else "$@"; fi; }
log "nodes and etcd on CPU ${SERVER_CPU:-any}, client on CPU ${CLIENT_CPU:-any}; $(nproc) CPUs"

pick_port ETCD_PORT 24790
pick_port ETCD_PEER 24890
server_pin etcd --data-dir "$TMPD/etcd" --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" >"$TMPD/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$ETCD_PORT/health" >/dev/null || die "etcd did not start ($TMPD/etcd.log)"

NODE_PIDS=()
URLS=""
# start_cluster N PREFIX: N nodes joined under PREFIX; their URLs in URLS.
start_cluster() {
  local n=$1 prefix=$2 i port
  URLS=""
  NODE_PIDS=()
  for i in $(seq 0 $((n - 1))); do
    pick_port port 22300
    cat >"$TMPD/$prefix-n$i.yaml" <<EOF
data_dir: $TMPD/$prefix-data$i
listen: 127.0.0.1:$port
durability: $DURABILITY
cluster:
  etcd: "http://127.0.0.1:$ETCD_PORT"
  prefix: "bench/$prefix"
  id: n$i
  initial_nodes: $n
  slot_count: $SLOTS
  max_slots_per_move: $MAX_SLOTS_PER_MOVE
EOF
    server_pin "$KEEL" --log-level warn node -c "$TMPD/$prefix-n$i.yaml" >"$TMPD/$prefix-n$i.log" 2>&1 &
    PIDS+=($!)
    NODE_PIDS+=($!)
    URLS="$URLS${URLS:+,}http://127.0.0.1:$port"
  done
  local first=${URLS%%,*}
  for _ in $(seq 200); do
    [ "$(curl -s "$first/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("epoch",0))' 2>/dev/null || echo 0)" -ge 1 ] && return 0
    sleep 0.1
  done
  for i in $(seq 0 $((n - 1))); do log "n$i's log:"; tail -n 5 "$TMPD/$prefix-n$i.log" >&2; done
  die "the cluster $prefix wrote no map"
}
stop_cluster() {
  local p
  for p in "${NODE_PIDS[@]}"; do stop_pid "$p"; done
}
figure() { python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2], 0))' "$1" "$2"; }
run_bench() { client_pin "$BENCH" --urls "$URLS" --clients "$CLIENTS" --streams "$STREAMS" --size "$SIZE" --seconds "$LOAD_SECONDS" "$@" | tail -n 1; }

log "1 node: $CLIENTS clients, $LOAD_SECONDS s"
start_cluster 1 one
ONE=$(run_bench)
stop_cluster

log "3 nodes: $CLIENTS clients, $LOAD_SECONDS s"
start_cluster 3 three
THREE=$(run_bench)
stop_cluster

log "rebalance under load: 3 nodes, $SETUP_SLOTS of n2's slots first moved to n0"
start_cluster 3 rebalance
"$KEEL" ctl cluster move "$((SLOTS - SETUP_SLOTS))-$((SLOTS - 1))" --to n0 --wait --node "${URLS%%,*}" >/dev/null
# Data in every slot before the rebalance moves them back.
client_pin "$BENCH" --urls "$URLS" --clients "$CLIENTS" --streams "$STREAMS" --size "$SIZE" --seconds 3 >/dev/null
REBALANCE=$(run_bench --action rebalance)
stop_cluster

log "simulation: 3 to 30 nodes"
SIM_OUT=$("$SIM")
printf '%s\n' "$SIM_OUT" | head -n -1 >&2
SIMULATED=$(printf '%s\n' "$SIM_OUT" | tail -n 1)

printf '\n%-28s %14s %10s %10s\n' "case" "events/s" "p50 ms" "p99 ms" >&2
printf '%-28s %14.0f %10.2f %10.2f\n' "1 node" "$(figure "$ONE" before_events_per_s)" \
  "$(figure "$ONE" before_p50_ms)" "$(figure "$ONE" before_p99_ms)" >&2
printf '%-28s %14.0f %10.2f %10.2f\n' "3 nodes" "$(figure "$THREE" before_events_per_s)" \
  "$(figure "$THREE" before_p50_ms)" "$(figure "$THREE" before_p99_ms)" >&2
printf '%-28s %14.0f %10.2f %10.2f\n' "3 nodes, before rebalance" "$(figure "$REBALANCE" before_events_per_s)" \
  "$(figure "$REBALANCE" before_p50_ms)" "$(figure "$REBALANCE" before_p99_ms)" >&2
printf '%-28s %14.0f %10.2f %10.2f\n' "3 nodes, during rebalance" "$(figure "$REBALANCE" during_events_per_s)" \
  "$(figure "$REBALANCE" during_p50_ms)" "$(figure "$REBALANCE" during_p99_ms)" >&2
printf 'rebalance: %s slots in %.1f s, %s moves; fence p50 %s ms, p99 %s ms, max %s ms; client failures %s\n' \
  "$(figure "$REBALANCE" slots_moved)" "$(figure "$REBALANCE" during_s)" "$(figure "$REBALANCE" fence_count)" \
  "$(figure "$REBALANCE" fence_p50_ms)" "$(figure "$REBALANCE" fence_p99_ms)" "$(figure "$REBALANCE" fence_max_ms)" \
  "$(( $(figure "$ONE" failures | cut -d. -f1) + $(figure "$THREE" failures | cut -d. -f1) + $(figure "$REBALANCE" failures | cut -d. -f1) ))" >&2

python3 - "$ONE" "$THREE" "$REBALANCE" "$SIMULATED" <<'EOF'
import json, sys
one, three, reb, sim = (json.loads(a) for a in sys.argv[1:5])
out = {
    "one_node_events_per_s": one["before_events_per_s"],
    "one_node_p99_ms": one["before_p99_ms"],
    "three_nodes_events_per_s": three["before_events_per_s"],
    "three_nodes_p99_ms": three["before_p99_ms"],
    "three_vs_one_node_throughput_ratio": three["before_events_per_s"] / max(one["before_events_per_s"], 1e-9),
    "before_rebalance_p99_ms": reb["before_p99_ms"],
    "during_rebalance_p99_ms": reb.get("during_p99_ms", 0),
    "p99_during_vs_before_ratio": reb.get("p99_during_vs_before_ratio", 0),
    "rebalance_s": reb.get("during_s", 0),
    "rebalance_slots_moved": reb.get("slots_moved", 0),
    "fence_p99_ms": reb.get("fence_p99_ms", 0),
    "fence_max_ms": reb.get("fence_max_ms", 0),
    "client_failures": one["failures"] + three["failures"] + reb["failures"],
    "redirects_followed": one["redirects"] + three["redirects"] + reb["redirects"],
}
for key in ("join_3_nodes_rebalance_s", "join_30_nodes_rebalance_s", "join_3_nodes_gib_moved",
            "join_30_nodes_gib_moved", "drain_30_nodes_rebalance_s"):
    out["simulated_" + key] = sim.get(key, 0)
print(json.dumps(out, separators=(",", ":")))
EOF

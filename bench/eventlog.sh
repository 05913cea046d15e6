#!/usr/bin/env bash
# Event Sourcing figures from one run on one machine, side by side:
#   1. the disk's limits: 4 KiB O_DSYNC writes/s and sequential MB/s ending in fdatasync;
#   2. Keel's event store: $BUILD_DIR/bench/eventlog_bench --dir <temp dir on disk>, whose last
#      stdout line is one JSON object of keel_* figures;
#   3. Redis 7 streams: XADD with appendonly yes and --save '', a fresh server and data dir for
#      each appendfsync mode (always, everysec); batch = redis-benchmark pipeline depth -P
#      (1, 10, 100), field value of 100 B or 1 KiB, 1 or 8 clients. Each case is sized from a
#      probe run (at least 2000 events) to last about REDIS_CASE_SECONDS, and its stream is
#      checked to hold exactly the events the benchmark sent.
# Prints tables, then as its last line one JSON object: disk_*, keel_*, redis_* figures and
# keel_vs_redis_always_b{N}_{100B,1KiB}_c{C} = Keel events/s / Redis (fsync always) events/s.
#
#   bench/eventlog.sh [BUILD_DIR]            (BUILD_DIR defaults to build)
#
# Environment: TMPBASE=/var/tmp (must be a real disk: fsync on tmpfs means nothing),
#   REDIS_CASE_SECONDS=2.5, REDIS_REPEATS=1 (runs per case, median reported; the Redis part
#   takes about REDIS_REPEATS minutes), FSYNC_MODES="always everysec", SERVER_CPU=1,
#   CLIENT_CPU=0 (empty: no pinning), KEEL_TIMEOUT_S=600.
# Installs redis-server and redis-tools if missing (needs root). Uses only 127.0.0.1 and free
# ports, stops only the processes it started (by PID) and removes its temp dir.
set -euo pipefail

BUILD_DIR=${1:-build}
TMPBASE=${TMPBASE:-/var/tmp}
REDIS_CASE_SECONDS=${REDIS_CASE_SECONDS:-2.5}
REDIS_REPEATS=${REDIS_REPEATS:-1}
FSYNC_MODES=${FSYNC_MODES:-"always everysec"}
SERVER_CPU=${SERVER_CPU-1}
CLIENT_CPU=${CLIENT_CPU-0}
KEEL_TIMEOUT_S=${KEEL_TIMEOUT_S:-600}
REDIS_MIN_EVENTS=2000
REDIS_PROBE_MAX_EVENTS=200000
REDIS_MAX_EVENTS=5000000 # bounds one case even if the probe overestimates
REDIS_RUN_TIMEOUT_S=60   # bounds one redis-benchmark process
BATCHES="1 10 100"
PAYLOADS="100 1024"
CLIENT_COUNTS="1 8"

log() { printf '[eventlog.sh] %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

KEEL_BIN="$BUILD_DIR/bench/eventlog_bench"
if [ ! -x "$KEEL_BIN" ]; then
  die "$KEEL_BIN not found or not executable. Build it first:
  cmake -S . -B $BUILD_DIR -G Ninja && cmake --build $BUILD_DIR --target eventlog_bench"
fi

# ---------------------------------------------------------------- packages
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]}; run: sudo apt-get install -y --no-install-recommends ${missing[*]}"
  fi
  log "installing: ${missing[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then # keep apt from auto-starting the packaged redis
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local installed=1
  apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    installed=0
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$installed" = 1 ] || die "could not install ${missing[*]}"
  return 0
}
ensure_pkgs redis-server redis-tools iproute2 procps util-linux coreutils python3

# ---------------------------------------------------------------- temp dir, processes, ports
fstype=$(require_disk "$TMPBASE")
TMPD=$(mktemp -d -p "$TMPBASE" keel_eventlog_bench.XXXXXX)
PIDS=()
trap cleanup EXIT
trap 'exit 130' INT TERM


# Redis server and redis-benchmark on different CPUs, as in the anchor run, when possible.
PINNING="not pinned"
if ! command -v taskset >/dev/null || [ "$(nproc)" -lt 2 ] || [ -z "$SERVER_CPU" ] ||
  [ -z "$CLIENT_CPU" ] || ! taskset -c "$SERVER_CPU" true 2>/dev/null ||
  ! taskset -c "$CLIENT_CPU" true 2>/dev/null; then
  SERVER_CPU=""
  CLIENT_CPU=""
else
  PINNING="redis-server pinned to CPU $SERVER_CPU, redis-benchmark to CPU $CLIENT_CPU (taskset)"
fi
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "NA"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

FIGURES="$TMPD/figures.tsv" # name <tab> value, merged into the JSON line at the end
: >"$FIGURES"
figure() { printf '%s\t%s\n' "$1" "$2" >>"$FIGURES"; }

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
echo "data: $TMPD ($fstype)"
# Other work on the machine (a build, another fsync-heavy process on the same disk) moves every
# figure here; a load well above 0 means the run should be repeated.
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# ---------------------------------------------------------------- 1. disk
# dd prints "N bytes (...) copied, T s, R MB/s"; take T.
dd_seconds() { LC_ALL=C timeout 300 dd "$@" 2>&1 | awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) t = $(i - 1); print t }' | tr -d ,; }
synced_s=$(dd_seconds if=/dev/zero of="$TMPD/disk.probe" bs=4k count=2000 oflag=dsync) || synced_s=""
rm -f "$TMPD/disk.probe"
seq_s=$(dd_seconds if=/dev/zero of="$TMPD/disk.probe" bs=1M count=512 conv=fdatasync) || seq_s=""
rm -f "$TMPD/disk.probe"
disk_synced=$(awk -v t="$synced_s" 'BEGIN { if (t > 0) printf "%.0f", 2000 / t; else print "NA" }')
disk_seq=$(awk -v t="$seq_s" 'BEGIN { if (t > 0) printf "%.1f", 512 * 1048576 / t / 1e6; else print "NA" }')
echo "disk (dd in the data dir)"
printf '  %-52s %10s\n' "4 KiB writes with O_DSYNC, writes/s" "$disk_synced" \
  "512 MiB sequential + fdatasync, MB/s (10^6 B)" "$disk_seq"
echo
figure disk_synced_writes_per_s "$disk_synced"
figure disk_seq_mb_per_s "$disk_seq"

# ---------------------------------------------------------------- 2. Keel
mkdir -p "$TMPD/keel"
echo "keel: $KEEL_BIN --dir $TMPD/keel (not pinned; timeout ${KEEL_TIMEOUT_S}s)"
: >"$TMPD/keel.out" # exists before tail opens it
timeout --kill-after=10 "$KEEL_TIMEOUT_S" "$KEEL_BIN" --dir "$TMPD/keel" >"$TMPD/keel.out" &
KEEL_PID=$!
PIDS+=("$KEEL_PID")
tail -n +1 -f --pid="$KEEL_PID" "$TMPD/keel.out" & # show its tables as they come
TAIL_PID=$!
PIDS+=("$TAIL_PID")
keel_rc=0
wait "$KEEL_PID" || keel_rc=$?
wait "$TAIL_PID" || true
if [ "$keel_rc" -ne 0 ]; then
  [ "$keel_rc" -eq 124 ] && die "eventlog_bench did not finish within ${KEEL_TIMEOUT_S}s"
  die "eventlog_bench exited with status $keel_rc"
fi
tail -n 1 "$TMPD/keel.out" >"$TMPD/keel.json"
python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert isinstance(d, dict)' \
  "$TMPD/keel.json" 2>/dev/null || die "the last line eventlog_bench printed is not a JSON object"
rm -rf "$TMPD/keel"
sync
echo

# ---------------------------------------------------------------- 3. Redis
pick_port RPORT 16379
rcli() { timeout 30 redis-cli -h 127.0.0.1 -p "$RPORT" "$@"; }
payload_label() { if [ "$1" = 1024 ]; then echo 1KiB; else echo "${1}B"; fi; }
declare -A VALUE
for size in $PAYLOADS; do VALUE[$size]=$(head -c "$size" /dev/zero | tr '\0' v); done

# run_benchmark N ARGS... -> "rps p50_ms p99_ms", or "NA NA NA" if it failed or timed out.
run_benchmark() {
  local n=$1 out
  shift
  out=$($(pin "$CLIENT_CPU") timeout "$REDIS_RUN_TIMEOUT_S" redis-benchmark -h 127.0.0.1 -p "$RPORT" \
    --csv -n "$n" "$@" 2>>"$TMPD/redis-benchmark.err" | tail -n 1) || true
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  awk -F'","' '$2 ~ /^[0-9.]+$/ { print $2, $5, $7; ok = 1 } END { if (!ok) print "NA NA NA" }' <<<"$out"
}

echo "redis: $(redis-server --version | sed 's/.*v=\([^ ]*\).*/Redis \1/'), appendonly yes, save '', auto AOF rewrite off; $PINNING"
echo "       XADD <stream> '*' f <value>; batch = pipeline depth -P; ~${REDIS_CASE_SECONDS}s per run after a probe run, median of $REDIS_REPEATS run(s)"
for fsync in $FSYNC_MODES; do
  rm -rf "$TMPD/redis"
  mkdir -p "$TMPD/redis"
  # shellcheck disable=SC2046  # $(pin) is meant to split into "taskset -c N"
  $(pin "$SERVER_CPU") redis-server --bind 127.0.0.1 --port "$RPORT" --protected-mode yes \
    --dir "$TMPD/redis" --appendonly yes --appendfsync "$fsync" --save '' \
    --auto-aof-rewrite-percentage 0 --daemonize no --logfile "$TMPD/redis-$fsync.log" &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  for _ in $(seq 100); do
    rcli ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
  done
  rcli ping 2>/dev/null | grep -q PONG || {
    tail -n 20 "$TMPD/redis-$fsync.log" >&2 || true
    die "redis-server did not answer on 127.0.0.1:$RPORT"
  }
  [ "$(rcli config get appendfsync | tail -n 1)" = "$fsync" ] || die "redis did not take appendfsync $fsync"

  echo
  echo "redis appendfsync=$fsync (port $RPORT)"
  printf '  %5s %7s %7s %9s %6s %11s %8s %8s\n' batch payload clients events secs events/s p50_ms p99_ms
  for batch in $BATCHES; do
    for size in $PAYLOADS; do
      for clients in $CLIENT_COUNTS; do
        label="b${batch}_$(payload_label "$size")_c${clients}"
        stream="s_$label"
        # redis-benchmark times in whole milliseconds, so a probe must run long enough for its
        # rate to mean something: grow it tenfold until it lasts 0.3 s.
        probe_n=$REDIS_MIN_EVENTS
        while :; do
          read -r probe_rps _ _ < <(run_benchmark "$probe_n" -P "$batch" -c "$clients" \
            XADD "${stream}_probe" '*' f "${VALUE[$size]}")
          rcli del "${stream}_probe" >/dev/null
          long_enough=$(awk -v r="$probe_rps" -v n="$probe_n" \
            'BEGIN { print (r !~ /^[0-9.]+$/ || r <= 0 || n / r >= 0.3) ? 1 : 0 }')
          if [ "$long_enough" = 1 ] || [ "$probe_n" -ge "$REDIS_PROBE_MAX_EVENTS" ]; then break; fi
          probe_n=$((probe_n * 10))
        done
        n=$(awk -v r="$probe_rps" -v s="$REDIS_CASE_SECONDS" -v lo="$REDIS_MIN_EVENTS" -v hi="$REDIS_MAX_EVENTS" \
          'BEGIN { n = (r ~ /^[0-9.]+$/) ? int(r * s / 1000) * 1000 : lo; if (n < lo) n = lo; if (n > hi) n = hi; print n }')
        all_rps=""
        all_p50=""
        all_p99=""
        for repeat in $(seq "$REDIS_REPEATS"); do
          read -r rps p50 p99 < <(run_benchmark "$n" -P "$batch" -c "$clients" \
            XADD "$stream" '*' f "${VALUE[$size]}")
          stored=$(rcli xlen "$stream" 2>/dev/null || echo "?")
          if [ "$stored" != "$n" ]; then
            log "redis $fsync $label run $repeat: the stream holds $stored entries, expected $n; run dropped"
            tail -n 3 "$TMPD/redis-benchmark.err" >&2 || true
            rps=NA
          fi
          rcli del "$stream" >/dev/null
          if [ "$rps" != NA ]; then
            all_rps="$all_rps $rps"
            all_p50="$all_p50 $p50"
            all_p99="$all_p99 $p99"
          fi
        done
        rps=$(median <<<"$all_rps")
        p50=$(median <<<"$all_p50")
        p99=$(median <<<"$all_p99")
        printf '  %5s %7s %7s %9s %6s %11s %8s %8s\n' "$batch" "$(payload_label "$size")" "$clients" "$n" \
          "$(awk -v r="$rps" -v n="$n" 'BEGIN { if (r ~ /^[0-9.]+$/ && r > 0) printf "%.1f", n / r; else print "-" }')" \
          "$(awk -v r="$rps" 'BEGIN { if (r ~ /^[0-9.]+$/) printf "%.0f", r; else print r }')" "$p50" "$p99"
        figure "redis_${fsync}_${label}_events_per_s" "$rps"
        figure "redis_${fsync}_${label}_p50_ms" "$p50"
        figure "redis_${fsync}_${label}_p99_ms" "$p99"
      done
    done
  done
  echo "  aof_delayed_fsync=$(rcli info persistence | awk -F: '/^aof_delayed_fsync/ { print $2 }' | tr -d '\r')," \
    "aof size $(du -sh "$TMPD/redis" | cut -f1)"
  stop_pid "$REDIS_PID" TERM
  rm -rf "$TMPD/redis"
  sync
done
echo

echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

# ---------------------------------------------------------------- merge
python3 - "$FIGURES" "$TMPD/keel.json" "$BATCHES" "$CLIENT_COUNTS" <<'PY'
import json, sys

figures_path, keel_path, batches, client_counts = sys.argv[1:5]
figures = {}
for line in open(figures_path):
    name, value = line.rstrip("\n").split("\t")
    if value in ("", "NA"):
        continue
    number = float(value)
    if name.endswith("_events_per_s") or name.endswith("_writes_per_s"):
        number = round(number)
    figures[name] = number
keel = json.loads(open(keel_path).read())
figures.update(keel)

print("Keel vs Redis (events/s; ratio = keel / redis fsync always)")
print(f"  {'case':18} {'keel':>12} {'redis always':>13} {'redis everysec':>15} {'ratio':>7}")
for batch in batches.split():
    for payload in ("100B", "1KiB"):
        for clients in client_counts.split():
            case = f"b{batch}_{payload}_c{clients}"
            k = keel.get(f"keel_append_{case}_events_per_s")
            always = figures.get(f"redis_always_{case}_events_per_s")
            everysec = figures.get(f"redis_everysec_{case}_events_per_s")
            ratio = None
            if isinstance(k, (int, float)) and always:
                ratio = float(f"{k / always:.4g}")
                figures[f"keel_vs_redis_always_{case}"] = ratio
            show = lambda v: "-" if v is None else f"{v:,.0f}"
            print(f"  {case:18} {show(k):>12} {show(always):>13} {show(everysec):>15} "
                  f"{'-' if ratio is None else ratio:>7}")
print(json.dumps(figures))
PY

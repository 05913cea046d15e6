#!/usr/bin/env bash
# keel proxy beside HAProxy 2.6 and nginx 1.22 as reverse proxies, one run, same upstream (nginx
# `return 200`, 100 B, two loopback ports), same CPU placement: bench/anchors/proxy_baseline.sh
# measures all of them, with `keel proxy` as its extra target (1 worker thread, round_robin over
# the two upstream ports, keep-alive to them) twice: access log off (`keel`) and on (`keel-log`,
# its JSON lines to a file), beside HAProxy with its log off and on (`haproxy-log`, to a file).
# Then the memory of an idle keep-alive client connection to keel proxy: RSS growth over
# IDLE_CONNECTIONS connections.
#
#   bench/proxy_vs.sh [BUILD_DIR]            (BUILD_DIR defaults to build)
#
# Environment: ANCHORS=<dir of proxy_baseline.sh> (default bench/anchors), DURATION=10s, REPEATS=3, CONNS="64 256", IDLE_CONNECTIONS=2000, SHADOW_ONLY=1, SHADOW_ROUNDS=5
#   (only the Strangler Fig shadow comparison), and the anchor's
#   WRK_CPU/UP_CPU/PROXY_CPU (default: wrk and the proxy on CPU 0, the upstream on CPU 1).
# The last line is one JSON object keyed by proxy and connection count, each with rps, p50_ms,
# p99_ms and cpu_us_per_req, plus ratios to HAProxy and keel_idle_connection_kib.
set -euo pipefail

BUILD_DIR=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
ANCHORS=${ANCHORS:-$HERE/anchors}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-2000}
KEEL=$(cd "$(dirname "$BUILD_DIR/keel")" && pwd)/keel

[ -x "$KEEL" ] || { echo "proxy_vs.sh: $KEEL not found; build first: make build" >&2; exit 1; }
[ -f "$ANCHORS/proxy_baseline.sh" ] || {
  echo "proxy_vs.sh: $ANCHORS/proxy_baseline.sh not found; set ANCHORS to the anchors directory" >&2
  exit 1
}

TMPD=$(mktemp -d -t keel_proxy_vs.XXXXXX)
trap 'rm -rf "$TMPD"' EXIT

# The launcher the anchor starts as `<launcher> PORT UP1 UP2 [ACCESS_LOG]`: a config, then exec
# (so that the PID the anchor charges CPU to is keel's).
cat >"$TMPD/keel-proxy" <<LAUNCHER
#!/usr/bin/env bash
cat >"$TMPD/keel-\$1.yaml" <<YAML
access_log: \${4:-false}
listeners:
  - address: 127.0.0.1:\$1
    workers: 1
    limits: {max_connections: 100000}
    routes:
      - {match: {prefix: /}, cluster: upstream}
clusters:
  - name: upstream
    endpoints: [{address: 127.0.0.1:\$2}, {address: 127.0.0.1:\$3}]
    load_balancer: {policy: round_robin}
    max_idle_connections: 1024
    limits: {max_connections: 100000, max_requests: 100000}
YAML
exec "$KEEL" --log-level warn proxy -c "$TMPD/keel-\$1.yaml"
LAUNCHER
chmod +x "$TMPD/keel-proxy"

echo "keel: $KEEL ($(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo '?'))"
if [ "${SHADOW_ONLY:-0}" = 1 ]; then  # only the shadow comparison (a few minutes, not ten)
  : >"$TMPD/table.txt"
  echo "0 0 0" >"$TMPD/idle.txt"
else
TARGETS="direct haproxy haproxy-log nginx" \
  EXTRAS="keel=$TMPD/keel-proxy {PORT} {UP1} {UP2} false;keel-log=$TMPD/keel-proxy {PORT} {UP1} {UP2} true" \
  bash "$ANCHORS/proxy_baseline.sh" | tee "$TMPD/table.txt"

# ---------------------------------------------------------------- idle connection memory
python3 - "$TMPD/keel-proxy" "$IDLE_CONNECTIONS" >"$TMPD/idle.txt" <<'PY'
import os, socket, subprocess, sys, time
launcher, count = sys.argv[1], int(sys.argv[2])
probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
proxy = subprocess.Popen([launcher, str(port), "1", "2"], stderr=subprocess.DEVNULL)
def rss_kib():
    with open(f"/proc/{proxy.pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
for _ in range(100):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close(); break
    except OSError:
        time.sleep(0.05)
time.sleep(0.3)
before = rss_kib()
conns = []
for _ in range(count):
    c = socket.create_connection(("127.0.0.1", port))
    conns.append(c)
time.sleep(1.0)
after = rss_kib()
proxy.terminate(); proxy.wait(timeout=10)
print(f"{(after - before) / count:.2f} {before} {after}")
PY
fi
read -r idle_kib rss_before rss_after <"$TMPD/idle.txt"
echo
echo "idle keep-alive client connections: $IDLE_CONNECTIONS opened, keel RSS ${rss_before} -> ${rss_after} KiB = ${idle_kib} KiB each (target <= 16)"

# ---------------------------------------------------------------- shadow overhead
# A plain route against a Strangler Fig route in `shadow` (legacy = upstream port 1, modern =
# upstream port 2: every request is also copied to modern and the answers compared), same
# upstream and pinning as above: what mirroring costs the client path.
SHADOW_DURATION=${SHADOW_DURATION:-10s}
PICK() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP1=$(PICK); UP2=$(PICK); PLAIN=$(PICK); SHADOWED=$(PICK); SHADOW_ADMIN=$(PICK)
mkdir -p "$TMPD/up"
cat >"$TMPD/up/nginx.conf" <<NGINX
worker_processes 1;
pid $TMPD/up/nginx.pid;
error_log $TMPD/up/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TMPD/up/b; proxy_temp_path $TMPD/up/p; fastcgi_temp_path $TMPD/up/f;
  uwsgi_temp_path $TMPD/up/u; scgi_temp_path $TMPD/up/s;
  server {
    listen 127.0.0.1:$UP1; listen 127.0.0.1:$UP2;
    default_type application/json;
    location / { return 200 '{"price": 310, "item": "tea"}'; }
  }
}
NGINX
taskset -c 1 nginx -p "$TMPD/up" -c "$TMPD/up/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
cat >"$TMPD/plain.yaml" <<YAML
access_log: false
listeners:
  - address: 127.0.0.1:$PLAIN
    routes: [{match: {prefix: /}, cluster: legacy}]
clusters:
  - {name: legacy, endpoints: [{address: 127.0.0.1:$UP1}], max_idle_connections: 1024}
  - {name: modern, endpoints: [{address: 127.0.0.1:$UP2}], max_idle_connections: 1024}
YAML
sed -e "s/$PLAIN/$SHADOWED/" -e 's/routes: \[{match: {prefix: \/}, cluster: legacy}\]/routes: [{name: price, match: {prefix: \/}, migration: {legacy: legacy, modern: modern, stage: shadow, max_in_flight: 256}}]/' \
  "$TMPD/plain.yaml" >"$TMPD/shadow.yaml"
grep -q "stage: shadow" "$TMPD/shadow.yaml" || { echo "proxy_vs.sh: could not write the shadow config" >&2; exit 1; }
echo "admin: {address: 127.0.0.1:$SHADOW_ADMIN}" >>"$TMPD/shadow.yaml"
taskset -c 0 "$KEEL" proxy -c "$TMPD/plain.yaml" 2>/dev/null &
PLAIN_PID=$!
taskset -c 0 "$KEEL" proxy -c "$TMPD/shadow.yaml" 2>/dev/null &
SHADOW_PID=$!
sleep 1
# Plain and shadow runs alternate (plain, shadow, plain, shadow, ...: SHADOW_ROUNDS rounds), so
# that a slow spell of the machine falls on both routes, not on one; each figure is the median
# of its route's runs, and the spread (min..max) is printed beside it.
SHADOW_ROUNDS=${SHADOW_ROUNDS:-5}
wrk_once() {  # wrk_once PORT -> "rps p99_ms"
  taskset -c 0 wrk -t1 -c64 -d"$SHADOW_DURATION" --latency "http://127.0.0.1:$1/" 2>&1 |
    awk '/^Requests\/sec:/ { rps = $2 } $1 == "99%" { v = $2; u = v; sub(/[a-z]+$/, "", v); sub(/^[0-9.]+/, "", u);
         p99 = (u == "us") ? v / 1000 : (u == "ms") ? v : v * 1000 } END { print rps, p99 }'
}
fixed_once() {  # fixed_once PORT -> "p50_ms p99_ms answered_per_s", at FIXED_RATE
  taskset -c 0 "$FIXED_LOAD" --port "$1" --rate "$FIXED_RATE" --connections 64 \
    --seconds "${SHADOW_DURATION%s}" --warmup 1 | tail -n 1 |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["p50_ms"], d["p99_ms"], d["achieved_per_s"])'
}
column_stats() {  # column_stats FILE COLUMN -> "median min max"
  awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'
}
mirror_counts() { curl -s "http://127.0.0.1:$SHADOW_ADMIN/migration" |
  python3 -c 'import json, sys; r = json.load(sys.stdin)[0]; print(r["mirrored"], r["mirror_dropped"])'; }
# alternate TAG MEASURE: SHADOW_ROUNDS rounds of `MEASURE PORT` on plain then shadow, into
# TAG_plain.txt and TAG_shadow.txt; prints the share of copies sent meanwhile (%).
alternate() {
  local m0 d0 m1 d1
  read -r m0 d0 < <(mirror_counts)
  for _ in $(seq "$SHADOW_ROUNDS"); do
    "$2" "$PLAIN" >>"$TMPD/$1_plain.txt"
    "$2" "$SHADOWED" >>"$TMPD/$1_shadow.txt"
  done
  read -r m1 d1 < <(mirror_counts)
  awk -v m=$((m1 - m0)) -v d=$((d1 - d0)) 'BEGIN { printf "%.1f", (m + d) ? 100 * m / (m + d) : 0 }'
}
for port in "$PLAIN" "$SHADOWED"; do  # warm-up
  taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
done
saturated_mirrored_pct=$(alternate sat wrk_once)
read -r plain_rps plain_rps_min plain_rps_max < <(column_stats "$TMPD/sat_plain.txt" 1)
read -r plain_p99 plain_p99_min plain_p99_max < <(column_stats "$TMPD/sat_plain.txt" 2)
read -r shadow_rps shadow_rps_min shadow_rps_max < <(column_stats "$TMPD/sat_shadow.txt" 1)
read -r shadow_p99 shadow_p99_min shadow_p99_max < <(column_stats "$TMPD/sat_shadow.txt" 2)
# The same routes at a fixed rate, a quarter of the plain route's saturation (the load
# generator shares keel's CPU and costs more per request than wrk): an open-loop load
# (bench/fixed_rate_load, latency from when each request was due), alternating likewise.
FIXED_RATE=$(awk -v r="$plain_rps" 'BEGIN { printf "%d", r / 4 }')
FIXED_LOAD="$(cd "$(dirname "$BUILD_DIR/keel")" && pwd)/bench/fixed_rate_load"
fixed_mirrored_pct=$(alternate fixed fixed_once)
read -r fixed_plain_p50 _ _ < <(column_stats "$TMPD/fixed_plain.txt" 1)
read -r fixed_plain_p99 fixed_plain_p99_min fixed_plain_p99_max < <(column_stats "$TMPD/fixed_plain.txt" 2)
read -r fixed_plain_rps _ _ < <(column_stats "$TMPD/fixed_plain.txt" 3)
read -r fixed_shadow_p50 _ _ < <(column_stats "$TMPD/fixed_shadow.txt" 1)
read -r fixed_shadow_p99 fixed_shadow_p99_min fixed_shadow_p99_max < <(column_stats "$TMPD/fixed_shadow.txt" 2)
read -r fixed_shadow_rps _ _ < <(column_stats "$TMPD/fixed_shadow.txt" 3)
kill "$PLAIN_PID" "$SHADOW_PID" "$NGINX_PID" 2>/dev/null || true
wait "$PLAIN_PID" "$SHADOW_PID" "$NGINX_PID" 2>/dev/null || true
echo
echo "shadow overhead (wrk -c64, keel on CPU 0, nginx upstream on CPU 1; $SHADOW_ROUNDS alternating rounds × $SHADOW_DURATION, median [min..max]):"
printf '  %-8s %26s %24s\n' route req/s p99_ms \
  "plain" "$plain_rps [$plain_rps_min..$plain_rps_max]" "$plain_p99 [$plain_p99_min..$plain_p99_max]" \
  "shadow" "$shadow_rps [$shadow_rps_min..$shadow_rps_max]" "$shadow_p99 [$shadow_p99_min..$shadow_p99_max]"
echo "  (targets: at most 10% fewer req/s and 10% higher p99 than the plain route)"
echo "  copies mirrored at saturation: $saturated_mirrored_pct% (the rest dropped and counted: mirrors use spare CPU only, SCHED_IDLE)"
echo
echo "the same at a fixed $FIXED_RATE req/s (fixed_rate_load, 64 connections, $SHADOW_ROUNDS alternating rounds × $SHADOW_DURATION):"
printf '  %-8s %12s %8s %24s\n' route answered/s p50_ms p99_ms \
  "plain" "$fixed_plain_rps" "$fixed_plain_p50" "$fixed_plain_p99 [$fixed_plain_p99_min..$fixed_plain_p99_max]" \
  "shadow" "$fixed_shadow_rps" "$fixed_shadow_p50" "$fixed_shadow_p99 [$fixed_shadow_p99_min..$fixed_shadow_p99_max]"
echo "  copies mirrored: $fixed_mirrored_pct%"
echo "$plain_rps $plain_p99 $shadow_rps $shadow_p99 $saturated_mirrored_pct $FIXED_RATE $fixed_plain_p50 $fixed_plain_p99 $fixed_shadow_p50 $fixed_shadow_p99 $fixed_shadow_rps $fixed_mirrored_pct" >"$TMPD/shadow.txt"

python3 - "$TMPD/table.txt" "$idle_kib" "$TMPD/shadow.txt" <<'PY'
import json, sys
table, idle, shadow_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
names = {"keel": "keel", "keel-log": "keel_log", "haproxy": "haproxy", "haproxy-log": "haproxy_log",
         "nginx-proxy": "nginx", "direct": "direct"}
out = {}
for line in open(table):
    f = line.split()
    if len(f) < 7 or f[0] not in names or not f[1].isdigit():
        continue
    def num(x):
        try: return float(x)
        except ValueError: return None
    rps, p50, p99, cpu = num(f[2]), num(f[3]), num(f[4]), num(f[6])
    out.setdefault(names[f[0]], {})[f[1]] = {
        "rps": rps, "p50_ms": p50 / 1000 if p50 is not None else None,
        "p99_ms": p99 / 1000 if p99 is not None else None, "cpu_us_per_req": cpu}
ratios = {}
for conns, keel in out.get("keel", {}).items():
    ha = out.get("haproxy", {}).get(conns)
    if not ha:
        continue
    ratios[conns] = {
        "rps_ratio": round(keel["rps"] / ha["rps"], 3),
        "cpu_ratio": round(keel["cpu_us_per_req"] / ha["cpu_us_per_req"], 3),
        "p99_ratio": round(keel["p99_ms"] / ha["p99_ms"], 3)}
print()
print("keel / HAProxy (targets: rps >= 1.0, cpu <= 1.0, p99 <= 1.2):")
for conns, r in sorted(ratios.items(), key=lambda kv: int(kv[0])):
    print(f"  c={conns}: rps {r['rps_ratio']}, cpu/req {r['cpu_ratio']}, p99 {r['p99_ratio']}")
out["keel_vs_haproxy"] = ratios
# With the access log on, each to a file: keel against HAProxy (target rps >= 1.0).
log_ratios = {}
for conns, keel in out.get("keel_log", {}).items():
    ha = out.get("haproxy_log", {}).get(conns)
    plain = out.get("keel", {}).get(conns)
    if not ha or not plain:
        continue
    log_ratios[conns] = {
        "rps_ratio": round(keel["rps"] / ha["rps"], 3),
        "cpu_ratio": round(keel["cpu_us_per_req"] / ha["cpu_us_per_req"], 3),
        "keel_log_cost_pct": round(100 * (1 - keel["rps"] / plain["rps"]), 1)}
print("keel / HAProxy, both with the access log on (target: rps >= 1.0):")
for conns, r in sorted(log_ratios.items(), key=lambda kv: int(kv[0])):
    print(f"  c={conns}: rps {r['rps_ratio']}, cpu/req {r['cpu_ratio']}, "
          f"the log costs keel {r['keel_log_cost_pct']}% of its req/s")
out["keel_vs_haproxy_access_log_on"] = log_ratios
out["keel_idle_connection_kib"] = idle
(plain_rps, plain_p99, shadow_rps, shadow_p99, saturated_mirrored, fixed_rate, fixed_plain_p50,
 fixed_plain_p99, fixed_shadow_p50, fixed_shadow_p99, fixed_shadow_rps, fixed_mirrored) = (
    float(x) for x in open(shadow_file).read().split())
out["keel_shadow"] = {"plain_rps": plain_rps, "plain_p99_ms": plain_p99, "shadow_rps": shadow_rps,
                      "shadow_p99_ms": shadow_p99,
                      "rps_overhead_pct": round(100 * (1 - shadow_rps / plain_rps), 1),
                      "p99_overhead_pct": round(100 * (shadow_p99 / plain_p99 - 1), 1),
                      "saturated_mirrored_pct": saturated_mirrored,
                      "fixed_rate_per_s": fixed_rate, "fixed_plain_p50_ms": fixed_plain_p50,
                      "fixed_plain_p99_ms": fixed_plain_p99, "fixed_shadow_p50_ms": fixed_shadow_p50,
                      "fixed_shadow_p99_ms": fixed_shadow_p99, "fixed_shadow_answered_per_s": fixed_shadow_rps,
                      "fixed_p99_overhead_pct": round(100 * (fixed_shadow_p99 / fixed_plain_p99 - 1), 1),
                      "fixed_mirrored_pct": fixed_mirrored}
print(f"shadow: {out['keel_shadow']['rps_overhead_pct']}% fewer req/s, "
      f"{out['keel_shadow']['p99_overhead_pct']}% higher p99 than the plain route at saturation; "
      f"{out['keel_shadow']['fixed_p99_overhead_pct']}% higher p99 at {fixed_rate:.0f} req/s")
print(json.dumps(out))
PY

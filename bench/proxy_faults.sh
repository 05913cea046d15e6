#!/usr/bin/env bash
# What one broken upstream costs the clients of a proxy: keel proxy with round robin and a 1 s
# per-try timeout, the same with hedged requests, HAProxy 2.6 and nginx 1.22, each in front of
# three upstreams on loopback of which one goes through phases
#
#   fail (500s) → hang (accepts, reads, never answers) → reset (RST instead of an answer) →
#   refuse (stops listening, its connections cut) → slow (SLOW_MS per answer) → heal
#
# while an open-loop client (bench/fixed_rate_load: requests due at a fixed rate, latency from
# when each was due) sends GETs. Per proxy and phase: success % (200s among the requests due),
# p50 and p99, and how many requests reached the broken upstream.
#
#   bench/proxy_faults.sh [BUILD_DIR]          (BUILD_DIR defaults to build)
#
# Environment: PHASE_SECONDS=10, RATE=200 (requests/s), CONNECTIONS=256, SLOW_MS=200,
#   PHASES="fail hang reset refuse slow heal", TARGETS="keel_rr keel_hedge haproxy nginx",
#   HEDGE="{after_ms: 50}" (keel_hedge's hedge policy), PROXY_CPU=0 LOAD_CPU=0 UP_CPU=1 (CPU
#   placement; an empty value leaves that part unpinned); KEEL_ACCESS_LOG=true and KEEP_TMP=1
#   (keep the scratch directory: configs, logs) to look into a run.
#
# The proxies are set up alike: round robin over the three upstreams, keep-alive to them,
# 1 s connect and response (per-try) timeouts, up to 3 tries per request on another upstream
# for connect failures, resets, timeouts and 5xx, and passive health: an upstream with 3
# failures in a row is left out for 3 s. HAProxy has no passive-only health: its `observe
# layer7` needs `check`, so it also makes TCP connect checks (every 1 s, 3 failures down, 2
# successes up) — they see `refuse` only. keel's retry budget is raised to 50 % of requests (its
# default is 20 %) because HAProxy and nginx have none, and with hedging every request that
# goes to the hanging upstream needs one; keel_hedge is keel_rr plus `hedge: $HEDGE`.
#
# The last line is one JSON object: <target>_<phase>_success_pct, _p50_ms, _p99_ms and
# _broken_requests for every target and phase, plus the run's settings.
set -euo pipefail

BUILD_DIR=${1:-build}
PHASE_SECONDS=${PHASE_SECONDS:-10}
RATE=${RATE:-200}
CONNECTIONS=${CONNECTIONS:-256}
SLOW_MS=${SLOW_MS:-200}
PHASES=${PHASES:-"fail hang reset refuse slow heal"}
TARGETS=${TARGETS:-"keel_rr keel_hedge haproxy nginx"}
HEDGE=${HEDGE:-"{after_ms: 50}"}
PROXY_CPU=${PROXY_CPU-0}
LOAD_CPU=${LOAD_CPU-0}
UP_CPU=${UP_CPU-1}

BUILD=$(cd "$BUILD_DIR" && pwd)
KEEL=$BUILD/keel
LOAD=$BUILD/bench/fixed_rate_load
for binary in "$KEEL" "$LOAD"; do
  [ -x "$binary" ] || { echo "proxy_faults.sh: $binary not found; build first: make build" >&2; exit 1; }
done

TMPD=$(mktemp -d -t keel_proxy_faults.XXXXXX)
chmod 755 "$TMPD"
PIDS=()
cleanup() {  # only what this script started, by PID
  local pid
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "proxy_faults.sh: kept $TMPD" >&2; else rm -rf "$TMPD"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() {  # wait_http URL: until it answers at all
  for _ in $(seq 100); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  echo "proxy_faults.sh: nothing answers at $1" >&2
  return 1
}

# ---------------------------------------------------------------- the upstreams
# Three small HTTP/1.1 servers in one Python process (a thread per connection), and a control
# port: GET /mode?i=0&m=MODE switches upstream 0, GET /count gives the requests each has read.
UP0=$(free_port); UP1=$(free_port); UP2=$(free_port); CONTROL=$(free_port)
cat >"$TMPD/upstreams.py" <<'PY'
import json, os, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

control_port, ports = int(sys.argv[1]), [int(p) for p in sys.argv[2:]]
slow = float(os.environ.get("SLOW_MS", "200")) / 1000.0

def answer(status, body):
    reason = {200: "OK", 500: "Internal Server Error"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(body)}\r\n\r\n{body}").encode()

class Upstream:
    def __init__(self, index, port):
        self.name, self.port = f"up{index}", port
        self.mode, self.requests = "ok", 0
        self.lock = threading.Lock()
        self.connections = set()
        self.listener = None
        self.listen()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(1024)
        s.settimeout(0.02)
        self.listener = s

    def accept_loop(self):
        while True:
            if self.mode == "refuse":  # as if the process died: no listener, connections cut
                if self.listener is not None:
                    self.listener.close()
                    self.listener = None
                    with self.lock:
                        for c in list(self.connections):
                            try:
                                c.shutdown(socket.SHUT_RDWR)
                            except OSError:
                                pass
                time.sleep(0.01)
                continue
            if self.listener is None:
                self.listen()
            try:
                c, _ = self.listener.accept()
            except socket.timeout:
                continue
            c.settimeout(None)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        with self.lock:
            self.connections.add(c)
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = c.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(buffer) < length:
                    data = c.recv(65536)
                    if not data:
                        return
                    buffer += data
                buffer = buffer[length:]
                with self.lock:
                    self.requests += 1
                mode = self.mode
                if mode == "fail":
                    c.sendall(answer(500, "failing\n"))
                elif mode == "hang":  # until the other side gives up (at most 2 minutes)
                    c.settimeout(120)
                    while c.recv(65536):
                        pass
                    return
                elif mode in ("reset", "refuse"):
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                else:
                    if mode == "slow":
                        time.sleep(slow)
                    c.sendall(answer(200, self.name + "\n"))
        except OSError:
            pass
        finally:
            with self.lock:
                self.connections.discard(c)
            c.close()

upstreams = [Upstream(i, port) for i, port in enumerate(ports)]

class Control(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/mode":
            upstreams[int(query["i"][0])].mode = query["m"][0]
            body = "ok"
        else:
            body = json.dumps([u.requests for u in upstreams])
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", control_port), Control).serve_forever()
PY
SLOW_MS=$SLOW_MS $(pin "$UP_CPU") python3 "$TMPD/upstreams.py" "$CONTROL" "$UP0" "$UP1" "$UP2" \
  2>"$TMPD/upstreams.log" &
PIDS+=($!)
for port in "$CONTROL" "$UP0" "$UP1" "$UP2"; do wait_http "http://127.0.0.1:$port/count"; done
set_mode() { curl -s -o /dev/null "http://127.0.0.1:$CONTROL/mode?i=0&m=$1"; }
broken_requests() { curl -s "http://127.0.0.1:$CONTROL/count" | python3 -c 'import json, sys; print(json.load(sys.stdin)[0])'; }

# ---------------------------------------------------------------- the proxies
keel_config() {  # keel_config PORT EXTRA_CLUSTER_LINES
  cat <<YAML
access_log: ${KEEL_ACCESS_LOG:-false}
listeners:
  - address: 127.0.0.1:$1
    workers: 1
    limits: {max_connections: 100000}
    routes:
      - {match: {prefix: /}, cluster: up, timeout_ms: 10000}
clusters:
  - name: up
    endpoints: [{address: 127.0.0.1:$UP0}, {address: 127.0.0.1:$UP1}, {address: 127.0.0.1:$UP2}]
    load_balancer: {policy: round_robin}
    connect_timeout_ms: 1000
    per_try_timeout_ms: 1000
    max_idle_connections: 1024
    retry: {num_retries: 2, retry_on: "5xx,reset,connect-failure"}
    retry_budget: {budget_ratio: 0.5}
    limits: {max_connections: 100000, max_requests: 100000, max_retries: 100000}
    outlier_detection: {consecutive_5xx: 3, consecutive_gateway_errors: 3, interval_ms: 1000,
                        base_ejection_time_ms: 3000, max_ejection_time_ms: 3000,
                        max_ejection_percent: 34}
$2
YAML
}

start_target() {  # start_target NAME PORT: starts it, sets TARGET_PID
  local name=$1 port=$2
  case $name in
    keel_rr)
      keel_config "$port" "" >"$TMPD/$name.yaml"
      $(pin "$PROXY_CPU") "$KEEL" --log-level warn proxy -c "$TMPD/$name.yaml" >"$TMPD/$name.log" 2>&1 &
      ;;
    keel_hedge)
      keel_config "$port" "    hedge: $HEDGE" >"$TMPD/$name.yaml"
      $(pin "$PROXY_CPU") "$KEEL" --log-level warn proxy -c "$TMPD/$name.yaml" >"$TMPD/$name.log" 2>&1 &
      ;;
    haproxy)
      cat >"$TMPD/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  option http-keep-alive
  timeout connect 1s
  timeout server 1s
  timeout client 60s
  timeout http-keep-alive 60s
  retries 2
  option redispatch 1
  retry-on all-retryable-errors
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  default-server check inter 1s fall 3 rise 2 observe layer7 error-limit 3 on-error mark-down
  server up0 127.0.0.1:$UP0
  server up1 127.0.0.1:$UP1
  server up2 127.0.0.1:$UP2
CFG
      $(pin "$PROXY_CPU") haproxy -db -f "$TMPD/haproxy.cfg" >"$TMPD/$name.log" 2>&1 &
      ;;
    nginx)
      mkdir -p "$TMPD/nginx"
      cat >"$TMPD/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $TMPD/nginx/nginx.pid;
error_log $TMPD/nginx/error.log crit;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TMPD/nginx/b; proxy_temp_path $TMPD/nginx/p;
  fastcgi_temp_path $TMPD/nginx/f; uwsgi_temp_path $TMPD/nginx/u; scgi_temp_path $TMPD/nginx/s;
  upstream up {
    server 127.0.0.1:$UP0 max_fails=3 fail_timeout=3s;
    server 127.0.0.1:$UP1 max_fails=3 fail_timeout=3s;
    server 127.0.0.1:$UP2 max_fails=3 fail_timeout=3s;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_connect_timeout 1s;
      proxy_send_timeout 1s;
      proxy_read_timeout 1s;
      proxy_next_upstream error timeout http_500 http_502 http_503 http_504;
      proxy_next_upstream_tries 3;
    }
  }
}
CONF
      $(pin "$PROXY_CPU") nginx -p "$TMPD/nginx" -e "$TMPD/nginx/error.log" -c "$TMPD/nginx/nginx.conf" \
        -g 'daemon off;' >"$TMPD/$name.log" 2>&1 &
      ;;
    *) echo "proxy_faults.sh: unknown target $name" >&2; exit 1 ;;
  esac
  TARGET_PID=$!
  PIDS+=("$TARGET_PID")
  wait_http "http://127.0.0.1:$port/" || { tail -20 "$TMPD/$name.log" >&2; exit 1; }
}

stop_target() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# ---------------------------------------------------------------- the run
versions="keel $(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo '?')"
# (awk reads to the end: `head` would leave the writer a SIGPIPE, fatal under pipefail)
command -v haproxy >/dev/null && versions="$versions, $(haproxy -v 2>&1 | awk 'NR == 1 {print "HAProxy", $3}')"
command -v nginx >/dev/null && versions="$versions, $(nginx -v 2>&1 | sed 's/.*version: //')"
echo "proxy_faults: $versions; $RATE req/s over $CONNECTIONS connections, $PHASE_SECONDS s per phase," \
  "slow = $SLOW_MS ms; CPUs: proxy ${PROXY_CPU:-any}, load ${LOAD_CPU:-any}, upstreams ${UP_CPU:-any} (of $(nproc))"
: >"$TMPD/results.txt"
for target in $TARGETS; do
  case $target in
    haproxy | nginx)
      if ! command -v "$target" >/dev/null; then
        echo "proxy_faults.sh: $target is not installed; skipped" >&2
        continue
      fi
      ;;
  esac
  set_mode ok
  port=$(free_port)
  start_target "$target" "$port"
  # Warm up: connections made, every upstream healthy in the proxy's eyes.
  $(pin "$LOAD_CPU") "$LOAD" --port "$port" --rate "$RATE" --connections "$CONNECTIONS" \
    --seconds 2 --warmup 0 >/dev/null
  for phase in $PHASES; do
    set_mode "$([ "$phase" = heal ] && echo ok || echo "$phase")"
    before=$(broken_requests)
    result=$($(pin "$LOAD_CPU") "$LOAD" --port "$port" --rate "$RATE" --connections "$CONNECTIONS" \
      --seconds "$PHASE_SECONDS" --warmup 0 | tail -n 1)
    after=$(broken_requests)
    python3 - "$target" "$phase" "$((after - before))" "$result" >>"$TMPD/results.txt" <<'PY'
import json, sys
target, phase, broken, result = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
success = 100.0 * result["ok"] / result["due"] if result["due"] else 0.0
print(target, phase, f"{success:.2f}", f"{result['p50_ms']:.1f}", f"{result['p99_ms']:.1f}", broken)
PY
    tail -n 1 "$TMPD/results.txt" | awk '{ printf "  %-10s %-7s success %6s %%  p50 %7s ms  p99 %7s ms  broken upstream %5s requests\n", $1, $2, $3, $4, $5, $6 }'
  done
  stop_target "$TARGET_PID"
done
set_mode ok

python3 - "$TMPD/results.txt" "$RATE" "$PHASE_SECONDS" "$SLOW_MS" "$CONNECTIONS" "$HEDGE" <<'PY'
import json, sys
path, rate, seconds, slow, connections, hedge = sys.argv[1:]
rows = [line.split() for line in open(path) if line.strip()]
targets = list(dict.fromkeys(r[0] for r in rows))
phases = list(dict.fromkeys(r[1] for r in rows))
cell = {(r[0], r[1]): r for r in rows}
print()
print("success % / p50 ms / p99 ms / requests that reached the broken upstream, per phase:")
print(f"  {'phase':<8}" + "".join(f"{t:>30}" for t in targets))
for phase in phases:
    line = f"  {phase:<8}"
    for t in targets:
        r = cell.get((t, phase))
        line += f"{(f'{r[2]} / {r[3]} / {r[4]} / {r[5]}' if r else '-'):>30}"
    print(line)
out = {"rate_per_s": float(rate), "phase_seconds": float(seconds), "slow_phase_ms": float(slow),
       "connections": int(connections), "keel_hedge_policy": hedge}
for t, phase, success, p50, p99, broken in rows:
    out[f"{t}_{phase}_success_pct"] = float(success)
    out[f"{t}_{phase}_p50_ms"] = float(p50)
    out[f"{t}_{phase}_p99_ms"] = float(p99)
    out[f"{t}_{phase}_broken_requests"] = int(broken)
print(json.dumps(out))
PY

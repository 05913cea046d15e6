#!/usr/bin/env bash
# proxy_baseline.sh - anchor figures for an HTTP sidecar / edge proxy (the runner
# bench/proxy_vs.sh uses; kept in the repository so that the benchmark needs nothing outside it).
#
# Upstream : nginx, 1 worker, `return 200` with a fixed ~100-byte body, listening
#            on two loopback ports (so a proxy can round-robin over 2 "hosts").
# Targets  : direct  - wrk -> upstream port 1
#            haproxy - wrk -> HAProxy (http mode, nbthread 1, roundrobin, http-reuse always) -> upstream
#            haproxy-log - the same HAProxy with its access log on (`option httplog`, written to
#                      stdout redirected to a file): what logging costs HAProxy
#            nginx   - wrk -> nginx reverse proxy (1 worker, upstream keepalive 64, HTTP/1.1) -> upstream
#            extra   - optional, the project's own proxy side by side, either
#                      EXTRA_CMD="bin/sidecar --listen 127.0.0.1:{PORT} --up 127.0.0.1:{UP1},127.0.0.1:{UP2}"
#                      (started here pinned like the other proxies after {PORT},{UP1},{UP2} are
#                      substituted, CPU charged to its PID, stopped by PID; name via EXTRA_NAME), or
#                      EXTRA_TARGET="name=http://127.0.0.1:PORT/" for one already running (fix the
#                      upstream ports with UP_PORT1/UP_PORT2; EXTRA_PID for its CPU figure).
#                      EXTRAS="name1=cmd1;name2=cmd2" runs several such commands, one after another.
# Load     : wrk -t1 -c{64,256} -d10s --latency, each REPEATS times, median reported.
# CPU      : 2-core box. Default placement: wrk + proxy on CPU 0, upstream alone on CPU 1
#            (override with WRK_CPU, UP_CPU, PROXY_CPU; empty string = unpinned).
# Extra    : cpu_us/req = CPU time of the server under test per request (from /proc/PID/stat),
#            a figure that depends much less on how the 2 cores are shared than req/s does.
#
# Everything binds to 127.0.0.1 only; only processes started here are stopped (by PID).
set -euo pipefail

DURATION=${DURATION:-10s}          # wrk -d
WARMUP=${WARMUP:-2s}               # short unrecorded wrk run before each target/concurrency
REPEATS=${REPEATS:-3}
CONNS=${CONNS:-"64 256"}
WRK_THREADS=${WRK_THREADS:-1}
WRK_CPU=${WRK_CPU-0}
UP_CPU=${UP_CPU-1}
PROXY_CPU=${PROXY_CPU-0}
TARGETS=${TARGETS:-"direct haproxy nginx"}
EXTRA_TARGET=${EXTRA_TARGET:-}
BODY_LEN=100

log() { printf '[proxy_baseline] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- install
ensure_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing: ${missing[*]}"
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then   # keep apt from auto-starting the packaged daemons
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  return 0
}
ensure_pkgs nginx haproxy wrk curl iproute2 util-linux procps

# ---------------------------------------------------------------- helpers
PIDS=()
TMPD=$(mktemp -d -t proxy_baseline.XXXXXX)
chmod 755 "$TMPD"
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]:-}"; do
    [ -n "$p" ] || continue
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
PICKED=" "
pick_port() {  # pick_port VAR START : VAR := first free port >= START not already picked
  local p=$2
  while ! port_free "$p" || [[ "$PICKED" == *" $p "* ]]; do p=$((p+1)); done
  PICKED="$PICKED$p "; printf -v "$1" '%s' "$p"
}
wait_http() {  # wait_http URL
  for _ in $(seq 100); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  log "timeout waiting for $1"; return 1
}
pin() { if [ -n "$1" ]; then echo "taskset -c $1"; fi; }

if [ -n "${UP_PORT1:-}" ]; then PICKED="$PICKED$UP_PORT1 "; else pick_port UP_PORT1 18081; fi
if [ -n "${UP_PORT2:-}" ]; then PICKED="$PICKED$UP_PORT2 "; else pick_port UP_PORT2 18082; fi
pick_port HA_PORT 18090
pick_port NG_PORT 18091
BODY=$(head -c $BODY_LEN < /dev/zero | tr '\0' 'x')

# ---------------------------------------------------------------- upstream nginx
cat > "$TMPD/upstream.conf" <<EOF
worker_processes 1;
pid $TMPD/upstream.pid;
error_log $TMPD/upstream.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path $TMPD/u_body; proxy_temp_path $TMPD/u_proxy;
  fastcgi_temp_path $TMPD/u_fcgi; uwsgi_temp_path $TMPD/u_uwsgi; scgi_temp_path $TMPD/u_scgi;
  server {
    listen 127.0.0.1:$UP_PORT1 backlog=4096;
    listen 127.0.0.1:$UP_PORT2 backlog=4096;
    default_type text/plain;
    location / { return 200 "$BODY"; }
  }
}
EOF
$(pin "$UP_CPU") nginx -p "$TMPD" -e "$TMPD/upstream.err" -c "$TMPD/upstream.conf" -g 'daemon off;' &
PIDS+=($!); UP_PID=$!
{ wait_http "http://127.0.0.1:$UP_PORT1/" && wait_http "http://127.0.0.1:$UP_PORT2/"; } || { cat "$TMPD/upstream.err" >&2; exit 1; }

# ---------------------------------------------------------------- haproxy
start_haproxy() {  # start_haproxy [log]: with "log", HTTP access log lines to stdout (a file)
  local log_global="" log_defaults=""
  if [ "${1:-}" = log ]; then
    log_global="log stdout format raw local0"
    log_defaults=$'log global\n  option httplog'
  fi
  cat > "$TMPD/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096   # fd need ~2*maxconn; must stay under ulimit -n
  $log_global
defaults
  mode http
  $log_defaults
  option http-keep-alive
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:$HA_PORT
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:$UP_PORT1
  server s2 127.0.0.1:$UP_PORT2
EOF
  $(pin "$PROXY_CPU") haproxy -db -f "$TMPD/haproxy.cfg" > "$TMPD/haproxy.log" 2>&1 &
  PIDS+=($!); HA_PID=$!
  wait_http "http://127.0.0.1:$HA_PORT/" || { cat "$TMPD/haproxy.log" >&2; exit 1; }
}

# ---------------------------------------------------------------- nginx reverse proxy
start_nginx_proxy() {
  cat > "$TMPD/proxy.conf" <<EOF
worker_processes 1;
pid $TMPD/proxy.pid;
error_log $TMPD/proxy.err warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path $TMPD/p_body; proxy_temp_path $TMPD/p_proxy;
  fastcgi_temp_path $TMPD/p_fcgi; uwsgi_temp_path $TMPD/p_uwsgi; scgi_temp_path $TMPD/p_scgi;
  upstream up {
    server 127.0.0.1:$UP_PORT1;
    server 127.0.0.1:$UP_PORT2;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NG_PORT backlog=4096;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
  $(pin "$PROXY_CPU") nginx -p "$TMPD" -e "$TMPD/proxy.err" -c "$TMPD/proxy.conf" -g 'daemon off;' &
  PIDS+=($!); NGP_PID=$!
  wait_http "http://127.0.0.1:$NG_PORT/" || { cat "$TMPD/proxy.err" >&2; exit 1; }
}

stop_pid() {  # stop one of our own PIDs
  local p=$1
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

# ---------------------------------------------------------------- wrk runner
to_us() {  # "312.00us" / "1.20ms" / "1.01s" -> microseconds
  awk -v v="$1" 'BEGIN{ n=v; sub(/[a-z]+$/,"",n); u=v; sub(/^[0-9.]+/,"",u);
    m=(u=="us")?1:(u=="ms")?1000:(u=="s")?1000000:(u=="m")?60000000:1; printf "%.0f", n*m }'
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END{ if(NR==0){print "NA"} else if(NR%2){print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2} }'; }

CLK_TCK=$(getconf CLK_TCK)
proc_ticks() {  # utime+stime (ticks) of the given PIDs and their direct children (nginx workers)
  local t=0 p c v
  for p in "$@"; do
    for c in $p $(ps -o pid= --ppid "$p" 2>/dev/null); do
      v=$(awk '{print $14+$15}' "/proc/$c/stat" 2>/dev/null) || v=0
      t=$((t + ${v:-0}))
    done
  done
  echo "$t"
}

RESULTS="$TMPD/results.tsv"; : > "$RESULTS"
run_target() {  # run_target NAME URL "PIDS-whose-CPU-is-charged-per-request"
  local name=$1 url=$2 cpids=${3:-} c r out rps p50 p99 errs nreq t0 t1 cpr
  for c in $CONNS; do
    $(pin "$WRK_CPU") timeout 60 wrk -t"$WRK_THREADS" -c"$c" -d"$WARMUP" "$url" > /dev/null 2>&1 || true
    local rl="" l50="" l99="" el="" cl=""
    for r in $(seq "$REPEATS"); do
      t0=$(proc_ticks $cpids)
      out=$($(pin "$WRK_CPU") timeout 120 wrk -t"$WRK_THREADS" -c"$c" -d"$DURATION" --latency "$url" 2>&1) || true
      t1=$(proc_ticks $cpids)
      rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
      nreq=$(awk '/requests in/{print $1}' <<<"$out")
      p50=$(to_us "$(awk '$1=="50%"{print $2}' <<<"$out")")
      p99=$(to_us "$(awk '$1=="99%"{print $2}' <<<"$out")")
      errs=$(awk '/Socket errors|Non-2xx/{s=s $0 ";"} END{print s}' <<<"$out")
      if [ -n "$cpids" ] && [ "${nreq:-0}" -gt 0 ]; then
        cpr=$(awk -v d=$((t1-t0)) -v n="$nreq" -v hz="$CLK_TCK" 'BEGIN{printf "%.2f", d*1e6/hz/n}')
      else cpr=NA; fi
      log "$name c=$c run $r: rps=$rps p50=${p50}us p99=${p99}us cpu_us/req=$cpr ${errs}"
      rl="$rl $rps"; l50="$l50 $p50"; l99="$l99 $p99"; cl="$cl $cpr"; [ -n "$errs" ] && el="$el [$errs]"
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$c" "$(median <<<"$rl")" "$(median <<<"$l50")" \
      "$(median <<<"$l99")" "$(median <<<"$(tr ' ' '\n' <<<"$cl" | grep -v NA)")" "$rl" "${el:-none}" >> "$RESULTS"
  done
}

log "upstream ports $UP_PORT1,$UP_PORT2 (cpu ${UP_CPU:-any}); wrk cpu ${WRK_CPU:-any}; proxy cpu ${PROXY_CPU:-any}"
for t in $TARGETS; do
  case $t in
    direct)  run_target direct "http://127.0.0.1:$UP_PORT1/" "$UP_PID" ;;
    haproxy) start_haproxy; run_target haproxy "http://127.0.0.1:$HA_PORT/" "$HA_PID"; stop_pid "$HA_PID" ;;
    haproxy-log) start_haproxy log; run_target haproxy-log "http://127.0.0.1:$HA_PORT/" "$HA_PID"; stop_pid "$HA_PID"
                 log "haproxy-log wrote $(wc -l < "$TMPD/haproxy.log") log lines" ;;
    nginx)   start_nginx_proxy; run_target nginx-proxy "http://127.0.0.1:$NG_PORT/" "$NGP_PID"; stop_pid "$NGP_PID" ;;
  esac
done
run_extra() {  # run_extra NAME CMD: start CMD (stdout to a file), measure it, stop it
  local name=$1 ex=$2
  pick_port EX_PORT 18092
  ex=${ex//\{PORT\}/$EX_PORT}; ex=${ex//\{UP1\}/$UP_PORT1}; ex=${ex//\{UP2\}/$UP_PORT2}
  log "starting extra target $name: $ex"
  $(pin "$PROXY_CPU") bash -c "exec $ex" > "$TMPD/extra-$name.log" 2>&1 &
  EX_PID=$!; PIDS+=($EX_PID)
  wait_http "http://127.0.0.1:$EX_PORT/" || { tail -20 "$TMPD/extra-$name.log" >&2; exit 1; }
  run_target "$name" "http://127.0.0.1:$EX_PORT/" "$EX_PID"
  stop_pid "$EX_PID"
  log "$name wrote $(wc -l < "$TMPD/extra-$name.log") lines of output"
}
if [ -n "${EXTRA_CMD:-}" ]; then run_extra "${EXTRA_NAME:-project}" "$EXTRA_CMD"; fi
if [ -n "${EXTRAS:-}" ]; then
  IFS=';' read -r -a extras <<<"$EXTRAS"
  for entry in "${extras[@]}"; do run_extra "${entry%%=*}" "${entry#*=}"; done
fi
if [ -n "$EXTRA_TARGET" ]; then
  wait_http "${EXTRA_TARGET#*=}"
  run_target "${EXTRA_TARGET%%=*}" "${EXTRA_TARGET#*=}" "${EXTRA_PID:-}"
fi

# ---------------------------------------------------------------- report
echo
echo "versions: $(nginx -v 2>&1 | sed 's/.*version: //') | $(haproxy -v 2>&1 | head -1 | awk '{print "HAProxy",$3}') | $(wrk -v 2>&1 | head -1 | awk '{print "wrk",$2}')"
echo "load: wrk -t$WRK_THREADS -d$DURATION --latency, median of $REPEATS; cpus: wrk=${WRK_CPU:-any} upstream=${UP_CPU:-any} proxy=${PROXY_CPU:-any}; body ${BODY_LEN}B"
printf '%-12s %5s %9s %8s %8s %9s %10s  %s\n' target conns req/s p50_us p99_us vs_direct cpu_us/req "runs(req/s) / errors"
awk -F'\t' '
  { if($1=="direct") d[$2]=$3; row[NR]=$0 }
  END { for(i=1;i<=NR;i++){ split(row[i],f,"\t");
          ratio=(d[f[2]]>0)?sprintf("%.3f",f[3]/d[f[2]]):"NA";
          printf "%-12s %5s %9.0f %8s %8s %9s %10s  %s / %s\n", f[1], f[2], f[3], f[4], f[5], ratio, f[6], f[7], f[8] } }' "$RESULTS"
echo "cpu_us/req = CPU time (user+sys, incl. nginx workers) of the measured server process per request:"
echo "  upstream nginx for 'direct', the proxy alone for proxy rows (EXTRA_PID for EXTRA_TARGET)."

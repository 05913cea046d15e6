# Helpers the benchmark scripts share; sourced after the script defines log() and die() and
# the array PIDS of the processes it started.

# The filesystem under $1; dies when it is tmpfs or ramfs, where fsync costs nothing.
require_disk() {
  local fstype
  # findmnt prints a line per stacked mount (/dev/shm can show tmpfs twice): the first is it.
  fstype=$(findmnt -n -o FSTYPE --target "$1" 2>/dev/null | head -n 1)
  [ -n "$fstype" ] || fstype=$(stat -f -c %T "$1")
  case "$fstype" in
    tmpfs | ramfs) die "TMPBASE=$1 is on $fstype; fsync there costs nothing. Point TMPBASE at a disk." ;;
  esac
  printf '%s' "$fstype"
}

# Stops one process this script started: signal $2 (TERM), up to 15 s, then KILL; reaps it.
stop_pid() {
  local p=$1 sig=${2:-TERM}
  kill -0 "$p" 2>/dev/null || return 0
  kill -"$sig" "$p" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$p" 2>/dev/null; then
    log "pid $p did not stop on SIG$sig within 15 s; killing it"
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
}

# Stops every process in PIDS and removes $TMPD: the scripts' EXIT trap.
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && stop_pid "$p"; done
  rm -rf "$TMPD"
}

# pick_port VAR FROM: the first free loopback TCP port from FROM that this script has not
# picked yet, into VAR.
PICKED=" "
port_free() { [ -z "$(ss -Htln "sport = :$1" 2>/dev/null)" ]; }
pick_port() {
  local p=$2
  while ! port_free "$p" || [[ "$PICKED" == *" $p "* ]]; do p=$((p + 1)); done
  PICKED="$PICKED$p "
  printf -v "$1" '%s' "$p"
}

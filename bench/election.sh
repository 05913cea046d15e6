#!/usr/bin/env bash
# Leader Election figures from one run on one machine: Keel's `keel ctl elect` candidates and
# the etcdctl-driven lease campaign (the protocol's floor) at the same TTL, against one local
# etcd on free loopback ports. See bench/election_bench.cc for what each mode measures.
#
#   bench/election.sh [BUILD_DIR]            (BUILD_DIR defaults to build)
#
# Environment: TRIALS=20 (kill -9 and resign trials; SIGSTOP trials are TRIALS/4, etcdctl
#   resign trials TRIALS/2), TTL_MS=2000. Takes about 3 minutes at the defaults.
# Needs etcd-server and etcd-client (scripts/install-deps installs them). The last line is one
# JSON object of figures.
set -euo pipefail

BUILD_DIR=${1:-build}
TRIALS=${TRIALS:-20}
TTL_MS=${TTL_MS:-2000}

for tool in etcd etcdctl; do
  command -v "$tool" >/dev/null || {
    echo "election.sh: $tool not found; run scripts/install-deps (Debian: etcd-server etcd-client)" >&2
    exit 1
  }
done
for program in "$BUILD_DIR/keel" "$BUILD_DIR/bench/election_bench"; do
  [ -x "$program" ] || {
    echo "election.sh: $program not found; build first: make build" >&2
    exit 1
  }
done

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
echo "versions: $(etcd --version | awk '/etcd Version/ { print "etcd " $3 }'), $(etcdctl version | awk '/etcdctl version/ { print "etcdctl " $3 }')"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
exec "$BUILD_DIR/bench/election_bench" --keel "$BUILD_DIR/keel" --trials "$TRIALS" --ttl-ms "$TTL_MS"

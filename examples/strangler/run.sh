#!/usr/bin/env bash
# Walks /price through a migration: legacy, shadow (the diff report), canary 25 %, modern, and a
# rollback when modern starts failing. Starts the services and keel proxy, stops them at the end.
#   examples/strangler/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")"
KEEL=$(cd "${1:-../../build}" && pwd)/keel
[ -x "$KEEL" ] || { echo "run.sh: $KEEL not found; run 'make build' first" >&2; exit 1; }
export KEEL_PROXY_ADMIN=http://127.0.0.1:9901
rm -f /tmp/keel-strangler-state.json
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
python3 prices.py legacy 9101 & PIDS+=($!)
python3 prices.py legacy 9102 & PIDS+=($!)
python3 prices.py modern 9201 & MODERN=$!; PIDS+=($MODERN)
"$KEEL" proxy -c strangler.yaml >/dev/null 2>/tmp/keel-strangler.log & PIDS+=($!)
for _ in $(seq 50); do curl -fsS -o /dev/null "$KEEL_PROXY_ADMIN/ready" 2>/dev/null && break; sleep 0.1; done
traffic() { for i in $(seq 100); do curl -s -o /dev/null -H "x-user: u$i" "http://127.0.0.1:10000/price?item=tea"; done; sleep 0.3; }

step() { echo; echo "\$ $*"; "$@"; }
traffic
step "$KEEL" ctl migrate price shadow
traffic
step "$KEEL" ctl migration
echo "differing fields and noise (curl -s $KEEL_PROXY_ADMIN/migration):"
curl -s "$KEEL_PROXY_ADMIN/migration" | python3 -c '
import json, sys
r = json.load(sys.stdin)[0]
print("  differs:", {f["field"]: f["count"] for f in r["top_differing_fields"]})
print("  noise (legacy differs from itself):", r["noise_fields"])
s = r["samples"][0] if r["samples"] else None
if s: print("  sample:", s["request"], "| legacy:", s["legacy_body"], "| modern:", s["modern_body"])'
step "$KEEL" ctl migrate price canary --percent 25
traffic
step "$KEEL" ctl migrate price modern
traffic
step "$KEEL" ctl migrate price retired || true
echo
echo "modern starts failing:"
kill "$MODERN"; python3 prices.py modern 9201 --fail & PIDS+=($!); sleep 0.5
step "$KEEL" ctl migrate price modern
traffic
step "$KEEL" ctl migration
echo; echo "proxy log:"; cat /tmp/keel-strangler.log

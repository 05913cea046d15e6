#!/usr/bin/env bash
# Runs the whole example: three replicas of the service (one fails 40% of its calls, one is
# slow), keel proxy as the ambassador, then the app; prints what the app saw and the proxy's
# view of the replicas. Stops everything it started.
#   examples/ambassador/run.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")"
KEEL=${1:-../../build}/keel
[ -x "$KEEL" ] || { echo "run.sh: $KEEL not found; run 'make build' first" >&2; exit 1; }
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
python3 service.py 8081 & PIDS+=($!)
python3 service.py 8082 --fail-rate 0.4 & PIDS+=($!)
python3 service.py 8083 --delay-ms 300 & PIDS+=($!)
"$KEEL" proxy -c ambassador.yaml >/tmp/keel-ambassador-access.log & PIDS+=($!)
for _ in $(seq 50); do curl -fsS -o /dev/null http://127.0.0.1:9901/ready 2>/dev/null && break; sleep 0.1; done
sleep 1.5  # the first health checks
python3 app.py --requests 200
echo
echo "the proxy's view (curl -s 127.0.0.1:9901/clusters):"
curl -s http://127.0.0.1:9901/clusters >/tmp/keel-ambassador-clusters.json
python3 - /tmp/keel-ambassador-clusters.json <<'PY'
import json, sys
for cluster in json.load(open(sys.argv[1])):
    for e in cluster["endpoints"]:
        print(f"  {e['address']}: {e['requests']} attempts, {e['failures']} failed, "
              f"healthy={e['healthy']}, ejections={e['ejections']}")
    print(f"  retries: {cluster['retries']}, breaker: {cluster['breaker']}")
PY
echo "access log: /tmp/keel-ambassador-access.log ($(wc -l </tmp/keel-ambassador-access.log) lines)"

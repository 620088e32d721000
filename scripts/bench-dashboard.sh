#!/usr/bin/env bash
# Benchmark: how long /api/samples takes for 30 days of 30 s samples (86,400),
# the dashboard's largest window, downsampled to 1000 points (the page's
# request), and how long the page's other requests take. Measures; asserts
# nothing.
#
# Usage: scripts/bench-dashboard.sh [RUNS]   (default 5)
# Needs: curl. Builds the release binary first (PROFILE=debug to skip that).
set -euo pipefail

RUNS=${1:-5}
PROFILE=${PROFILE:-release}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
SERVER=
cleanup() {
    if [[ -n "$SERVER" ]]; then kill "$SERVER" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

if [[ "$PROFILE" == release ]]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
else
    cargo build --quiet --manifest-path "$ROOT/Cargo.toml"
fi
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/hxlog

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/hxlog.json" <<JSON
{"device_id": "bench", "data_dir": "$WORK/data", "sensor_source": "mock",
 "clock_sync": "always", "http_listen": "127.0.0.1:$PORT"}
JSON
export HXLOG_CONFIG=$WORK/hxlog.json
echo "writing 86400 simulated samples (30 days at 30 s)"
"$BIN" simulate --count 86400 --interval 30s >/dev/null 2>&1
"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
    curl -s "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done

measure() {
    local path=$1
    local best=999 total=0 t bytes
    for _ in $(seq 1 "$RUNS"); do
        read -r t bytes < <(curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://127.0.0.1:$PORT$path")
        best=$(python3 -c "print(min($best, $t))")
        total=$(python3 -c "print($total + $t)")
    done
    printf '%-48s best %6.0f ms  mean %6.0f ms  %8s bytes\n' "$path" \
        "$(python3 -c "print($best * 1000)")" "$(python3 -c "print($total / $RUNS * 1000)")" "$bytes"
}

echo "$PROFILE build, $RUNS runs each, $(nproc) CPUs ($(uname -m))"
measure "/api/samples?since=30d&max_points=1000"
measure "/api/samples?since=7d&max_points=1000"
measure "/api/samples?since=24h&max_points=1000"
measure "/api/current"
measure "/metrics"
measure "/"

#!/usr/bin/env bash
# Benchmark: drain a backlog of N simulated samples from the outbox into the
# local PostgreSQL with `hxlog replay --sink postgres`, and compare with the
# time `psql \copy` takes to load the same rows into a table of the same shape
# (the practical limit of this machine). Reports samples/s and peak RSS.
#
# Usage: scripts/bench-forward.sh [N]   (default 1000000; also try 100000 to see
# that peak RSS does not grow with the backlog)
# Needs: the local PostgreSQL (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432 postgres),
# psql, python3. Builds the release binary first.
set -euo pipefail

N=${1:-1000000}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
DB=hxlog_bench_$$
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
cleanup() {
    psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/hxlog

# Runs a command; prints "<seconds> <peak RSS KiB>" of that command alone.
measure() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.monotonic()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
dt = time.monotonic() - t
print(f"{dt:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
PY
}

psql -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
cat > "$WORK/hxlog.json" <<JSON
{"device_id": "bench-01", "data_dir": "data", "sensor_source": "mock",
 "secrets": "secrets.json", "sqlite_synchronous": "normal"}
JSON
cat > "$WORK/secrets.json" <<JSON
{"PG_DB_HOST": "$PGHOST", "PG_DB_PORT": "$PGPORT", "PG_DB_NAME": "$DB",
 "PG_DB_USER": "$PGUSER", "PG_DB_PASSWORD": "", "PG_DB_SSLMODE": "disable"}
JSON
chmod 600 "$WORK/secrets.json"
cd "$WORK"

read -r t_sim rss_sim < <(measure "$BIN" --config hxlog.json simulate --count "$N" --interval 1s)
"$BIN" --config hxlog.json migrate >/dev/null
read -r t_fwd rss_fwd < <(measure env RUST_LOG=warn "$BIN" --config hxlog.json replay --sink postgres)
rows=$(psql -At -d "$DB" -c "SELECT count(*) FROM samples")
[ "$rows" = "$N" ] || { echo "expected $N rows in Postgres, found $rows" >&2; exit 1; }

# The same rows, loaded with \copy into an empty table of the same shape (same indexes).
psql -q -d "$DB" -c "COPY samples TO '$WORK/rows.csv' WITH (FORMAT csv)" 2>/dev/null \
    || psql -q -d "$DB" -c "\\copy samples TO '$WORK/rows.csv' WITH (FORMAT csv)"
psql -q -d "$DB" -c "CREATE TABLE samples_copy (LIKE samples INCLUDING ALL)"
read -r t_copy _ < <(measure psql -q -d "$DB" -c "\\copy samples_copy FROM '$WORK/rows.csv' WITH (FORMAT csv)")

python3 - "$N" "$t_sim" "$rss_sim" "$t_fwd" "$rss_fwd" "$t_copy" <<'PY'
import sys
n = int(sys.argv[1]); t_sim, rss_sim, t_fwd, rss_fwd, t_copy = map(float, sys.argv[2:])
print(f"backlog                    {n:,} samples")
print(f"hxlog simulate             {t_sim:7.2f} s  {n / t_sim:>10,.0f} samples/s  peak RSS {rss_sim / 1024:.1f} MiB")
print(f"hxlog replay --sink pg     {t_fwd:7.2f} s  {n / t_fwd:>10,.0f} samples/s  peak RSS {rss_fwd / 1024:.1f} MiB")
print(f"psql \\copy (same rows)     {t_copy:7.2f} s  {n / t_copy:>10,.0f} rows/s")
print(f"replay / \\copy rate        {t_copy / t_fwd:7.0%}")
PY

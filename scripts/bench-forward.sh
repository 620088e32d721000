#!/usr/bin/env bash
# Benchmark: drain a backlog of N simulated samples from the outbox into the
# local PostgreSQL with `hxlog replay --sink postgres`, and compare with the
# time `psql \copy` takes to load the same rows into a table of the same shape
# (the practical limit of this machine). Reports, for each: the rate, the
# Postgres backend's CPU time per 100,000 rows (utime + stime of the server
# process serving the connection, read from /proc), and the drain's peak RSS.
#
# Usage: scripts/bench-forward.sh [N]   (default 1000000; also try 100000 to see
# that peak RSS does not grow with the backlog)
# ROUNDS=n drains the backlog n times (default 3), each time followed by the
# \copy, and reports medians: the machine's load drifts, and a replay and a
# \copy run back to back see about the same.
# HXLOG_BIN=path runs that binary instead of building the release binary (to
# measure another build, e.g. main's, with this script).
# Needs: the local PostgreSQL on this machine (PGHOST/PGPORT/PGUSER, default
# 127.0.0.1:5432 postgres; its processes' /proc entries readable), psql, python3.
set -euo pipefail

N=${1:-1000000}
ROUNDS=${ROUNDS:-3}
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

if [ -n "${HXLOG_BIN:-}" ]; then
    BIN=$HXLOG_BIN
else
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/hxlog
fi

# measure APPNAME CMD...: runs CMD; prints "<seconds> <peak RSS KiB of CMD>
# <CPU seconds of the Postgres backend whose application_name is APPNAME in $DB>"
# (APPNAME - watches no backend).
# The backend is found in pg_stat_activity and its /proc/PID/stat read until
# it exits (every 20 ms: the last 20 ms of its CPU time may be missed).
measure() {
    python3 - "$DB" "$@" <<'PY'
import os, subprocess, sys, threading, time
db, app, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
tick = os.sysconf("SC_CLK_TCK")
cpu = {}  # backend pid -> last utime + stime seen, seconds
done = threading.Event()

def backend_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        return None

def watch():
    pid = None
    while app != "-" and not done.is_set():
        if pid is None:
            out = subprocess.run(
                ["psql", "-At", "-d", db, "-c",
                 f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}' AND application_name = '{app}'"],
                capture_output=True, text=True).stdout.split()
            pid = int(out[0]) if out else None
            if pid is None:
                time.sleep(0.05)
                continue
        t = backend_cpu(pid)
        if t is None:
            pid = None  # exited (or reconnected): look again
            continue
        cpu[pid] = t
        time.sleep(0.02)

w = threading.Thread(target=watch, daemon=True)
w.start()
env = dict(os.environ, PGAPPNAME=app)
t = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
_, status, usage = os.wait4(p.pid, 0)
dt = time.monotonic() - t
done.set()
w.join()
if status != 0:
    sys.exit(f"{cmd} failed: status {status}")
print(f"{dt:.3f} {usage.ru_maxrss} {sum(cpu.values()):.3f}")
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

read -r t_sim rss_sim _ < <(measure - "$BIN" --config hxlog.json simulate --count "$N" --interval 1s)
"$BIN" --config hxlog.json migrate >/dev/null
# Each round drains the same backlog again: from a copy of the outbox as
# simulate left it, into an emptied table.
cp -a data pristine
rounds_file=$WORK/rounds
for round in $(seq "$ROUNDS"); do
    if [ "$round" -gt 1 ]; then
        rm -rf data && cp -a pristine data
        psql -q -d "$DB" -c "TRUNCATE samples"
    fi
    # hxlog names its connection "hxlog" (application_name) whatever PGAPPNAME says.
    read -r t_fwd rss_fwd cpu_fwd < <(measure hxlog env RUST_LOG=warn "$BIN" --config hxlog.json replay --sink postgres)
    rows=$(psql -At -d "$DB" -c "SELECT count(*) FROM samples")
    [ "$rows" = "$N" ] || { echo "expected $N rows in Postgres, found $rows" >&2; exit 1; }

    # The same rows, loaded with \copy into an empty table of the same shape (same indexes).
    if [ "$round" = 1 ]; then
        psql -q -d "$DB" -c "COPY samples TO '$WORK/rows.csv' WITH (FORMAT csv)" 2>/dev/null \
            || psql -q -d "$DB" -c "\\copy samples TO '$WORK/rows.csv' WITH (FORMAT csv)"
        psql -q -d "$DB" -c "CREATE TABLE samples_copy (LIKE samples INCLUDING ALL)"
    else
        psql -q -d "$DB" -c "TRUNCATE samples_copy"
    fi
    read -r t_copy _ cpu_copy < <(measure hxlog_bench_copy psql -q -d "$DB" -c "\\copy samples_copy FROM '$WORK/rows.csv' WITH (FORMAT csv)")
    echo "$t_fwd $rss_fwd $cpu_fwd $t_copy $cpu_copy" >> "$rounds_file"
done

python3 - "$N" "$t_sim" "$rss_sim" "$rounds_file" <<'PY'
import statistics, sys
n = int(sys.argv[1])
t_sim, rss_sim = map(float, sys.argv[2:4])
rounds = [list(map(float, line.split())) for line in open(sys.argv[4])]
per = 100_000 / n
for i, (t_fwd, rss_fwd, cpu_fwd, t_copy, cpu_copy) in enumerate(rounds, 1):
    print(f"round {i}: replay {t_fwd:6.2f} s, \\copy {t_copy:6.2f} s, replay / \\copy rate {t_copy / t_fwd:4.0%}")
med = lambda k: statistics.median(r[k] for r in rounds)
t_fwd, cpu_fwd, t_copy, cpu_copy = med(0), med(2), med(3), med(4)
rss_fwd = max(r[1] for r in rounds)
print(f"backlog                    {n:,} samples, {len(rounds)} rounds (medians; peak RSS the largest)")
print(f"hxlog simulate             {t_sim:7.2f} s  {n / t_sim:>10,.0f} samples/s  peak RSS {rss_sim / 1024:.1f} MiB")
print(f"hxlog replay --sink pg     {t_fwd:7.2f} s  {n / t_fwd:>10,.0f} samples/s  peak RSS {rss_fwd / 1024:.1f} MiB"
      f"  backend CPU {cpu_fwd * per:.2f} s/100k rows")
print(f"psql \\copy (same rows)     {t_copy:7.2f} s  {n / t_copy:>10,.0f} rows/s"
      f"                          backend CPU {cpu_copy * per:.2f} s/100k rows")
print(f"replay / \\copy rate        {t_copy / t_fwd:7.0%}  (median of the rounds' ratios {statistics.median(r[3] / r[0] for r in rounds):.0%})")
PY

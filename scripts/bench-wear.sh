#!/usr/bin/env bash
# Benchmark: what one sample costs the storage (the SD card on a Pi) and the
# memory, with both sinks configured (the local PostgreSQL and the fake Web
# PubSub service of the tests, run as tests/e2e/support/examples/wps_server.rs).
#
# Two modes, each on a fresh outbox with mock sensors and a 1 s interval
# (INTERVAL below):
#   run    one `hxlog run`; after a warm-up, /proc/<pid>/io is read before and
#          after N samples. Also its VmRSS/VmHWM in steady state.
#   timer  timer mode: `hxlog sample` then `hxlog replay` every interval (the
#          shipped timers run both every 5 minutes); every process's
#          /proc/<pid>/io is read when it has exited but before it is reaped,
#          and summed. Also `hxlog sample`'s CPU time and peak RSS per run.
#
# Figures per sample: write_bytes (bytes the process sent towards the block
# layer: page-cache pages it dirtied, counted when dirtied, 4 KiB each, so a
# WAL frame that straddles two pages counts 8 KiB), wchar (bytes passed to
# write(2)/pwrite(2), whatever the cache does with them) and syscw (write
# syscalls; in `run` one of them per sample is the log line on stderr).
# The outbox lives in BENCH_DIR (default target/bench-wear: a real disk, never
# tmpfs, where write_bytes would read 0).
#
# Usage: scripts/bench-wear.sh [N]   (samples measured per mode, default 120)
# Env: WARM (warm-up samples, default 20), MODES ("run timer"), INTERVAL
# (seconds between samples, default 1; at 30 the kernel writes dirty pages
# back between two samples, as on a Pi at the default interval), HXLOG_BIN (a
# binary to measure instead of building this tree's, e.g. a baseline build).
# Needs: the local PostgreSQL (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432
# postgres), psql, python3.
set -euo pipefail

N=${1:-120}
WARM=${WARM:-20}
INTERVAL=${INTERVAL:-1}
MODES=${MODES:-"run timer"}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_DIR=${BENCH_DIR:-$TARGET/bench-wear}
DB=hxlog_wear_$$
WORK=$BENCH_DIR/$$
WPS_PID=
cleanup() {
    if [ -n "$WPS_PID" ]; then kill "$WPS_PID" 2>/dev/null || true; fi
    psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${HXLOG_BIN:-}" ]; then
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
fi
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p hxlog-test-support --example wps_server
BIN=${HXLOG_BIN:-$TARGET/release/hxlog}
mkdir -p "$WORK"
[ "$(stat -f -c %T "$WORK")" != tmpfs ] || { echo "BENCH_DIR $BENCH_DIR is on tmpfs: write_bytes would be 0; set BENCH_DIR to a disk folder" >&2; exit 1; }

"$TARGET/release/examples/wps_server" heatexchanger benchkey0123456789 >"$WORK/wps.out" &
WPS_PID=$!
for _ in $(seq 100); do [ -s "$WORK/wps.out" ] && break; sleep 0.1; done
WPS_CONN=$(head -n1 "$WORK/wps.out")
psql -q -d postgres -c "CREATE DATABASE $DB" >/dev/null

python3 - "$BIN" "$WORK" "$N" "$WARM" "$MODES" "$DB" "$WPS_CONN" "$INTERVAL" <<'PY'
import json, os, signal, subprocess, sys, time

binary, work, n, warm, modes, db, wps, interval = sys.argv[1:]
n, warm, interval = int(n), int(warm), int(interval)
env = dict(os.environ)


def setup(mode):
    d = os.path.join(work, mode)
    os.makedirs(d)
    with open(os.path.join(d, "hxlog.json"), "w") as f:
        json.dump({"device_id": "bench-01", "data_dir": "data", "sensor_source": "mock",
                   "interval": f"{interval}s", "secrets": "secrets.json", "clock_sync": "always"}, f)
    with open(os.path.join(d, "secrets.json"), "w") as f:
        json.dump({"PG_DB_HOST": env["PGHOST"], "PG_DB_PORT": env["PGPORT"], "PG_DB_NAME": db,
                   "PG_DB_USER": env["PGUSER"], "PG_DB_PASSWORD": "", "PG_DB_SSLMODE": "disable",
                   "AZURE_WEBPUBSUB_CONNECTION_STRING": wps}, f)
    os.chmod(os.path.join(d, "secrets.json"), 0o600)
    return d


def hx(d, *args, **kw):
    return [binary, "--config", os.path.join(d, "hxlog.json"), *args]


def status(d):
    out = subprocess.run(hx(d, "status", "--json"), cwd=d, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)["outbox"]


def samples(d):
    return status(d)["samples"]


def io(pid):
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f)}


def mem(pid):
    with open(f"/proc/{pid}/status") as f:
        return {k: int(v.split()[0]) for k, v in (line.split(":\t") for line in f) if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def diff(a, b):
    return {k: b[k] - a[k] for k in ("write_bytes", "wchar", "syscw")}


def report(mode, d, count, extra=""):
    print(f"{mode:5} {count:4} samples: {d['write_bytes'] / count / 1024:6.2f} KiB write_bytes/sample  "
          f"{d['wchar'] / count / 1024:6.2f} KiB wchar/sample  {d['syscw'] / count:5.1f} write syscalls/sample{extra}")


def run_mode():
    d = setup("run")
    log = open(os.path.join(d, "run.log"), "w")
    # stderr (the log) goes through a pipe, as to journald: it is not the outbox's wear
    p = subprocess.Popen(hx(d, "run"), cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tee = subprocess.Popen(["cat"], stdin=p.stderr, stdout=log)
    try:
        deadline = time.monotonic() + warm * 3 * interval + 60
        while True:
            time.sleep(0.5)
            if time.monotonic() > deadline:
                sys.exit("run: no steady state (see the run.log)")
            if not os.path.exists(os.path.join(d, "data")):
                continue
            try:
                st = status(d)
            except subprocess.CalledProcessError:
                continue
            if st["samples"] >= warm and all(s["pending"] <= 1 for s in st["sinks"]) and len(st["sinks"]) == 2:
                break
        # start right after a sample was committed
        first = samples(d)
        while (start := samples(d)) == first:
            time.sleep(0.05)
        a = io(p.pid)
        while (end := samples(d)) < start + n:
            time.sleep(0.2)
        b = io(p.pid)
        m = mem(p.pid)
        st = status(d)
        pending = {s["name"]: s["pending"] for s in st["sinks"]}
        report("run", diff(a, b), end - start,
               f"  VmRSS {m['VmRSS'] / 1024:.1f} MiB (anon {m['RssAnon'] / 1024:.1f}, file {m['RssFile'] / 1024:.1f})"
               f"  VmHWM {m['VmHWM'] / 1024:.1f} MiB  pending {pending}")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=30)
        tee.wait()


def measured(cmd, cwd):
    """Runs cmd; returns (its /proc io at exit, rusage)."""
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: /proc/pid/io is still there
    counters = io(p.pid)
    _, status_, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status_)
    if p.returncode != 0:
        sys.exit(f"{cmd} failed with {p.returncode}")
    return counters, ru


def timer_mode():
    d = setup("timer")
    total = {"write_bytes": 0, "wchar": 0, "syscw": 0}
    cpu, rss = [], []
    for i in range(warm + n):
        t = time.monotonic()
        s_io, ru = measured(hx(d, "sample"), d)
        r_io, _ = measured(hx(d, "replay"), d)
        if i >= warm:
            for k in total:
                total[k] += s_io[k] + r_io[k]
            cpu.append(ru.ru_utime + ru.ru_stime)
            rss.append(ru.ru_maxrss)
        time.sleep(max(0.0, interval - (time.monotonic() - t)))
    cpu.sort()
    report("timer", total, n,
           f"  `hxlog sample`: CPU {cpu[len(cpu) // 2] * 1000:.1f} ms (median; max {cpu[-1] * 1000:.1f}), "
           f"peak RSS {max(rss) / 1024:.1f} MiB")


for mode in modes.split():
    {"run": run_mode, "timer": timer_mode}[mode]()
PY

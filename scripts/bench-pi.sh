#!/usr/bin/env bash
# bench-pi.sh: regression figures for the Raspberry Pi builds, under qemu-user.
#
#   scripts/bench-pi.sh aarch64|armhf   (after scripts/build-pi.sh for that arch)
#
# Prints, for target/<triple>/release/hxlog run under qemu-user on this
# machine:
#   - the binary's size
#   - one `hxlog sample` cycle on a fake w1 bus with four sensors (median of 5)
#   - `hxlog simulate` throughput (20,000 samples)
#   - RSS of `hxlog run` after 20 s with both sinks configured and delivering:
#     the local PostgreSQL and a stand-in Web PubSub (python3, answers 202)
#
# These are qemu-user figures, NOT a Pi's: qemu translates every instruction,
# so CPU times are several times a native run's and RSS includes the
# emulator's own memory (its translation cache). Use them to spot a regression
# between two builds on the same machine, never as Pi performance claims.
# Needs: the local PostgreSQL (PGHOST/PGPORT/PGUSER, default 127.0.0.1:5432
# postgres), psql, python3.
set -euo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    [[ $# -eq 1 ]] && exit 0
    exit 2
fi
# shellcheck source=/dev/null # (pi-env.sh: checked on its own)
source "$(dirname "$0")/pi-env.sh" "$1"
BIN=$PI_BIN_DIR/hxlog
[[ -x "$BIN" ]] || {
    echo "bench-pi.sh: no $BIN: run scripts/build-pi.sh $1 first" >&2
    exit 1
}
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
DB=hxlog_bench_pi_$$
WORK=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
hx() { "$PI_QEMU" "$BIN" --config hxlog.json "$@"; }

# A fake w1 bus: four healthy DS18B20 (the scratchpad of 23.125 °C).
slave='72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
72 01 4b 46 7f ff 0e 10 57 t=23125'
mkdir -p w1/w1_bus_master1
printf '{' >devicenames.json
for i in 1 2 3 4; do
    mkdir -p "w1/28-00000000000$i"
    printf '%s\n' "$slave" >"w1/28-00000000000$i/w1_slave"
    printf '"T%s": "28-00000000000%s"%s' "$i" "$i" "$([[ $i -lt 4 ]] && echo ,)" >>devicenames.json
done
echo '}' >>devicenames.json
cat >hxlog.json <<JSON
{"device_id": "bench-pi", "data_dir": "data", "sensor_source": "w1", "w1_root": "w1",
 "devicenames": "devicenames.json", "secrets": "secrets.json", "interval": "1s",
 "clock_sync": "always", "bulk_read": false}
JSON

# Runs a command; prints its wall seconds.
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>>bench.err || { cat bench.err >&2; return 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}

size=$(stat -c %s "$BIN")
cycles=()
for _ in 1 2 3 4 5; do cycles+=("$(seconds hx sample)"); done
cycle=$(printf '%s\n' "${cycles[@]}" | sort -n | sed -n 3p)
rm -rf data
t_sim=$(seconds hx simulate --count 20000 --interval 1s)

# Both sinks: the local PostgreSQL and a stand-in Web PubSub on loopback.
psql -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(202); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
' >wps.port &
pids+=($!)
for _ in $(seq 50); do [[ -s wps.port ]] && break; sleep 0.1; done
cat >secrets.json <<JSON
{"PG_DB_HOST": "$PGHOST", "PG_DB_PORT": "$PGPORT", "PG_DB_NAME": "$DB",
 "PG_DB_USER": "$PGUSER", "PG_DB_PASSWORD": "", "PG_DB_SSLMODE": "disable",
 "AZURE_WEBPUBSUB_CONNECTION_STRING": "Endpoint=http://127.0.0.1;Port=$(cat wps.port);AccessKey=YmVuY2gtcGktYmVuY2gtcGktYmVuY2gtcGk=;Version=1.0;"}
JSON
chmod 600 secrets.json
rm -rf data
"$PI_QEMU" "$BIN" --config hxlog.json run 2>run.log &
run_pid=$!
pids+=("$run_pid")
sleep 20
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$run_pid/status")
kill "$run_pid"
wait "$run_pid" || true
delivered=$(psql -At -d "$DB" -c "SELECT count(*) FROM samples")

echo "qemu-user, not a Pi: hxlog for $PI_TRIPLE under $PI_QEMU on $(nproc) x86_64 cores, $(date -u +%F)"
printf '  binary size                      %.1f MiB\n' "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')"
printf '  one sample cycle (4 sensors)     %.2f s (median of 5, process start included)\n' "$cycle"
printf '  simulate 20,000 samples          %.2f s (%.0f samples/s)\n' "$t_sim" "$(awk -v t="$t_sim" 'BEGIN { print 20000 / t }')"
printf '  hxlog run, both sinks, RSS @20 s %.1f MiB (emulator included); %s samples reached Postgres\n' \
    "$(awk -v r="$rss" 'BEGIN { print r / 1024 }')" "$delivered"

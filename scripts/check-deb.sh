#!/usr/bin/env bash
# check-deb.sh: build the hxlog .deb with cargo-deb and check it.
#
#   1. installs cargo-deb if it is missing (cargo install --locked)
#   2. builds the package (cargo deb; --stub-binary packages a stand-in binary
#      instead, to check the packaging while the program does not build)
#   3. checks the file list, modes and conffiles (dpkg-deb -c / -I)
#   4. as root: dpkg -i, checks the user, permissions and directories, runs
#      a sample as the service user, installs the same package again (an
#      upgrade) and checks the outbox is kept, then dpkg --remove (keeps the
#      state, the config and the user) and dpkg --purge (removes them)
#
# Outside CI the round trip is skipped, loudly, when not root, with
# --no-install, or when hxlog is already installed (it is not ours to purge).
# Under CI (CI set, as .ci/run does) a skip is a failure, and an hxlog left
# installed by an aborted earlier run is purged first.
#
# Exit status 0 when every check passed. Used by CI.
set -euo pipefail
shopt -s nullglob

usage() {
    cat <<'EOF'
Usage: scripts/check-deb.sh [--stub-binary] [--no-install] [--help]

  --stub-binary  do not build hxlog: package a small shell script in its place
                 (checks the packaging only; says so in the output)
  --no-install   skip the dpkg -i / dpkg --purge round trip (refused under CI)
Environment: CARGO_TARGET_DIR (default: target), CARGO_DEB_VERSION (pin cargo-deb),
  CI (set: never skip the round trip)
EOF
}

stub=0
install=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --stub-binary) stub=1 ;;
        --no-install) install=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "check-deb.sh: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
target_dir="${CARGO_TARGET_DIR:-$repo/target}"
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

failures=0
pass() { printf '  ok    %s\n' "$1"; }
fail() {
    printf '  FAIL  %s\n' "$1"
    failures=$((failures + 1))
}
# check OK_MSG FAIL_MSG CMD...: pass or fail on CMD's status.
check() {
    local ok_msg="$1" fail_msg="$2"
    shift 2
    if "$@"; then pass "$ok_msg"; else fail "$fail_msg"; fi
}
absent() { ! "$@" >/dev/null 2>&1; }

# ---------------------------------------------------------------- cargo-deb
if ! cargo deb --version >/dev/null 2>&1; then
    echo "cargo-deb missing: installing it (this takes a few minutes)"
    if [[ -n "${CARGO_DEB_VERSION:-}" ]]; then
        cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    else
        cargo install cargo-deb --locked
    fi
fi
echo "using $(cargo deb --version)"

# ---------------------------------------------------------------- build
if [[ $stub -eq 1 ]]; then
    echo "NOTE: --stub-binary: packaging a stand-in for hxlog, not the real program"
    mkdir -p "$target_dir/release"
    printf '#!/bin/sh\necho "hxlog stub binary (packaging check only)"\n' >"$target_dir/release/hxlog"
    chmod 755 "$target_dir/release/hxlog"
    cargo deb --no-build --no-strip --output "$out_dir"
else
    cargo deb --locked --output "$out_dir"
fi
debs=("$out_dir"/*.deb)
if [[ ${#debs[@]} -ne 1 ]]; then
    echo "check-deb.sh: expected one .deb in $out_dir, found ${#debs[@]}" >&2
    exit 1
fi
deb="${debs[0]}"
echo "built $(basename "$deb")"

# ---------------------------------------------------------------- contents
echo "Contents"
listing=$(dpkg-deb -c "$deb")
# expect MODE PATH: mode as dpkg-deb prints it (tar style)
expect_file() {
    local mode="$1" path="$2" line
    line=$(awk -v p="./$path" '$6 == p { print $1 }' <<<"$listing")
    if [[ -z "$line" ]]; then
        fail "$path is missing"
    elif [[ "$line" != "$mode" ]]; then
        fail "$path has mode $line, expected $mode"
    else
        pass "$mode $path"
    fi
}
expect_file -rwxr-xr-x usr/bin/hxlog
for u in hxlog.service hxlog-sample.service hxlog-sample.timer hxlog-replay.service hxlog-replay.timer hxlog-serve.service; do
    expect_file -rw-r--r-- "lib/systemd/system/$u"
done
expect_file -rw-r--r-- etc/hxlog/hxlog.json
expect_file -rw-r--r-- etc/hxlog/devicenames.json
expect_file -rw------- etc/hxlog/secrets.json
expect_file -rw-r--r-- usr/share/doc/hxlog/OPERATIONS.md
expect_file -rw-r--r-- usr/share/doc/hxlog/README.md
expect_file -rwxr-xr-x usr/share/hxlog/scripts/w1_diagnostic.sh
expect_file -rwxr-xr-x usr/share/hxlog/scripts/w1_bus_recovery.sh

echo "Control"
ctrl="$out_dir/control"
dpkg-deb -e "$deb" "$ctrl"
for f in /etc/hxlog/hxlog.json /etc/hxlog/devicenames.json /etc/hxlog/secrets.json; do
    if grep -qx "$f" "$ctrl/conffiles" 2>/dev/null; then
        pass "conffile $f"
    else
        fail "$f is not a conffile"
    fi
done
for s in postinst prerm postrm; do
    if [[ -x "$ctrl/$s" ]]; then pass "maintainer script $s"; else fail "maintainer script $s missing"; fi
done

# ---------------------------------------------------------------- install
# dpkg's own word on the package: installed, config-files, half-installed, ...
# (empty when dpkg has never heard of it, not-installed once purged).
dpkg_status() { dpkg-query -W -f='${db:Status-Status}' hxlog 2>/dev/null || true; }
# skip_round_trip WHY: a skip outside CI, a failure under CI.
skip_round_trip() {
    if [[ -n "${CI:-}" ]]; then
        fail "install round trip not run under CI: $1"
    else
        echo "install round trip SKIPPED: $1"
    fi
}
# same_mode PATH MODE_OWNER: checks `stat -c '%a %U:%G'` of PATH.
same_mode() {
    local perm
    perm=$(stat -c '%a %U:%G' "$1" 2>/dev/null || echo missing)
    check "$1 $perm" "$1 is $perm, expected $2" test "$perm" = "$2"
}
# as_hxlog CMD...: runs hxlog as the service user with the packaged config.
as_hxlog() {
    runuser -u hxlog -- env USE_MOCK_SENSORS=true HXLOG_CONFIG=/etc/hxlog/hxlog.json /usr/bin/hxlog "$@"
}
outbox=/var/lib/hxlog/outbox.sqlite

round_trip=1
if [[ $install -eq 0 ]]; then
    skip_round_trip "--no-install"
    round_trip=0
elif [[ $EUID -ne 0 ]]; then
    skip_round_trip "needs root"
    round_trip=0
elif [[ -n "$(dpkg_status)" && "$(dpkg_status)" != not-installed ]]; then
    if [[ -n "${CI:-}" ]]; then
        echo "hxlog is $(dpkg_status) (an earlier run aborted?): purging it first"
        dpkg --purge hxlog
    else
        skip_round_trip "hxlog is already installed on this machine ($(dpkg_status))"
        round_trip=0
    fi
fi

if [[ $round_trip -eq 1 ]]; then
    echo "Install"
    dpkg -i "$deb"
    check "dpkg says installed" "dpkg says $(dpkg_status), expected installed" test "$(dpkg_status)" = installed
    if getent passwd hxlog >/dev/null; then pass "user hxlog created"; else fail "user hxlog missing"; fi
    if getent group hxlog >/dev/null; then pass "group hxlog created"; else fail "group hxlog missing"; fi
    same_mode /etc/hxlog/secrets.json "640 root:hxlog"
    same_mode /var/lib/hxlog "750 hxlog:hxlog"
    same_mode /var/log/hxlog "750 hxlog:hxlog"
    if /usr/bin/hxlog --help >/dev/null 2>&1; then pass "hxlog --help runs"; else fail "hxlog --help failed"; fi
    if [[ $stub -eq 0 ]]; then
        # The packaged config, run as the service user (simulated sensors: no bus here).
        if as_hxlog sample >/dev/null 2>&1 && as_hxlog status >/dev/null 2>&1 && test -f "$outbox"; then
            pass "hxlog sample and status run as user hxlog with the packaged config"
        else
            fail "hxlog sample/status as user hxlog with the packaged config failed"
        fi
    else
        # the stub cannot sample: an outbox stand-in, owned as hxlog's would be
        printf 'stub outbox\n' >"$outbox"
        chown hxlog:hxlog "$outbox"
    fi

    echo "Upgrade (install the same package again: keeps the outbox)"
    before=$(sha256sum "$outbox" 2>/dev/null || echo "no outbox")
    dpkg -i "$deb"
    after=$(sha256sum "$outbox" 2>/dev/null || echo "no outbox after the upgrade")
    check "upgrade kept the outbox unchanged" "upgrade changed the outbox: $before -> $after" test "$before" = "$after"
    check "dpkg says installed after the upgrade" "dpkg says $(dpkg_status) after the upgrade" test "$(dpkg_status)" = installed
    same_mode /var/lib/hxlog "750 hxlog:hxlog"
    if [[ $stub -eq 0 ]]; then
        if as_hxlog sample >/dev/null 2>&1; then
            n=$(as_hxlog status --json 2>/dev/null | grep -o '"samples": *[0-9]*' | head -n1 | grep -o '[0-9]*$' || true)
            check "the upgraded hxlog adds to the old outbox ($n samples)" "expected 2 samples after the upgrade, status says '${n}'" test "$n" = 2
        else
            fail "hxlog sample failed after the upgrade"
        fi
    fi

    echo "Remove (keeps state, config and user)"
    touch /var/lib/hxlog/check-deb-marker
    dpkg --remove hxlog
    check "dpkg says config-files" "dpkg says $(dpkg_status) after remove, expected config-files" test "$(dpkg_status)" = config-files
    check "remove kept /var/lib/hxlog" "remove deleted /var/lib/hxlog" test -e /var/lib/hxlog/check-deb-marker
    check "remove kept the outbox" "remove deleted $outbox" test -f "$outbox"
    check "remove kept /var/log/hxlog" "remove deleted /var/log/hxlog" test -d /var/log/hxlog
    check "remove kept /etc/hxlog/hxlog.json" "remove deleted /etc/hxlog/hxlog.json" test -f /etc/hxlog/hxlog.json
    check "remove kept /etc/hxlog/secrets.json" "remove deleted /etc/hxlog/secrets.json" test -f /etc/hxlog/secrets.json
    if getent passwd hxlog >/dev/null; then pass "remove kept user hxlog"; else fail "remove deleted user hxlog"; fi
    if getent group hxlog >/dev/null; then pass "remove kept group hxlog"; else fail "remove deleted group hxlog"; fi
    check "remove deleted /usr/bin/hxlog" "/usr/bin/hxlog left after remove" test ! -e /usr/bin/hxlog
    check "remove deleted the units" "units left after remove" test ! -e /lib/systemd/system/hxlog.service

    echo "Purge"
    dpkg --purge hxlog
    check "purge deleted /var/lib/hxlog" "/var/lib/hxlog left after purge" test ! -e /var/lib/hxlog
    check "purge deleted /var/log/hxlog" "/var/log/hxlog left after purge" test ! -e /var/log/hxlog
    check "purge deleted /etc/hxlog" "/etc/hxlog left after purge" test ! -e /etc/hxlog
    check "user hxlog removed" "user hxlog left after purge" absent getent passwd hxlog
    check "group hxlog removed" "group hxlog left after purge" absent getent group hxlog
    status=$(dpkg_status)
    if [[ -z "$status" || "$status" == not-installed ]]; then
        pass "dpkg no longer lists hxlog"
    else
        fail "dpkg still lists hxlog ($status)"
    fi
fi

echo
if [[ $failures -gt 0 ]]; then
    echo "check-deb: $failures check(s) failed"
    exit 1
fi
if [[ $stub -eq 1 ]]; then
    echo "check-deb: all checks passed (with a STUB binary: the real build was not checked)"
else
    echo "check-deb: all checks passed"
fi

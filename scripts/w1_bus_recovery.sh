#!/usr/bin/env bash
# w1_bus_recovery.sh: reset a stuck 1-Wire bus (phantom devices, no devices,
# repeated CRC errors) by removing phantoms, reloading the w1 modules and
# triggering a new device search.
#
# Changes the running kernel's state: asks for confirmation unless --yes, and
# prints what it would do with --dry-run. All paths and the modprobe command
# can be overridden so that it can run against a fake tree; see --help.
set -euo pipefail
shopt -s nullglob

usage() {
    cat <<'EOF'
Usage: w1_bus_recovery.sh [--yes] [--dry-run] [--skip-modules] [--help]

Resets the 1-Wire bus that hxlog reads:
  1. removes phantom 00-... devices (writes the id to w1_master_remove)
  2. unloads and reloads the modules:
       modprobe -r w1_therm w1_gpio; modprobe w1-gpio; modprobe w1-therm
  3. waits for the bus master to come back
  4. triggers device discovery (writes W1_SEARCH_COUNT to w1_master_search)
  5. lists the devices found

Options:
  -y, --yes           do not ask for confirmation (needed when stdin is not a terminal)
  -n, --dry-run       print what would be done, change nothing
      --skip-modules  do not unload/reload the kernel modules
  -h, --help          show this help

hxlog keeps running during a reset: reads fail for a few seconds and are
recorded as missing; stop it first (systemctl stop hxlog) for a quiet log.

Environment (defaults in brackets):
  SYSFS_ROOT        sysfs mount                              [/sys]
  W1_ROOT           1-Wire devices directory                 [$SYSFS_ROOT/bus/w1/devices]
  MODPROBE          modprobe command                         [modprobe]
  W1_SEARCH_COUNT   value written to w1_master_search; -1 restores
                    continuous search (the kernel default)   [-1]
  W1_SETTLE_TIMEOUT seconds to wait for the bus master       [10]
EOF
}

assume_yes=0
dry_run=0
skip_modules=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        -y | --yes) assume_yes=1 ;;
        -n | --dry-run) dry_run=1 ;;
        --skip-modules) skip_modules=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "w1_bus_recovery.sh: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
    shift
done

SYSFS_ROOT="${SYSFS_ROOT:-/sys}"
W1_ROOT="${W1_ROOT:-$SYSFS_ROOT/bus/w1/devices}"
MODPROBE="${MODPROBE:-modprobe}"
W1_SEARCH_COUNT="${W1_SEARCH_COUNT:--1}"
W1_SETTLE_TIMEOUT="${W1_SETTLE_TIMEOUT:-10}"

say() { printf '%s\n' "$*"; }
# run_write VALUE FILE: write VALUE to a sysfs FILE, or say so in a dry run.
run_write() {
    if [[ $dry_run -eq 1 ]]; then
        say "  would run: echo $1 > $2"
        return 0
    fi
    say "  echo $1 > $2"
    if ! printf '%s\n' "$1" >"$2"; then
        say "  warning: could not write $2" >&2
        return 1
    fi
}
# run_cmd CMD...: run a command, or say so in a dry run.
run_cmd() {
    if [[ $dry_run -eq 1 ]]; then
        say "  would run: $*"
        return 0
    fi
    say "  $*"
    "$@"
}

masters() {
    local m
    for m in "$W1_ROOT"/w1_bus_master*; do
        printf '%s\n' "$m"
    done
}
devices() {
    local d
    for d in "$W1_ROOT"/*-*; do
        [[ "$(basename "$d")" == w1_bus_master* ]] && continue
        basename "$d"
    done
}

# ---------------------------------------------------------------- inventory
say "hxlog 1-Wire bus recovery"
say "w1 devices: $W1_ROOT"
[[ $dry_run -eq 1 ]] && say "dry run: nothing will be changed"

mapfile -t master_list < <(masters)
mapfile -t device_list < <(devices)
phantoms=()
for id in "${device_list[@]+"${device_list[@]}"}"; do
    [[ "$id" == 00-* ]] && phantoms+=("$id")
done
say "bus masters: ${#master_list[@]}, devices: ${#device_list[@]}, phantoms: ${#phantoms[@]}"

# ---------------------------------------------------------------- plan
plan=()
for id in "${phantoms[@]+"${phantoms[@]}"}"; do
    plan+=("remove phantom device $id")
done
if [[ $skip_modules -eq 0 ]]; then
    plan+=("reload kernel modules: $MODPROBE -r w1_therm w1_gpio; $MODPROBE w1-gpio; $MODPROBE w1-therm")
fi
plan+=("trigger device discovery on every bus master (w1_master_search = $W1_SEARCH_COUNT)")

say ""
say "Plan:"
n=1
for step in "${plan[@]}"; do
    say "  $n. $step"
    n=$((n + 1))
done
say ""

# ---------------------------------------------------------------- confirm
if [[ $dry_run -eq 0 && $assume_yes -eq 0 ]]; then
    if [[ ! -t 0 ]]; then
        say "w1_bus_recovery.sh: refusing to change the 1-Wire bus without confirmation: stdin is not a terminal; re-run with --yes (or --dry-run to only see the plan)" >&2
        exit 2
    fi
    read -r -p "Proceed? [y/N] " answer
    case "$answer" in
        y | Y | yes | YES) ;;
        *)
            say "aborted; nothing changed"
            exit 1
            ;;
    esac
fi

if [[ $dry_run -eq 0 && $EUID -ne 0 && "$W1_ROOT" == /sys/* ]]; then
    say "w1_bus_recovery.sh: must run as root to change the 1-Wire bus; re-run with sudo" >&2
    exit 2
fi

failures=0

# ---------------------------------------------------------------- 1. phantoms
if [[ ${#phantoms[@]} -gt 0 ]]; then
    say "Removing phantom devices"
    for id in "${phantoms[@]}"; do
        owner=""
        for m in "${master_list[@]+"${master_list[@]}"}"; do
            if [[ -e "$m/$id" ]]; then
                owner="$m"
                break
            fi
        done
        [[ -z "$owner" && ${#master_list[@]} -gt 0 ]] && owner="${master_list[0]}"
        if [[ -z "$owner" ]]; then
            say "  no bus master to remove $id from; the module reload clears it"
            continue
        fi
        run_write "$id" "$owner/w1_master_remove" || failures=$((failures + 1))
    done
fi

# ---------------------------------------------------------------- 2. modules
if [[ $skip_modules -eq 0 ]]; then
    say "Reloading kernel modules"
    # Unloading fails when a module is built in or busy: carry on, the reload
    # and the search below still help.
    run_cmd "$MODPROBE" -r w1_therm w1_gpio || say "  warning: could not unload w1_therm/w1_gpio (built in or in use); continuing"
    run_cmd "$MODPROBE" w1-gpio || failures=$((failures + 1))
    run_cmd "$MODPROBE" w1-therm || failures=$((failures + 1))

    if [[ $dry_run -eq 0 ]]; then
        say "Waiting up to ${W1_SETTLE_TIMEOUT}s for a bus master"
        deadline=$((SECONDS + W1_SETTLE_TIMEOUT))
        until [[ -n "$(masters)" ]]; do
            if [[ $SECONDS -ge $deadline ]]; then
                say "  no bus master appeared: check dtoverlay=w1-gpio in config.txt and reboot" >&2
                failures=$((failures + 1))
                break
            fi
            sleep 0.5
        done
        mapfile -t master_list < <(masters)
    fi
fi

# ---------------------------------------------------------------- 3. search
say "Triggering device discovery"
if [[ ${#master_list[@]} -eq 0 ]]; then
    say "  no bus master to search on"
else
    for m in "${master_list[@]}"; do
        run_write "$W1_SEARCH_COUNT" "$m/w1_master_search" || failures=$((failures + 1))
    done
fi

# ---------------------------------------------------------------- result
if [[ $dry_run -eq 1 ]]; then
    say ""
    say "dry run finished: nothing was changed"
    exit 0
fi
say ""
say "Devices now present (discovery can take a few seconds more):"
mapfile -t device_list < <(devices)
if [[ ${#device_list[@]} -eq 0 ]]; then
    say "  none yet"
else
    for id in "${device_list[@]}"; do
        say "  $id"
    done
fi
say ""
if [[ $failures -gt 0 ]]; then
    say "finished with $failures failed step(s); run w1_diagnostic.sh for details"
    exit 1
fi
say "done; run w1_diagnostic.sh to check the sensors"

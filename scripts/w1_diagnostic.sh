#!/usr/bin/env bash
# w1_diagnostic.sh: check the 1-Wire (w1-gpio / w1-therm) setup that hxlog reads.
#
# Read-only: it changes nothing. Exit code 0 when no problem was found, 1 when
# at least one problem was found, 2 on a usage error.
#
# Every path can be overridden so that the checks can run against a fake tree
# (the e2e tests do this); see --help.
set -euo pipefail
shopt -s nullglob

usage() {
    cat <<'EOF'
Usage: w1_diagnostic.sh [--help]

Checks the 1-Wire temperature-sensor setup used by hxlog and ends with
specific recommendations. It only reads; run w1_bus_recovery.sh to fix a
stuck bus.

Checks:
  1. kernel modules w1_gpio and w1_therm (loaded or built in)
  2. the device-tree overlay dtoverlay=w1-gpio in config.txt
  3. 1-Wire bus masters
  4. devices: each w1_slave read (CRC YES/NO, empty, 85 C power-on value),
     00-... phantom devices, and the sensors named in devicenames.json
  5. GPIO character devices, the gpio group and the hxlog user

Exit status: 0 healthy, 1 problems found, 2 usage error.

Environment (defaults in brackets):
  SYSFS_ROOT     sysfs mount                           [/sys]
  W1_ROOT        1-Wire devices directory              [$SYSFS_ROOT/bus/w1/devices]
  PROC_MODULES   loaded-module list                    [/proc/modules]
  BOOT_CONFIG    config.txt files, space separated     [/boot/firmware/config.txt /boot/config.txt]
  DEV_ROOT       device directory                      [/dev]
  GROUP_FILE     group database (else getent is used)  [unset]
  HXLOG_USER     service user to check                 [hxlog]
  DEVICENAMES    sensor name map to cross-check        [/etc/hxlog/devicenames.json]
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "w1_diagnostic.sh: unknown argument: $1 (see --help)" >&2
            exit 2
            ;;
    esac
done

SYSFS_ROOT="${SYSFS_ROOT:-/sys}"
W1_ROOT="${W1_ROOT:-$SYSFS_ROOT/bus/w1/devices}"
PROC_MODULES="${PROC_MODULES:-/proc/modules}"
BOOT_CONFIG="${BOOT_CONFIG:-/boot/firmware/config.txt /boot/config.txt}"
DEV_ROOT="${DEV_ROOT:-/dev}"
GROUP_FILE="${GROUP_FILE:-}"
HXLOG_USER="${HXLOG_USER:-hxlog}"
DEVICENAMES="${DEVICENAMES:-/etc/hxlog/devicenames.json}"

problems=0
warnings=0
recommendations=()

section() { printf '\n== %s\n' "$1"; }
ok() { printf '  [ok]      %s\n' "$1"; }
info() { printf '  [info]    %s\n' "$1"; }
warn() {
    printf '  [warn]    %s\n' "$1"
    warnings=$((warnings + 1))
}
problem() {
    printf '  [PROBLEM] %s\n' "$1"
    problems=$((problems + 1))
}
# recommend TEXT: add a recommendation once, in the order first seen.
recommend() {
    local r
    for r in "${recommendations[@]+"${recommendations[@]}"}"; do
        [[ "$r" == "$1" ]] && return 0
    done
    recommendations+=("$1")
}

# module_present NAME: loaded as a module or built into the kernel.
module_present() {
    local name="$1"
    if [[ -r "$PROC_MODULES" ]]; then
        if grep -q "^${name} " "$PROC_MODULES"; then
            return 0
        fi
    elif command -v lsmod >/dev/null 2>&1; then
        if lsmod | grep -q "^${name} "; then
            return 0
        fi
    fi
    [[ -d "$SYSFS_ROOT/module/$name" ]]
}

# group_line GROUP: print the group's /etc/group line, fail if there is no such group.
group_line() {
    if [[ -n "$GROUP_FILE" ]]; then
        grep "^$1:" "$GROUP_FILE"
    else
        getent group "$1"
    fi
}

echo "hxlog 1-Wire diagnostic ($(date '+%Y-%m-%d %H:%M:%S'))"
echo "w1 devices: $W1_ROOT"

# ---------------------------------------------------------------- 1. modules
section "Kernel modules"
modules_ok=1
for m in w1_gpio w1_therm; do
    if module_present "$m"; then
        ok "$m is loaded"
    else
        problem "$m is not loaded"
        modules_ok=0
    fi
done
if [[ $modules_ok -eq 0 ]]; then
    recommend "Load the 1-Wire modules: sudo modprobe w1-gpio && sudo modprobe w1-therm (or run w1_bus_recovery.sh); to load them at boot add dtoverlay=w1-gpio to config.txt and reboot."
fi

# ---------------------------------------------------------------- 2. overlay
section "Device-tree overlay"
found_config=0
overlay_found=0
for cfg in $BOOT_CONFIG; do
    [[ -r "$cfg" ]] || continue
    found_config=1
    if line=$(grep -E '^[[:space:]]*dtoverlay=w1-gpio' "$cfg" | head -n 1) && [[ -n "$line" ]]; then
        ok "$cfg: $line"
        overlay_found=1
        if [[ "$line" != *gpiopin=* ]]; then
            info "no gpiopin= given: the data line is GPIO4 (header pin 7)"
        fi
    elif grep -qE '^[[:space:]]*#[[:space:]]*dtoverlay=w1-gpio' "$cfg"; then
        problem "$cfg: dtoverlay=w1-gpio is commented out"
    else
        problem "$cfg: no dtoverlay=w1-gpio line"
    fi
done
if [[ $found_config -eq 0 ]]; then
    info "no config.txt found ($BOOT_CONFIG): not a Raspberry Pi, or /boot not mounted; skipping"
elif [[ $overlay_found -eq 0 ]]; then
    recommend "Enable 1-Wire: add 'dtoverlay=w1-gpio' (optionally ',gpiopin=N') to config.txt, or use 'sudo raspi-config' > Interface Options > 1-Wire, then reboot."
fi

# ---------------------------------------------------------------- 3. masters
section "Bus masters"
masters=()
if [[ -d "$W1_ROOT" ]]; then
    masters=("$W1_ROOT"/w1_bus_master*)
else
    problem "$W1_ROOT does not exist: the w1 bus driver is not active"
    recommend "Load the 1-Wire modules: sudo modprobe w1-gpio && sudo modprobe w1-therm (or run w1_bus_recovery.sh); to load them at boot add dtoverlay=w1-gpio to config.txt and reboot."
fi
if [[ -d "$W1_ROOT" && ${#masters[@]} -eq 0 ]]; then
    problem "no bus master (w1_bus_master*) in $W1_ROOT"
    recommend "No 1-Wire bus master: check dtoverlay=w1-gpio in config.txt and that w1_gpio is loaded; then run w1_bus_recovery.sh."
fi
for master in "${masters[@]+"${masters[@]}"}"; do
    name=$(basename "$master")
    count="?"
    [[ -r "$master/w1_master_slave_count" ]] && count=$(head -n 1 "$master/w1_master_slave_count" 2>/dev/null || echo "?")
    ok "$name (reports $count device(s))"
done

# ---------------------------------------------------------------- 4. devices
section "Devices"
devices=()
if [[ -d "$W1_ROOT" ]]; then
    for d in "$W1_ROOT"/*-*; do
        [[ "$(basename "$d")" == w1_bus_master* ]] && continue
        devices+=("$d")
    done
fi
healthy=0
present_ids=" "
for d in "${devices[@]+"${devices[@]}"}"; do
    id=$(basename "$d")
    present_ids+="$id "
    family="${id%%-*}"
    case "$family" in
        00)
            problem "$id: phantom device (family 00, a bus glitch or a bad contact)"
            recommend "Remove phantom 00-... devices: sudo w1_bus_recovery.sh (they come from noise on the bus: check the pull-up and the connections)."
            continue
            ;;
        28 | 10 | 22 | 3b | 42) ;;
        *)
            info "$id: family $family is not a temperature sensor; ignored"
            continue
            ;;
    esac
    slave="$d/w1_slave"
    if [[ ! -r "$slave" ]]; then
        problem "$id: $slave cannot be read (w1_therm not bound?)"
        recommend "Make sure w1_therm is loaded: sudo modprobe w1-therm."
        continue
    fi
    content=$(cat "$slave" 2>/dev/null || true)
    if [[ -z "${content//[[:space:]]/}" ]]; then
        problem "$id: empty read from w1_slave (sensor did not answer)"
        recommend "A sensor gives empty reads: check its wiring (GND/DQ/VDD), the 4.7 kOhm pull-up between DQ and 3.3 V, and its power."
        continue
    fi
    first=$(printf '%s\n' "$content" | head -n 1)
    raw=$(printf '%s\n' "$content" | grep -o 't=-\?[0-9]\+' | head -n 1 || true)
    raw="${raw#t=}"
    if [[ "$first" =~ NO[[:space:]]*$ ]]; then
        problem "$id: CRC NO (corrupted read)"
        recommend "CRC errors: keep cables short, use twisted pair or shielded cable away from mains and motors, check the 4.7 kOhm pull-up and every joint."
    elif [[ ! "$first" =~ YES[[:space:]]*$ ]]; then
        problem "$id: unrecognised w1_slave content: $first"
        recommend "Unexpected w1_slave output: run w1_bus_recovery.sh and check the wiring."
    elif [[ -z "$raw" ]]; then
        problem "$id: CRC YES but no t= value"
        recommend "Unexpected w1_slave output: run w1_bus_recovery.sh and check the wiring."
    elif [[ "$raw" == "85000" ]]; then
        problem "$id: CRC YES, 85.000 C (the power-on value: the conversion did not run)"
        recommend "A sensor reports 85 C: the conversion did not complete. Power it from VDD (3.3 V) instead of parasite power, check VDD and GND."
    elif [[ "$raw" == "-127000" ]]; then
        problem "$id: CRC YES, -127 C (the sensor lost contact)"
        recommend "A sensor reports -127 C: it lost contact during the read. Check its connections."
    else
        whole=$((raw / 1000))
        frac=$(((raw < 0 ? -raw : raw) % 1000))
        sign=""
        [[ $raw -lt 0 && $whole -eq 0 ]] && sign="-"
        ok "$id: CRC YES, ${sign}${whole}.$(printf '%03d' "$frac") C"
        healthy=$((healthy + 1))
    fi
done
if [[ -d "$W1_ROOT" && ${#devices[@]} -eq 0 ]]; then
    problem "no devices found on the 1-Wire bus"
    recommend "No devices found: check the wiring (DS18B20 flat side facing you: GND, DQ, VDD), the 4.7 kOhm pull-up between DQ and 3.3 V, and the GPIO pin in dtoverlay=w1-gpio."
fi
[[ $healthy -gt 0 ]] && info "$healthy sensor(s) read correctly"

# cross-check the configured sensors
if [[ -r "$DEVICENAMES" ]]; then
    while IFS= read -r pair; do
        label=$(printf '%s' "$pair" | sed -E 's/^"([^"]*)".*/\1/')
        devid=$(printf '%s' "$pair" | sed -E 's/.*:[[:space:]]*"([^"]*)"$/\1/')
        if [[ "$present_ids" == *" $devid "* ]]; then
            ok "$label -> $devid is present"
        else
            problem "$label -> $devid (from $DEVICENAMES) is not on the bus"
            recommend "Sensors named in $DEVICENAMES are missing: check their wiring, or correct the ids (list what is present with: ls $W1_ROOT)."
        fi
    done < <(grep -oE '"[^"]+"[[:space:]]*:[[:space:]]*"[^"]*"' "$DEVICENAMES" || true)
else
    info "$DEVICENAMES not readable; skipping the sensor-name cross-check"
fi

# ---------------------------------------------------------------- 5. GPIO
section "GPIO and permissions"
chips=("$DEV_ROOT"/gpiochip*)
if [[ ${#chips[@]} -eq 0 ]]; then
    info "no $DEV_ROOT/gpiochip* devices (not a Raspberry Pi?)"
else
    for c in "${chips[@]}"; do
        info "$(stat -c '%A %U:%G' "$c") $c"
    done
fi
info "hxlog reads sensors through the kernel w1 driver (sysfs): it needs no GPIO access itself"
user_exists=0
id "$HXLOG_USER" >/dev/null 2>&1 && user_exists=1
if gline=$(group_line gpio 2>/dev/null) && [[ -n "$gline" ]]; then
    ok "group gpio exists"
    in_gpio=0
    if [[ ",${gline##*:}," == *",$HXLOG_USER,"* ]]; then
        in_gpio=1
    elif [[ -z "$GROUP_FILE" ]] && id -nG "$HXLOG_USER" 2>/dev/null | tr ' ' '\n' | grep -qx gpio; then
        in_gpio=1
    fi
    if [[ $user_exists -eq 0 && -z "$GROUP_FILE" ]]; then
        :
    elif [[ $in_gpio -eq 1 ]]; then
        ok "user $HXLOG_USER is in group gpio"
    else
        warn "user $HXLOG_USER is not in group gpio (only needed for direct GPIO tools)"
        recommend "Optional: sudo usermod -a -G gpio $HXLOG_USER (then restart hxlog)."
    fi
else
    info "no gpio group on this system"
fi
if [[ $user_exists -eq 1 ]]; then
    ok "service user $HXLOG_USER exists"
else
    info "service user $HXLOG_USER does not exist (the hxlog package creates it)"
fi

# ---------------------------------------------------------------- summary
section "Summary"
if [[ $problems -eq 0 ]]; then
    echo "  healthy: no problems found ($warnings warning(s))"
else
    echo "  $problems problem(s), $warnings warning(s)"
fi
if [[ ${#recommendations[@]} -gt 0 ]]; then
    echo
    echo "Recommendations:"
    n=1
    for r in "${recommendations[@]}"; do
        printf '  %d. %s\n' "$n" "$r"
        n=$((n + 1))
    done
fi
if [[ $problems -gt 0 ]]; then
    exit 1
fi
exit 0

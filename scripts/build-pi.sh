#!/usr/bin/env bash
# build-pi.sh: builds hxlog and its .deb for a Raspberry Pi.
#
#   scripts/build-pi.sh aarch64   # arm64: 64-bit Raspberry Pi OS (Pi 3/4/5, Zero 2 W)
#   scripts/build-pi.sh armhf     # armhf (ARMv7): 32-bit Raspberry Pi OS on Pi 2/3/4/5, Zero 2 W
#
# 1. installs what is missing (see scripts/pi-env.sh: Debian's pinned Rust,
#    the cross gcc, qemu-user, cargo-deb, the target's OpenSSL in a sysroot)
# 2. builds target/<triple>/release/hxlog
# 3. packages it with cargo-deb (--target), and sets Depends from the symbols
#    the binary really uses, read from the target packages' symbols files
#    (what dpkg-shlibdeps does; cargo-deb's $auto cannot see the target's
#    libraries when cross-compiling)
# 4. checks the package (Architecture, Depends, the binary's ELF machine) and
#    prints its path on the last line
#
# Environment: CARGO_TARGET_DIR, PI_RUST_DEB_VERSION (see pi-env.sh).
set -euo pipefail

if [[ $# -ne 1 || "$1" == -h || "$1" == --help ]]; then
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    [[ $# -eq 1 ]] && exit 0
    exit 2
fi
# shellcheck source=/dev/null # (pi-env.sh: checked on its own)
source "$(dirname "$0")/pi-env.sh" "$1"
cd "$PI_REPO"
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

pi_install

echo "pi: building hxlog for $PI_TRIPLE with $("$RUSTC" --version)"
"$PI_CARGO" build "${PI_CARGO_FLAGS[@]}" --release --locked --bin hxlog
bin=$PI_BIN_DIR/hxlog

# ---------------------------------------------------------------- Depends
# For each library the binary needs: the package that ships it and the
# highest minimal version among the symbols used (the symbols files of
# libc6, libgcc-s1 and libssl3 for the target, unpacked by pi_sysroot).
needed=$(readelf -d -W "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
used=$(readelf --dyn-syms -W "$bin" | awk '$7 == "UND" && $8 ~ /@/ { print $8 }')
# lines: SONAME PACKAGE MINVER, one per used symbol found in a symbols file
resolved=$(awk '
    FNR == 1 { file++ }
    file == 1 { want[$1] = 1; next }
    /^[^ |*]/ { soname = $1; pkg = $2; next }
    /^ / && ($1 in want) { print soname, pkg, $2; found[$1] = 1 }
    END { for (s in want) if (!(s in found)) print "UNRESOLVED", s > "/dev/stderr" }
' <(printf '%s\n' "$used") "$PI_SYSROOT"/control/*/symbols)
declare -A best # package -> highest minimal version (libssl.so.3 and libcrypto.so.3 are both libssl3)
for lib in $needed; do
    pkg=$(awk -v l="$lib" '$1 == l { print $2; exit }' <<<"$resolved")
    if [[ -z "$pkg" ]]; then
        echo "build-pi.sh: no symbols file covers $lib (add its package to pi_sysroot)" >&2
        exit 1
    fi
    while read -r v; do
        if [[ -z "${best[$pkg]:-}" ]] || dpkg --compare-versions "$v" gt "${best[$pkg]}"; then best[$pkg]=$v; fi
    done < <(awk -v l="$lib" '$1 == l { print $3 }' <<<"$resolved" | sort -u)
done
depends_line=$(for pkg in adduser "${!best[@]}"; do
    if [[ $pkg == adduser ]]; then echo adduser; else echo "$pkg (>= ${best[$pkg]})"; fi
done | sort | paste -sd, | sed 's/,/, /g')
echo "pi: Depends: $depends_line"

# ---------------------------------------------------------------- package
out=$PI_TARGET_DIR/debian
mkdir -p "$out"
echo "pi: packaging (cargo-deb's \$auto cannot resolve the target's libraries: its warning is expected, Depends is set below)"
deb=$("$PI_CARGO" deb --target "$PI_TRIPLE" --no-build --output "$out" | tail -n 1)
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
[[ -f "$deb" ]] || deb=$out/hxlog_${version}-1_$PI_ARCH.deb
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -R "$deb" "$work/pkg"
sed -i "s/^Depends: .*/Depends: $depends_line/" "$work/pkg/DEBIAN/control"
dpkg-deb --root-owner-group -Zxz -b "$work/pkg" "$deb" >/dev/null

# ---------------------------------------------------------------- checks
arch=$(dpkg-deb -f "$deb" Architecture)
if [[ "$arch" != "$PI_ARCH" ]]; then
    echo "build-pi.sh: $deb has Architecture $arch, expected $PI_ARCH" >&2
    exit 1
fi
[[ "$(dpkg-deb -f "$deb" Depends)" == "$depends_line" ]] || {
    echo "build-pi.sh: Depends not set in $deb" >&2
    exit 1
}
dpkg-deb -x "$deb" "$work/root"
machine=$(readelf -h "$work/root/usr/bin/hxlog" | sed -n 's/ *Machine: *//p')
case "$PI_ARCH:$machine" in
    arm64:AArch64 | armhf:ARM) ;;
    *)
        echo "build-pi.sh: packaged binary is for '$machine', not $PI_ARCH" >&2
        exit 1
        ;;
esac
dpkg-deb -I "$deb" | sed -n 's/^ \(Package\|Version\|Architecture\|Depends\|Installed-Size\):/pi:   \1:/p'
echo "$deb"

# shellcheck shell=bash disable=SC2034 # (the PI_ variables are for the scripts that source this)
# pi-env.sh: the cross toolchain for the Raspberry Pi builds, shared by
# scripts/build-pi.sh, scripts/test-pi.sh and scripts/bench-pi.sh.
#
#   source scripts/pi-env.sh aarch64|armhf
#   pi_install          # installs what is missing (root; apt-get, cargo install)
#   "$PI_CARGO" build "${PI_CARGO_FLAGS[@]}" --release
#
# rustup cannot download ARM targets on the build machine, so the build uses
# Debian's own Rust (rustc-web, cargo-web) and builds the standard library for
# the target from rust-web-src (-Zbuild-std, allowed by RUSTC_BOOTSTRAP=1).
# The three packages are pinned to one version so that the compiler and the
# std sources always match. rustup's toolchain stays in use for everything else.
#
# OpenSSL for the target (native-tls links it dynamically, like the amd64
# package): libssl-dev and libssl3 of the target architecture, fetched with
# `apt-get download` and unpacked with `dpkg -x` into target/pi-sysroot/ARCH.
# Nothing of the foreign architecture is installed, so no multiarch version
# skew can break the host; the package then depends on the target's libssl3.
# (The alternative, native-tls's `vendored` OpenSSL, would build OpenSSL from
# source on every clean build and ship a copy that Debian's security updates
# do not reach.)

# Debian's rustc-web/cargo-web/rust-web-src (bookworm-security). Override
# with PI_RUST_DEB_VERSION when the archive moves on (check
# `apt-cache policy rustc-web`), and make rust-version in Cargo.toml still hold.
PI_RUST_DEB_VERSION=${PI_RUST_DEB_VERSION:-1.96.0+dfsg1-1~deb12u2}

case "${1:-}" in
    aarch64 | arm64)
        PI_ARCH=arm64
        PI_TRIPLE=aarch64-unknown-linux-gnu
        PI_GNU=aarch64-linux-gnu
        PI_QEMU=qemu-aarch64
        PI_CROSS_PKGS=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
        ;;
    armhf | armv7)
        PI_ARCH=armhf
        PI_TRIPLE=armv7-unknown-linux-gnueabihf
        PI_GNU=arm-linux-gnueabihf
        PI_QEMU=qemu-arm
        PI_CROSS_PKGS=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
        ;;
    *)
        echo "pi-env.sh: want aarch64 or armhf, got '${1:-}'" >&2
        return 2
        ;;
esac

PI_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PI_TARGET_DIR=${CARGO_TARGET_DIR:-$PI_REPO/target}
PI_SYSROOT=$PI_TARGET_DIR/pi-sysroot/$PI_ARCH
PI_CARGO=/usr/bin/cargo
PI_CARGO_FLAGS=(--target "$PI_TRIPLE" "-Zbuild-std=std,panic_abort")
PI_BIN_DIR=$PI_TARGET_DIR/$PI_TRIPLE/release

triple_env=$(tr 'a-z-' 'A-Z_' <<<"$PI_TRIPLE")
triple_cc=$(tr '-' '_' <<<"$PI_TRIPLE")
export RUSTC=/usr/bin/rustc
export RUSTC_BOOTSTRAP=1
export "CARGO_TARGET_${triple_env}_LINKER=$PI_GNU-gcc"
export "CC_${triple_cc}=$PI_GNU-gcc"
export "AR_${triple_cc}=$PI_GNU-ar"
# openssl-sys: the target's OpenSSL from the unpacked packages (include/ merges
# the arch-independent headers with the multiarch configuration.h).
export "${triple_env}_OPENSSL_LIB_DIR=$PI_SYSROOT/usr/lib/$PI_GNU"
export "${triple_env}_OPENSSL_INCLUDE_DIR=$PI_SYSROOT/include"
# qemu-user: the target's loader, libc and OpenSSL, from the packages unpacked
# into the sysroot (the same root a bookworm Pi has).
export QEMU_LD_PREFIX=$PI_SYSROOT
unset triple_env triple_cc

# pi_install: installs what the cross build needs when it is missing.
pi_install() {
    local need=() p
    for p in "rustc-web=$PI_RUST_DEB_VERSION" "cargo-web=$PI_RUST_DEB_VERSION" "rust-web-src=$PI_RUST_DEB_VERSION"; do
        [[ "$(dpkg-query -W -f='${Version}' "${p%%=*}" 2>/dev/null)" == "$PI_RUST_DEB_VERSION" ]] || need+=("$p")
    done
    for p in "${PI_CROSS_PKGS[@]}" qemu-user; do
        dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
    done
    if [[ ${#need[@]} -gt 0 ]]; then
        echo "pi: installing ${need[*]}"
        apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades "${need[@]}" || {
            echo "pi: cannot install ${need[*]} (is $PI_RUST_DEB_VERSION still in the archive? see apt-cache policy rustc-web)" >&2
            return 1
        }
    fi
    if ! command -v cargo-deb >/dev/null; then
        echo "pi: installing cargo-deb"
        cargo install cargo-deb --locked
    fi
    pi_sysroot
}

# pi_sysroot: the target's libssl-dev, libssl3, libc6 and libgcc-s1 unpacked
# into $PI_SYSROOT: OpenSSL to link against, the root qemu-user runs the
# binary in (QEMU_LD_PREFIX), and the symbols files build-pi.sh reads to
# compute the package's Depends.
pi_sysroot() {
    local pkgs=(libssl-dev libssl3 libc6 libgcc-s1) stamp=$PI_SYSROOT/.complete p
    [[ -e "$stamp" ]] && return 0
    if ! dpkg --print-foreign-architectures | grep -qx "$PI_ARCH"; then
        dpkg --add-architecture "$PI_ARCH"
    fi
    rm -rf "$PI_SYSROOT"
    mkdir -p "$PI_SYSROOT/debs" "$PI_SYSROOT/control"
    # With no index for the architecture yet, or a stale one whose versions
    # the mirror no longer has, update and try again. A mirror in the middle
    # of a sync can fail one foreign index with a hash mismatch: go on, and
    # fail only if the packages still cannot be fetched.
    if ! (cd "$PI_SYSROOT/debs" && apt-get download "${pkgs[@]/%/:$PI_ARCH}" 2>/dev/null); then
        apt-get update -qq || echo "pi: apt-get update reported errors; trying the download anyway" >&2
        rm -f "$PI_SYSROOT"/debs/*.deb
        (cd "$PI_SYSROOT/debs" && apt-get download "${pkgs[@]/%/:$PI_ARCH}") || {
            echo "pi: apt-get download of ${pkgs[*]} for $PI_ARCH failed" >&2
            return 1
        }
    fi
    for p in "$PI_SYSROOT"/debs/*.deb; do
        dpkg -x "$p" "$PI_SYSROOT"
        dpkg-deb -e "$p" "$PI_SYSROOT/control/$(dpkg-deb -f "$p" Package)"
    done
    mkdir -p "$PI_SYSROOT/include"
    cp -a "$PI_SYSROOT/usr/include/." "$PI_SYSROOT/include/"
    cp -a "$PI_SYSROOT/usr/include/$PI_GNU/." "$PI_SYSROOT/include/"
    touch "$stamp"
}

# shellcheck shell=bash
# Sourced by the build and test scripts: what each architecture of the original image
# (amd64 arm arm64 ppc64le s390x) needs for a static build of our binaries here.
#
# arch_info ARCH sets:
#   RUST_TARGET   the Rust target; its binaries must be static (no libc, no interpreter)
#   STATIC_FLAGS  extra rustc flags for that (glibc targets: +crt-static links glibc in)
#   CROSS_TRIPLE  prefix of Debian's cross gcc (gcc-<triple>), empty for the host's musl-gcc
#   CROSS_PKGS    Debian packages that cross compiler needs (C for ring, the TLS crate's
#                 crypto; libc6-dev-*-cross also holds the static glibc)
#   QEMU          the qemu-user-static binary that runs the result on an amd64 host
#   ARCH_PROBLEM  non-empty when the arch cannot be built here, saying why
#
# musl where rustup serves its standard library here (amd64, arm64). For arm, ppc64le and
# s390x it serves none (armv7/powerpc64le musl: 404 from the toolchain mirror; s390x musl is a
# tier-3 target with no prebuilt std anywhere), so those link glibc statically (`+crt-static`
# on the `-gnu` targets). Such binaries need no library at run time either: glibc 2.36
# resolves `localhost` from /etc/hosts without NSS modules (checked in an empty chroot).

# All arches this file knows (the original's ALL_ARCH.linux):
# shellcheck disable=SC2034
ALL_ARCH="amd64 arm arm64 ppc64le s390x"
# The cross arches scripts/test.sh builds and tests under qemu on every run (a representative
# subset, for CI time); `make test-all-arch` does every arch.
CI_CROSS_ARCHES="arm64"

arch_info() {
    RUST_TARGET="" STATIC_FLAGS="" CROSS_TRIPLE="" CROSS_PKGS="" QEMU="" ARCH_PROBLEM=""
    case "$1" in
        amd64)
            RUST_TARGET=x86_64-unknown-linux-musl
            CROSS_PKGS="musl-tools"
            ;;
        arm64)
            RUST_TARGET=aarch64-unknown-linux-musl
            CROSS_TRIPLE=aarch64-linux-gnu
            CROSS_PKGS="gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
            QEMU=qemu-aarch64-static
            ;;
        arm)
            # The original built arm with GOARM=7: ARMv7, hard float.
            RUST_TARGET=armv7-unknown-linux-gnueabihf
            STATIC_FLAGS="-C target-feature=+crt-static"
            CROSS_TRIPLE=arm-linux-gnueabihf
            CROSS_PKGS="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
            QEMU=qemu-arm-static
            ;;
        ppc64le)
            RUST_TARGET=powerpc64le-unknown-linux-gnu
            STATIC_FLAGS="-C target-feature=+crt-static"
            CROSS_TRIPLE=powerpc64le-linux-gnu
            CROSS_PKGS="gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross"
            QEMU=qemu-ppc64le-static
            ;;
        s390x)
            RUST_TARGET=s390x-unknown-linux-gnu
            STATIC_FLAGS="-C target-feature=+crt-static"
            CROSS_TRIPLE=s390x-linux-gnu
            CROSS_PKGS="gcc-s390x-linux-gnu libc6-dev-s390x-cross"
            QEMU=qemu-s390x-static
            ;;
        *)
            ARCH_PROBLEM="unknown ARCH '$1' (known: $ALL_ARCH)"
            return 1
            ;;
    esac
}

# Exports the variables cargo and the cc crate read to cross-compile RUST_TARGET statically.
arch_export_cross_env() {
    local t=${RUST_TARGET//-/_}
    local up
    up=$(echo "$t" | tr '[:lower:]' '[:upper:]')
    [ -z "$STATIC_FLAGS" ] || export "CARGO_TARGET_${up}_RUSTFLAGS=$STATIC_FLAGS"
    [ -n "$CROSS_TRIPLE" ] || return 0
    export "CC_$t=$CROSS_TRIPLE-gcc"
    export "AR_$t=$CROSS_TRIPLE-ar"
    export "CARGO_TARGET_${up}_LINKER=$CROSS_TRIPLE-gcc"
}

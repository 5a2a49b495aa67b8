# Sourced by the build and test scripts: what each architecture of the original image
# (amd64 arm arm64 ppc64le s390x) needs for a static build of our binaries here.
#
# arch_info ARCH sets:
#   RUST_TARGET   the Rust target (musl, so the binaries need no libc)
#   CROSS_TRIPLE  prefix of Debian's cross gcc (gcc-<triple>), empty for the host's musl-gcc
#   CROSS_PKGS    Debian packages that cross compiler needs (C for ring, the TLS crate's crypto)
#   QEMU          the qemu-user-static binary that runs the result on an amd64 host
#   ARCH_PROBLEM  non-empty when the arch cannot be built here, saying why
# All arches this file knows (the original's ALL_ARCH.linux):
# shellcheck disable=SC2034
ALL_ARCH="amd64 arm arm64 ppc64le s390x"
# The cross arches scripts/test.sh builds and tests under qemu on every run (a representative
# subset, for CI time); `make test-all-arch` does every arch that can be built here.
CI_CROSS_ARCHES="arm64"

arch_info() {
    RUST_TARGET="" CROSS_TRIPLE="" CROSS_PKGS="" QEMU="" ARCH_PROBLEM=""
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
            RUST_TARGET=armv7-unknown-linux-musleabihf
            CROSS_TRIPLE=arm-linux-gnueabihf
            CROSS_PKGS="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
            QEMU=qemu-arm-static
            ;;
        ppc64le)
            RUST_TARGET=powerpc64le-unknown-linux-musl
            CROSS_TRIPLE=powerpc64le-linux-gnu
            CROSS_PKGS="gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross"
            QEMU=qemu-ppc64le-static
            ;;
        s390x)
            RUST_TARGET=s390x-unknown-linux-musl
            CROSS_TRIPLE=s390x-linux-gnu
            CROSS_PKGS="gcc-s390x-linux-gnu libc6-dev-s390x-cross"
            QEMU=qemu-s390x-static
            ARCH_PROBLEM="Rust ships no prebuilt standard library for s390x-unknown-linux-musl \
(a tier-3 target: rustup cannot add it, and building std needs a nightly toolchain, which \
cannot be fetched here)"
            ;;
        *)
            ARCH_PROBLEM="unknown ARCH '$1' (known: $ALL_ARCH)"
            return 1
            ;;
    esac
}

# Exports the variables cargo and the cc crate read to cross-compile for RUST_TARGET.
arch_export_cross_env() {
    [ -n "$CROSS_TRIPLE" ] || return 0
    local t=${RUST_TARGET//-/_}
    local up
    up=$(echo "$t" | tr '[:lower:]' '[:upper:]')
    export "CC_$t=$CROSS_TRIPLE-gcc"
    export "AR_$t=$CROSS_TRIPLE-ar"
    export "CARGO_TARGET_${up}_LINKER=$CROSS_TRIPLE-gcc"
}

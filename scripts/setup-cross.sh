#!/usr/bin/env bash
# Installs what a static build for each ARCH needs, idempotently: the Rust target
# (rustup) and Debian's cross C compiler for ring's C code. Also used by Dockerfile.busybox.
# Usage: scripts/setup-cross.sh ARCH...   (amd64 arm arm64 ppc64le s390x, see scripts/arch.sh)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=arch.sh
. "$repo/scripts/arch.sh"

[ $# -gt 0 ] || { echo "usage: $0 ARCH... (one of: $ALL_ARCH)" >&2; exit 2; }
host=$(dpkg --print-architecture)
if [ "$host" != amd64 ]; then
    echo "setup-cross: the cross compilers in scripts/arch.sh are Debian's amd64-hosted ones;" \
        "this host is $host" >&2
    exit 2
fi
pkgs=() targets=()
for arch in "$@"; do
    if ! arch_info "$arch" || [ -n "$ARCH_PROBLEM" ]; then
        echo "setup-cross: cannot build for $arch here: $ARCH_PROBLEM" >&2
        exit 2
    fi
    # shellcheck disable=SC2206
    pkgs+=($CROSS_PKGS)
    targets+=("$RUST_TARGET")
done
pkgs+=(file)

missing=()
for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup-cross: installing ${missing[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$installed"; then
        echo "setup-cross: adding the $t Rust target" >&2
        rustup target add "$t" >&2
    fi
done

#!/usr/bin/env bash
# Builds our binaries as static executables for ARCH and prints the dir that holds them.
# Usage: scripts/build-static.sh [ARCH]   ARCH: amd64 (default), arm64, arm, ppc64le, s390x
# (musl for amd64/arm64, static glibc for the others: scripts/arch.sh says why).
# Installs the Rust target and Debian's cross gcc first (scripts/setup-cross.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=arch.sh
. "$repo/scripts/arch.sh"
arch=${1:-amd64}
if ! arch_info "$arch" || [ -n "$ARCH_PROBLEM" ]; then
    echo "build-static: cannot build for $arch here: $ARCH_PROBLEM" >&2
    exit 2
fi
"$repo/scripts/setup-cross.sh" "$arch"
arch_export_cross_env
cd "$repo"
cargo build --quiet --release --locked --target "$RUST_TARGET" --bins >&2
out="$repo/target/$RUST_TARGET/release"
n=0
for b in "$out"/*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    desc=$(file -b "$b")
    case "$desc" in
        *"statically linked"* | *"static-pie linked"*) n=$((n + 1)) ;;
        *)
            echo "build-static: $b is not static: $desc" >&2
            exit 1
            ;;
    esac
done
[ "$n" -gt 0 ] || echo "build-static: warning: no binaries in $out (src/bin/ is empty?)" >&2
echo "$out"

#!/usr/bin/env bash
# Builds our binaries as static musl executables and prints the dir that holds them.
# Usage: scripts/build-static.sh [ARCH]   (ARCH: amd64, the default)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
arch=${1:-amd64}
case "$arch" in
    amd64) target=x86_64-unknown-linux-musl ;;
    *) echo "build-static: unsupported ARCH $arch" >&2; exit 2 ;;
esac
cd "$repo"
cargo build --quiet --release --locked --target "$target" --bins >&2
out="$repo/target/$target/release"
for b in "$out"/*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    if ! file "$b" | grep -q 'static'; then
        echo "build-static: $b is not static: $(file -b "$b")" >&2
        exit 1
    fi
done
echo "$out"

#!/usr/bin/env bash
# Runs every test, unit and integration, after setting up a fresh machine (scripts/setup.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
./scripts/setup.sh
ETCD_BIN_DIR=$(./scripts/fetch-etcd.sh)
export ETCD_BIN_DIR
# The static binaries are what the image ships; tests of the rootfs and the demo use them.
STATIC_BIN_DIR=$(./scripts/build-static.sh)
export STATIC_BIN_DIR
# Cross builds tested under qemu (tests/cross_arch.rs): a subset per run, see scripts/arch.sh.
. ./scripts/arch.sh
CROSS_ARCHES=${CROSS_ARCHES:-$CI_CROSS_ARCHES}
export CROSS_ARCHES
for arch in $CROSS_ARCHES; do
    ./scripts/build-static.sh "$arch" >/dev/null
done
cargo test --locked --all-targets --no-fail-fast 2>&1

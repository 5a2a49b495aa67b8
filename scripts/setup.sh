#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine, idempotently:
# Debian packages, the musl Rust target, and the real etcd binaries (scripts/fetch-etcd.sh).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

# One package a line, each with why (keeps merges clean).
packages=(
    musl-tools      # musl-gcc for ring's C in static builds
    prometheus      # promtool and a real Prometheus server that scrapes the monitor in tests
    file            # tests check that our binaries are static
    openssl         # the monitor's TLS test makes a CA and certificates with its CLI
    time            # bench scripts measure max RSS with /usr/bin/time -v
    bc              # bench scripts compute ratios
    busybox-static  # the image's shell for scripts/rootfs.sh
    qemu-user-static # runs the cross builds in tests
    curl            # scripts/demo.sh
    podman          # builds and runs the image in tests (scripts/image.sh, tests/image_podman.rs)
    buildah         # podman build's engine (--build-context)
    runc            # the OCI runtime image/containers.conf names
    catatonit       # podman kube play makes its pause image from it (no registry)
    conmon          # podman's container monitor
)
# Cross compilers: scripts/setup-cross.sh below.

missing=()
for p in "${packages[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
    $sudo_cmd apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! rustup target list --installed | grep -x x86_64-unknown-linux-musl >/dev/null; then
    echo "setup: adding the x86_64-unknown-linux-musl target" >&2
    rustup target add x86_64-unknown-linux-musl >&2
fi

"$repo/scripts/fetch-etcd.sh" >/dev/null

# The Rust targets and cross C compilers for the arches scripts/test.sh builds (scripts/arch.sh).
# shellcheck source=arch.sh
. "$repo/scripts/arch.sh"
"$repo/scripts/setup-cross.sh" amd64 $CI_CROSS_ARCHES

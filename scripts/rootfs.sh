#!/usr/bin/env bash
# Builds into OUT_DIR the filesystem of Dockerfile.busybox's final stage, so it can be tested
# with chroot where no Docker engine runs:
#   - Debian's busybox-static at /bin/busybox, its applets as `--install -s` symlinks
#     (the base image's part; plus /etc/passwd, /etc/group, /tmp as busybox's image has them),
#     by scripts/busybox-rootfs.sh, whose tree scripts/image.sh imports as the image's base;
#   - what image/layout.txt lists (the same install step the Dockerfile runs): our static
#     binaries, migrate-if-needed.sh, etcd-<v>/etcdctl-<v>/etcdutl-<v> and etcd/etcdctl;
#   - the shared libraries that dynamically linked etcd binaries need (Debian's 3.4.23 links
#     glibc; the official etcd releases are static), found with ldd by scripts/shared-libs.sh
#     (which scripts/image.sh runs too). Our own binaries must need none: that is an error here.
#   - what a container runtime provides: /dev/null, /dev/zero, /dev/random, /dev/urandom (when
#     we may mknod) and /etc/hosts with localhost.
# Usage: scripts/rootfs.sh OUT_DIR
# Env: STATIC_BIN_DIR (default: build with scripts/build-static.sh), ETCD_BIN_DIR (default:
# scripts/fetch-etcd.sh), BUNDLED_ETCD_VERSIONS (default: every etcd-<v> in ETCD_BIN_DIR),
# ROOTFS_STRICT=1 to fail when one of our binaries or migrate-if-needed.sh is missing (else
# they are reported and left out).
# OUT_DIR must be empty, missing, or a rootfs this script made (it is then rebuilt).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
out=$1
log() { echo "rootfs: $*" >&2; }

marker=.etcd-image-rootfs
if [ -e "$out" ]; then
    if [ -e "$out/$marker" ]; then
        rm -rf "$out"
    elif [ -n "$(ls -A "$out")" ]; then
        log "$out is not empty and not a rootfs made by this script; refusing to touch it"
        exit 1
    fi
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
touch "$out/$marker"

bins=${STATIC_BIN_DIR:-$("$repo/scripts/build-static.sh" amd64)}
etcd_dir=${ETCD_BIN_DIR:-$("$repo/scripts/fetch-etcd.sh")}
versions=${BUNDLED_ETCD_VERSIONS:-$(cd "$etcd_dir" && ls etcd-[0-9]* | sed 's/^etcd-//' | sort -t. -k1,1n -k2,2n -k3,3n | tr '\n' ' ')}

# The base: busybox and its applet links (the same tree scripts/image.sh imports as the
# image's base).
"$repo/scripts/busybox-rootfs.sh" "$out"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$out/etc/hosts"
if [ "$(id -u)" -eq 0 ]; then
    for node in "null c 1 3" "zero c 1 5" "random c 1 8" "urandom c 1 9"; do
        set -- $node
        mknod -m 0666 "$out/dev/$1" "$2" "$3" "$4" 2>/dev/null || log "cannot mknod /dev/$1 (not permitted here)"
    done
fi

# Our part: the same install step as the Dockerfile's assemble stage.
allow_missing=1
[ "${ROOTFS_STRICT:-0}" = 1 ] && allow_missing=0
ALLOW_MISSING=$allow_missing "$repo/image/install-layout.sh" "$out" "$bins" "$repo" "$etcd_dir" "$versions"

# Shared libraries for dynamically linked etcd binaries; ours must be static.
ours=$(awk '$1 == "bin" { print $3 }' "$repo/image/layout.txt")
for rel in $ours; do
    f=$out$rel
    [ -f "$f" ] || continue
    desc=$(file -b "$f")
    case "$desc" in
        *"statically linked"* | *"static-pie linked"*) ;;
        *) log "$rel is ours and must be static, but it is: $desc"; exit 1 ;;
    esac
done
"$repo/scripts/shared-libs.sh" "$out" "$out"/usr/local/bin/*

log "built $out (etcd $versions)"

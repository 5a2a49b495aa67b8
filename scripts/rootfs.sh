#!/usr/bin/env bash
# Builds into OUT_DIR the filesystem of Dockerfile.busybox's final stage, so it can be tested
# with chroot where no Docker engine runs:
#   - Debian's busybox-static at /bin/busybox, its applets as `--install -s` symlinks
#     (the base image's part; plus /etc/passwd, /etc/group, /tmp as busybox's image has them);
#   - what image/layout.txt lists (the same install step the Dockerfile runs): our static
#     binaries, migrate-if-needed.sh, etcd-<v>/etcdctl-<v>/etcdutl-<v> and etcd/etcdctl;
#   - the shared libraries that dynamically linked etcd binaries need (Debian's 3.4.23 links
#     glibc; the official etcd releases are static), found with ldd, as a busybox:glibc base
#     would carry them. Our own binaries must need none: that is an error here.
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

busybox=/bin/busybox
if [ ! -x "$busybox" ] || ! file -b "$busybox" | grep 'statically linked' >/dev/null; then
    log "Debian's busybox-static is needed at $busybox: apt-get install busybox-static (scripts/setup.sh does)"
    exit 1
fi
bins=${STATIC_BIN_DIR:-$("$repo/scripts/build-static.sh" amd64)}
etcd_dir=${ETCD_BIN_DIR:-$("$repo/scripts/fetch-etcd.sh")}
versions=${BUNDLED_ETCD_VERSIONS:-$(cd "$etcd_dir" && ls etcd-[0-9]* | sed 's/^etcd-//' | sort -t. -k1,1n -k2,2n -k3,3n | tr '\n' ' ')}

# The base: busybox and its applet links, at the paths busybox itself chooses.
mkdir -p "$out"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,dev,proc,sys,var}
chmod 1777 "$out/tmp"
chmod 0700 "$out/root"
install -m 0755 "$busybox" "$out/bin/busybox"
if [ "$(id -u)" -eq 0 ] && chroot "$out" /bin/busybox true 2>/dev/null; then
    chroot "$out" /bin/busybox --install -s
else
    # The same links --install -s makes, without needing chroot.
    "$busybox" --list-full | while read -r applet; do
        [ -e "$out/$applet" ] || ln -s /bin/busybox "$out/$applet"
    done
fi
cat >"$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
PASSWD
cat >"$out/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
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
for f in "$out"/usr/local/bin/*; do
    [ -f "$f" ] || continue
    desc=$(file -b "$f")
    case "$desc" in
        *"statically linked"* | *"static-pie linked"* | *"shell script"* | *"text executable"*) continue ;;
    esac
    rel=/usr/local/bin/${f##*/}
    if grep -qx "$rel" <<<"$ours"; then
        log "$rel is ours and must be static, but it is: $desc"
        exit 1
    fi
    # ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    ldd "$f" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | while read -r lib; do
        [ -e "$out$lib" ] && continue
        mkdir -p "$out$(dirname "$lib")"
        cp -L "$lib" "$out$lib"
        log "added $lib (needed by $rel)"
    done
done

log "built $out (etcd $versions)"

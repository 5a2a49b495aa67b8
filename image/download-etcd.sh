#!/bin/sh
# Downloads the official etcd release tarballs for ARCH and puts etcd-<v>, etcdctl-<v> and
# etcdutl-<v> (3.5+) into OUT_DIR, each tarball checked against a sha256 first.
# Usage: download-etcd.sh ARCH OUT_DIR VERSION...
# Env: ETCD_RELEASE_URL (default: etcd's GitHub releases). The sha256 comes from
# image/etcd-sha256sums.txt when the tarball is listed there (pinned in this repo), else from
# the release's own SHA256SUMS file (which guards against a corrupted download, not against a
# compromised release; pin the sums to guard against that too).
# Used by Dockerfile.busybox's etcd-download stage; needs curl (or wget) and sha256sum.
set -eu
[ $# -ge 3 ] || { echo "usage: $0 ARCH OUT_DIR VERSION..." >&2; exit 2; }
arch=$1 out=$2
shift 2
base=${ETCD_RELEASE_URL:-https://github.com/etcd-io/etcd/releases/download}
pinned=$(dirname "$0")/etcd-sha256sums.txt
case "$arch" in
    amd64 | arm64 | ppc64le | s390x) ;;
    arm)
        echo "download-etcd: etcd publishes no linux-arm (32-bit) release binaries. Build" \
            "etcd-<v>/etcdctl-<v> yourself (GOARCH=arm GOARM=7 CGO_ENABLED=0, as the original" \
            "Makefile did) into a dir and pass it with --build-context etcd-bin=DIR" >&2
        exit 1
        ;;
    *) echo "download-etcd: unknown ARCH $arch" >&2; exit 2 ;;
esac
fetch() { # URL FILE
    if command -v curl >/dev/null; then
        curl -fsSL --retry 3 -o "$2" "$1"
    else
        wget -q -O "$2" "$1"
    fi
}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for v in "$@"; do
    name=etcd-v$v-linux-$arch
    echo "download-etcd: $name.tar.gz" >&2
    fetch "$base/v$v/$name.tar.gz" "$work/$name.tar.gz"
    sum=""
    [ -f "$pinned" ] && sum=$(awk -v f="$name.tar.gz" '$2 == f { print $1 }' "$pinned")
    if [ -z "$sum" ]; then
        fetch "$base/v$v/SHA256SUMS" "$work/SHA256SUMS-$v"
        sum=$(awk -v f="$name.tar.gz" '$2 == f || $2 == "*" f { print $1 }' "$work/SHA256SUMS-$v")
    fi
    [ -n "$sum" ] || { echo "download-etcd: no sha256 for $name.tar.gz" >&2; exit 1; }
    echo "$sum  $work/$name.tar.gz" | sha256sum -c - >&2 || {
        echo "download-etcd: $name.tar.gz does not match sha256 $sum" >&2
        exit 1
    }
    tar -xzf "$work/$name.tar.gz" -C "$work"
    for tool in etcd etcdctl etcdutl; do
        if [ -f "$work/$name/$tool" ]; then
            cp "$work/$name/$tool" "$out/$tool-$v"
            chmod 0555 "$out/$tool-$v"
        elif [ "$tool" != etcdutl ]; then
            echo "download-etcd: $name.tar.gz has no $tool" >&2
            exit 1
        fi
    done
done

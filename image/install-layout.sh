#!/bin/sh
# Installs what image/layout.txt lists into ROOT. POSIX sh: runs under busybox ash in the
# Dockerfile's assemble stage and under bash in scripts/rootfs.sh.
# Usage: install-layout.sh ROOT BIN_DIR REPO_DIR ETCD_DIR "VERSION..."
# With ALLOW_MISSING=1, a missing `bin` or `script` source is reported and skipped (for a
# rootfs while not every tool is written yet); otherwise every missing source is an error.
set -eu
[ $# -eq 5 ] || { echo "usage: $0 ROOT BIN_DIR REPO_DIR ETCD_DIR \"VERSION...\"" >&2; exit 2; }
root=$1 bins=$2 repo=$3 etcd=$4 versions=$5
layout=$(dirname "$0")/layout.txt
[ -n "$versions" ] || { echo "install-layout: no etcd version to bundle" >&2; exit 2; }

# Newest by numeric major.minor.patch, not by list order.
newest=$(for v in $versions; do echo "$v"; done | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)
missing=""

# is_35_plus V: true for 3.5 and later (etcdutl exists).
is_35_plus() {
    major=${1%%.*} rest=${1#*.}
    minor=${rest%%.*}
    [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 5 ]; }
}

put() { # SRC DEST MODE OPTIONAL
    if [ ! -f "$1" ]; then
        if [ "$4" = optional ]; then
            echo "install-layout: MISSING $1 (not built yet?): $2 left out" >&2
            missing="$missing ${1##*/}"
            return 0
        fi
        echo "install-layout: $1 does not exist (needed for $2)" >&2
        exit 1
    fi
    mkdir -p "$root$(dirname "$2")"
    # cp + chmod rather than install: the result must be a plain copy, even of a symlink.
    rm -f "$root$2"
    cp -L "$1" "$root$2"
    chmod "$3" "$root$2"
}

opt=required
[ "${ALLOW_MISSING:-0}" = 1 ] && opt=optional

while read -r kind src dest mode extra; do
    case "$kind" in '' | '#'*) continue ;; esac
    [ -n "$mode" ] && [ -z "$extra" ] || { echo "install-layout: bad line: $kind $src $dest $mode $extra" >&2; exit 1; }
    case "$kind" in
        bin) put "$bins/$src" "$dest" "$mode" "$opt" ;;
        script) put "$repo/$src" "$dest" "$mode" "$opt" ;;
        etcd | etcd35)
            for v in $versions; do
                [ "$kind" = etcd35 ] && ! is_35_plus "$v" && continue
                put "$etcd/$(echo "$src" | sed "s/@V@/$v/g")" "$(echo "$dest" | sed "s/@V@/$v/g")" "$mode" required
            done
            ;;
        newest)
            put "$etcd/$(echo "$src" | sed "s/@V@/$newest/g")" "$(echo "$dest" | sed "s/@V@/$newest/g")" "$mode" required
            ;;
        dir)
            mkdir -p "$root$dest"
            chmod "$mode" "$root$dest"
            ;;
        *) echo "install-layout: unknown kind '$kind' in $layout" >&2; exit 1 ;;
    esac
done <"$layout"

if [ -n "$missing" ]; then
    echo "install-layout: INCOMPLETE: missing:$missing" >&2
fi

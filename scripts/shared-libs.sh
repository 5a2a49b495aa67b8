#!/usr/bin/env bash
# Copies into ROOT the shared libraries that the dynamically linked executables among FILE...
# need, at the paths ldd names (Debian's etcd 3.4.23 links glibc; the official etcd releases
# are static and need none), as a busybox:glibc base would carry them. Static files and
# scripts are skipped. Prints each library it adds on stderr.
# Used by scripts/rootfs.sh (on the rootfs) and scripts/image.sh (for the image's etcd-libs
# build context), so the image and the tested rootfs get the same libraries.
# Usage: scripts/shared-libs.sh ROOT FILE...
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 ROOT FILE..." >&2; exit 2; }
root=$1
shift
for f in "$@"; do
    [ -f "$f" ] || continue
    case "$(file -b "$f")" in
        *"dynamically linked"*) ;;
        *) continue ;;
    esac
    # ldd lines: "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    libs=$(ldd "$f" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }')
    for lib in $libs; do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
        echo "shared-libs: added $lib (needed by ${f##*/})" >&2
    done
done

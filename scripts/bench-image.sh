#!/usr/bin/env bash
# Image figures: size of each static binary per arch built so far, what our part adds to the
# image next to etcd's, and the start-up time of each binary inside the rootfs (chroot, as
# root). Prints figures and ratios, asserts nothing. Builds amd64 if needed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. scripts/arch.sh
ours=$(awk '$1 == "bin" { print $2 }' image/layout.txt)
bins=${STATIC_BIN_DIR:-$(./scripts/build-static.sh)}

echo "static binary sizes (bytes; stripped, LTO, opt-level s):"
printf '  %-8s' arch; for b in $ours; do printf ' %21s' "$b"; done; echo
for a in $ALL_ARCH; do
    arch_info "$a"
    d=target/$RUST_TARGET/release
    [ "$a" = amd64 ] && d=$bins
    printf '  %-8s' "$a"
    for b in $ours; do
        if [ -f "$d/$b" ]; then printf ' %21s' "$(stat -c %s "$d/$b")"; else printf ' %21s' "-"; fi
    done
    echo
done
if [ -f "$bins/etcd-version-monitor" ]; then
    s=$(stat -c %s "$bins/etcd-version-monitor")
    echo "  etcd-version-monitor vs the Go original's 9 MB stripped binary: $(awk -v s="$s" 'BEGIN { printf "%.2f", s / 9000000 }')x"
fi

root=$(mktemp -d /tmp/bench-image-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
STATIC_BIN_DIR=$bins ./scripts/rootfs.sh "$root" 2>/dev/null
our_bytes=0 etcd_bytes=0
for f in "$root"/usr/local/bin/*; do
    n=${f##*/}
    if grep -qx "$n" <<<"$ours" || [ "$n" = migrate-if-needed.sh ]; then
        our_bytes=$((our_bytes + $(stat -c %s "$f")))
    else
        etcd_bytes=$((etcd_bytes + $(stat -c %s "$f")))
    fi
done
echo "rootfs /usr/local/bin: ours $our_bytes bytes, etcd's $etcd_bytes bytes (ours = $(awk -v a="$our_bytes" -v b="$etcd_bytes" 'BEGIN { printf "%.1f", 100 * a / b }')% of etcd's)"

if [ "$(id -u)" -eq 0 ] && chroot "$root" /bin/true 2>/dev/null; then
    runs=100
    mean_us() { # CMD...: mean wall time of $runs runs, in microseconds
        local t0 t1
        t0=$(date +%s%N)
        for _ in $(seq "$runs"); do "$@" >/dev/null 2>&1 || true; done
        t1=$(date +%s%N)
        echo $(((t1 - t0) / runs / 1000))
    }
    base=$(mean_us chroot "$root" /bin/true)
    echo "start-up inside the rootfs: chroot ROOT BIN --help, mean of $runs runs (chroot + busybox true: $base us)"
    for b in $ours; do
        [ -f "$root/usr/local/bin/$b" ] || { echo "  $b: not built"; continue; }
        echo "  $b: $(mean_us chroot "$root" "/usr/local/bin/$b" --help) us"
    done
else
    echo "start-up: skipped (chroot needs root)"
fi

#!/usr/bin/env bash
# Lays out Debian's busybox-static as a minimal root filesystem in OUT_DIR: /bin/busybox with
# its applets as `--install -s` symlinks, /etc/passwd and /etc/group, /tmp (1777) and /root
# (0700), as busybox's own image has them. The base of both scripts/rootfs.sh (the filesystem
# the chroot tests run in) and the image built without a registry (scripts/image.sh imports
# this tree as BUSYBOX_IMAGE), so the two cannot differ in their base.
# Usage: scripts/busybox-rootfs.sh OUT_DIR   (the caller owns OUT_DIR; it is created if missing)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
out=$1
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ! file -b "$busybox" | grep 'statically linked' >/dev/null; then
    echo "busybox-rootfs: Debian's busybox-static is needed at $busybox: apt-get install busybox-static (scripts/setup.sh does)" >&2
    exit 1
fi
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

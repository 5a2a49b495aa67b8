#!/usr/bin/env bash
# Builds the etcd image (Dockerfile.busybox) with podman, without any image registry:
#   - the base: scripts/busybox-rootfs.sh's tree (Debian's busybox-static) `podman import`ed
#     as BUSYBOX_IMAGE (localhost/etcdtools/busybox:<hash of the tree>);
#   - our static binaries (scripts/build-static.sh) as --build-context tools-bin=DIR, so no
#     rust: image is needed;
#   - etcd binaries (scripts/fetch-etcd.sh) as --build-context etcd-bin=DIR, and the shared
#     libraries the dynamically linked ones need (scripts/shared-libs.sh: Debian's 3.4.23
#     links glibc) as --build-context etcd-libs=DIR.
# The image is tagged $IMAGE_REPO:build-<hash of every input>, which a rerun with the same
# inputs reuses instead of building again, and $IMAGE_REPO:<newest bundled>-$REVISION.
# Prints on stdout (progress goes to stderr):
#   image <the build-... tag>
#   id <image id>
#   size <bytes> (<MB> MB)
# Env: BUNDLED_ETCD_VERSIONS (default "3.4.23 3.5.1": one per minor, what the manifests and
# tests use), IMAGE_REPO (default localhost/etcdtools/etcd), REVISION (default 0),
# STATIC_BIN_DIR and ETCD_BIN_DIR (default: built/fetched), CONTAINERS_CONF (default:
# image/containers.conf; the machine's /etc/containers is never written).
# Builds are serialised by a lock file (podman's image store is machine-wide), and build tags
# of IMAGE_REPO other than the newest three are removed.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "image: $*" >&2; }

export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/image/containers.conf}
command -v podman >/dev/null || {
    log "podman is needed (Debian's podman, buildah, runc, catatonit: ./scripts/setup.sh installs them)"
    exit 1
}
versions=${BUNDLED_ETCD_VERSIONS:-3.4.23 3.5.1}
image_repo=${IMAGE_REPO:-localhost/etcdtools/etcd}
revision=${REVISION:-0}
bins=${STATIC_BIN_DIR:-$("$repo/scripts/build-static.sh" amd64)}
etcd_dir=${ETCD_BIN_DIR:-$("$repo/scripts/fetch-etcd.sh")}

work=$(mktemp -d "${TMPDIR:-/tmp}/etcdtools-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The build contexts: exactly what goes in, so the content hash below covers it all.
mkdir -p "$work/tools-bin" "$work/etcd-bin" "$work/etcd-libs"
for b in $(awk '$1 == "bin" { print $2 }' "$repo/image/layout.txt"); do
    [ -f "$bins/$b" ] || { log "$bins/$b does not exist (scripts/build-static.sh builds it)"; exit 1; }
    cp "$bins/$b" "$work/tools-bin/"
done
for v in $versions; do
    for tool in etcd etcdctl etcdutl; do
        src=$etcd_dir/$tool-$v
        if [ ! -f "$src" ]; then
            # etcdutl exists from 3.5 on; install-layout.sh names it if it is missing there.
            [ "$tool" = etcdutl ] && continue
            log "$src does not exist (BUNDLED_ETCD_VERSIONS=\"$versions\"; scripts/fetch-etcd.sh fetches what this machine can have)"
            exit 1
        fi
        ln "$src" "$work/etcd-bin/" 2>/dev/null || cp -p "$src" "$work/etcd-bin/"
    done
done
"$repo/scripts/shared-libs.sh" "$work/etcd-libs" "$work"/etcd-bin/*
"$repo/scripts/busybox-rootfs.sh" "$work/base"

# A tar stream that depends only on names, contents and modes.
det_tar() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - "$@"; }
det_tar -C "$work/base" . >"$work/base.tar"
base_tag=localhost/etcdtools/busybox:$(sha256sum <"$work/base.tar" | cut -c1-16)
key=$(
    {
        echo "versions=$versions base=$base_tag"
        for c in tools-bin etcd-bin etcd-libs; do
            echo "$c $(det_tar -C "$work/$c" . | sha256sum)"
        done
        det_tar -C "$repo" Dockerfile.busybox .dockerignore image scripts/migrate-if-needed.sh | sha256sum
    } | sha256sum | cut -c1-16
)
tag=$image_repo:build-$key
newest=$(for v in $versions; do echo "$v"; done | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)

exec 9>"${TMPDIR:-/tmp}/etcdtools-image.lock"
flock 9
if podman image exists "$tag"; then
    log "up to date: $tag"
else
    if ! podman image exists "$base_tag"; then
        log "importing the busybox base as $base_tag"
        podman import --change 'CMD ["sh"]' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            "$work/base.tar" "$base_tag" >/dev/null
    fi
    log "building $tag (etcd $versions)"
    start=$(date +%s)
    # --pull=never: a stage that would need a registry fails instead of reaching out.
    podman build --pull=never --network=none --layers=false --platform linux/amd64 \
        -f "$repo/Dockerfile.busybox" \
        --build-arg BUSYBOX_IMAGE="$base_tag" \
        --build-arg BUNDLED_ETCD_VERSIONS="$versions" \
        --build-context tools-bin="$work/tools-bin" \
        --build-context etcd-bin="$work/etcd-bin" \
        --build-context etcd-libs="$work/etcd-libs" \
        -t "$tag" "$repo" >&2
    log "built in $(($(date +%s) - start)) s"
fi
podman tag "$tag" "$image_repo:$newest-$revision"
# Older builds of this repo name: keep the newest three (a concurrent run may still use one).
older=$(podman images --format '{{.CreatedAt}}|{{.Repository}}:{{.Tag}}' --filter "reference=$image_repo" |
    { grep -F "|$image_repo:build-" || true; } | { grep -vF "|$tag" || true; } |
    sort -r | tail -n +3 | cut -d'|' -f2)
for old in $older; do
    podman rmi "$old" >/dev/null 2>&1 && log "removed the older $old" || true
done
id=$(podman image inspect --format '{{.Id}}' "$tag")
size=$(podman image inspect --format '{{.Size}}' "$tag")
echo "image $tag"
echo "id $id"
echo "size $size ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }') MB)"

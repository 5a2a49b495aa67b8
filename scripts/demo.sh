#!/usr/bin/env bash
# The main job end to end on real etcd, in about a minute, on a fresh machine:
#   1. first boot: migrate-if-needed.sh on an empty data dir writes version.txt (3.5.1)
#   2. etcd 3.5.1 serves some keys; etcd-version-monitor in front of it rewrites its metrics
#   3. etcd stops; migrate-if-needed.sh downgrades the data to 3.4.23; etcd 3.4.23 serves it
#   4. rollback2 turns a copy into an etcd 2 (v2 store) data dir; etcd-inspect snap shows it
# Sets everything up first (scripts/setup.sh, the static build), cleans up after itself and
# leaves no process behind. A step whose binary is not there fails loudly, naming it.
# Env: DEMO_KEEP=1 keeps the work dir; DEMO_SKIP_SETUP=1 skips scripts/setup.sh;
# STATIC_BIN_DIR uses those binaries instead of building them; TMPDIR holds the work dir.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bold=$(printf '\033[1m') dim=$(printf '\033[2m') red=$(printf '\033[31m') off=$(printf '\033[0m')
[ -t 1 ] || bold="" dim="" red="" off=""
step() { echo; echo "${bold}==> $*${off}"; }
say() { echo "    $*"; }
show() { sed 's/^/    | /'; }
fail() { echo "${red}demo: $*${off}" >&2; exit 1; }

started=$(date +%s)
if [ "${DEMO_SKIP_SETUP:-0}" != 1 ]; then
    step "Setting up (scripts/setup.sh: Debian packages, Rust musl target, real etcd binaries)"
    ./scripts/setup.sh 2>&1 | show
fi
etcd_dir=$(./scripts/fetch-etcd.sh)
if [ -n "${STATIC_BIN_DIR:-}" ]; then
    bins=$STATIC_BIN_DIR
else
    step "Building our static binaries (scripts/build-static.sh)"
    bins=$(./scripts/build-static.sh)
fi
say "our static binaries: $bins"

missing=()
need() { # NAME...: fails loudly when one of our binaries or scripts is not there (with
    # DEMO_ALLOW_MISSING=1 the step is skipped instead, and the demo still exits 1 at the end)
    local n p ok=0
    for n in "$@"; do
        p="$bins/$n"
        [ "$n" = migrate-if-needed.sh ] && p="$repo/scripts/$n"
        if [ ! -x "$p" ]; then
            echo "${red}demo: MISSING $p: this step cannot run (not written or not merged yet)${off}" >&2
            missing+=("$n")
            ok=1
        fi
    done
    [ "$ok" = 0 ] || [ "${DEMO_ALLOW_MISSING:-0}" = 1 ] || exit 1
    return "$ok"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/etcd-demo.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "demo: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
client_port=$(free_port) peer_port=$(free_port) monitor_port=$(free_port)
while [ "$peer_port" = "$client_port" ]; do peer_port=$(free_port); done
while [ "$monitor_port" = "$client_port" ] || [ "$monitor_port" = "$peer_port" ]; do monitor_port=$(free_port); done
url=http://127.0.0.1:$client_port
data=$work/var/etcd/data
mkdir -p "$work/var/etcd"
name=etcd-demo

start_etcd() { # VERSION
    "$etcd_dir/etcd-$1" --name "$name" --data-dir "$data" \
        --listen-client-urls "$url" --advertise-client-urls "$url" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "$name=http://127.0.0.1:$peer_port" >"$work/etcd-$1.log" 2>&1 &
    etcd_pid=$!
    pids+=("$etcd_pid")
    local i
    for i in $(seq 1 200); do
        if curl -fsS "$url/health" 2>/dev/null | grep '"health":"true"' >/dev/null; then
            say "etcd $1 serves at $url (pid $etcd_pid)"
            return 0
        fi
        kill -0 "$etcd_pid" 2>/dev/null || { tail -n 20 "$work/etcd-$1.log" >&2; fail "etcd $1 exited"; }
        sleep 0.05
    done
    fail "etcd $1 not healthy after 10 s; its log: $work/etcd-$1.log"
}
stop_pid() { # PID: SIGTERM and wait
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local p keep=()
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    pids=("${keep[@]+"${keep[@]}"}")
}
etcdctl() { ETCDCTL_API=3 "$etcd_dir/etcdctl-$ctl_version" --endpoints "$url" "$@"; }

# The environment a Kubernetes static-pod manifest gives migrate-if-needed.sh.
migrate_env=(
    TARGET_STORAGE=etcd3
    DATA_DIRECTORY="$data"
    ETCD_NAME="$name"
    INITIAL_CLUSTER="$name=http://127.0.0.1:$peer_port"
    LISTEN_PEER_URLS="http://127.0.0.1:$peer_port"
    INITIAL_ADVERTISE_PEER_URLS="http://127.0.0.1:$peer_port"
    DO_NOT_MOVE_BINARIES=true
)
run_migrate() { # TARGET_VERSION
    # migrate-if-needed.sh finds migrate beside itself, so run a copy next to our binaries.
    # --port/--peer-port: free ports for the etcd migrate starts (defaults: 18629, 2380).
    install -m 0555 "$repo/scripts/migrate-if-needed.sh" "$work/bin/migrate-if-needed.sh"
    local rc=0
    env -i PATH="$PATH" "${migrate_env[@]}" TARGET_VERSION="$1" \
        "$work/bin/migrate-if-needed.sh" --bin-dir "$etcd_dir" \
        --port "$client_port" --peer-port "$peer_port" >"$work/migrate-$1.log" 2>&1 || rc=$?
    # Its log without timestamps, module names and the flag-defaulting chatter.
    sed -E 's/^[0-9TZ:.-]+ +//; s/ *\[[A-Za-z_:]+\]//' "$work/migrate-$1.log" |
        grep -vE 'unset - |^INFO +running |^INFO +starting ' | show
    return "$rc"
}
mkdir -p "$work/bin"
for b in migrate rollback2 etcd-inspect etcd-version-monitor; do
    [ -x "$bins/$b" ] && ln -s "$bins/$b" "$work/bin/$b"
done

# ---------------------------------------------------------------------------------------------
step "1. First boot: migrate-if-needed.sh on an empty data dir (TARGET_VERSION=3.5.1)"
if need migrate migrate-if-needed.sh; then
    run_migrate 3.5.1 || fail "migrate-if-needed.sh failed on an empty data dir"
    say "version.txt: $(cat "$data/version.txt")"
fi

# ---------------------------------------------------------------------------------------------
step "2. etcd 3.5.1 with some keys, etcd-version-monitor in front of it"
ctl_version=3.5.1
start_etcd 3.5.1
for ns in default kube-system; do
    etcdctl put "/registry/namespaces/$ns" "{\"kind\":\"Namespace\",\"name\":\"$ns\"}" >/dev/null
done
for i in 1 2 3; do
    etcdctl put "/registry/pods/default/web-$i" "{\"kind\":\"Pod\",\"name\":\"web-$i\"}" >/dev/null
done
etcdctl put /registry/configmaps/kube-system/demo "hello from 3.5.1" >/dev/null
etcdctl put /registry/pods/default/web-gone "deleted below" >/dev/null
etcdctl del /registry/pods/default/web-gone >/dev/null
say "keys in etcd 3.5.1:"
etcdctl get --prefix /registry --keys-only | grep . | show
keys_before=$(etcdctl get --prefix /registry --keys-only | grep . | sort)

if need etcd-version-monitor; then
    "$bins/etcd-version-monitor" --listen-address "127.0.0.1:$monitor_port" \
    --etcd-version-scrape-uri "$url/version" --etcd-metrics-scrape-uri "$url/metrics" \
    >"$work/monitor.log" 2>&1 &
    monitor_pid=$!
    pids+=("$monitor_pid")
    for i in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$monitor_port/healthz" >/dev/null 2>&1 && break
    kill -0 "$monitor_pid" 2>/dev/null || { cat "$work/monitor.log" >&2; fail "etcd-version-monitor exited"; }
    sleep 0.05
    done
    metrics=$(curl -fsS "http://127.0.0.1:$monitor_port/metrics") || fail "no /metrics from etcd-version-monitor"
    say "curl http://127.0.0.1:$monitor_port/metrics ($(grep -c '^# TYPE' <<<"$metrics") metric families; a few lines):"
    {
    grep -E '^etcd_version_info' <<<"$metrics"
    grep -E '^etcd_grpc_requests_total\{' <<<"$metrics" | grep -E 'method="(Put|Range|DeleteRange)"' | sed -n 1,3p
    grep -E '^grpc_server_handled_total\{' <<<"$metrics" | grep 'grpc_code="OK",grpc_method="Put"' | sed -n 1p
    grep -E '^etcd_version_monitor_up' <<<"$metrics"
    } | show
    say "${dim}(etcd_grpc_requests_total is the 3.0-style name the original monitor derived from grpc_server_handled_total)${off}"
    stop_pid "$monitor_pid"
fi

step "3. Stop etcd 3.5.1; migrate-if-needed.sh with TARGET_VERSION=3.4.23 (a downgrade)"
stop_pid "$etcd_pid"
if need migrate migrate-if-needed.sh; then
    say "version.txt before: $(cat "$data/version.txt")"
    t0=$(date +%s%N)
    run_migrate 3.4.23 || fail "migrate-if-needed.sh failed to downgrade to 3.4.23"
    say "version.txt after:  $(cat "$data/version.txt")  (migration took $((($(date +%s%N) - t0) / 1000000)) ms)"
    ctl_version=3.4.23
    start_etcd 3.4.23
    say "keys served by etcd $(curl -fsS "$url/version" | sed 's/.*"etcdserver":"\([^"]*\)".*/\1/'):"
    etcdctl get --prefix /registry | paste - - | show
    keys_after=$(etcdctl get --prefix /registry --keys-only | grep . | sort)
    [ "$keys_after" = "$keys_before" ] || fail "etcd 3.4.23 does not serve the keys 3.5.1 had"
    say "all $(wc -l <<<"$keys_after") keys are there, the deleted one is not"
    stop_pid "$etcd_pid"
fi

step "4. rollback2 a copy of the data dir to an etcd 2 (v2 store) data dir"
if need rollback2 etcd-inspect; then
    mkdir -p "$work/rollback"
    cp -a "$data" "$work/rollback/data"
    rm -f "$work/rollback/data/version.txt"
    "$bins/rollback2" --data-dir "$work/rollback/data" --ttl 1h 2>&1 | show
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail "rollback2 failed"
    say "etcd-inspect snap of the result:"
    "$bins/etcd-inspect" snap "$work/rollback/data" 2>&1 | show
    [ "${PIPESTATUS[0]}" -eq 0 ] || fail "etcd-inspect snap failed"
fi

if [ ${#missing[@]} -gt 0 ]; then
    fail "INCOMPLETE: skipped the steps that need: ${missing[*]}"
fi
step "Done in $(($(date +%s) - started)) s; cleaning up (no process left behind)"

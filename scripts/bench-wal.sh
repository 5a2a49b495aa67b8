#!/usr/bin/env bash
# etcd-inspect on a WAL of two segments (~128 MB) made by real etcd 3.4.23: wall time, MB/s and
# max RSS of `wal` (from the snapshot), `wal --all --json` (every entry), `check` and `version`.
# Figures only, no assertions. Needs curl, base64 and /usr/bin/time.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${ETCD_BIN_DIR:-$repo/.cache/etcd-bin}
cargo build --release --quiet --bin etcd-inspect --manifest-path "$repo/Cargo.toml"
inspect=$repo/target/release/etcd-inspect
work=$(mktemp -d)
etcd_pid=
cleanup() {
    [ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null && wait "$etcd_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
cp_port=$(port); pp_port=$(port)
url=http://127.0.0.1:$cp_port
"$bin_dir/etcd-3.4.23" --name bench --data-dir "$work/data" --snapshot-count 10 \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls "http://127.0.0.1:$pp_port" --initial-advertise-peer-urls "http://127.0.0.1:$pp_port" \
    --initial-cluster "bench=http://127.0.0.1:$pp_port" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
for _ in $(seq 100); do curl -sf "$url/health" >/dev/null && break; sleep 0.1; done
head -c 1500000 /dev/zero | tr '\0' x | base64 -w0 >"$work/value.b64"
for i in $(seq -w 0 44); do
    printf '{"key":"%s","value":"%s"}' "$(printf /big/%s "$i" | base64 -w0)" "$(cat "$work/value.b64")" >"$work/put.json"
    curl -sf -X POST --data-binary @"$work/put.json" "$url/v3/kv/put" >/dev/null
done
kill "$etcd_pid"; wait "$etcd_pid" 2>/dev/null || true; etcd_pid=
wal_bytes=$(cat "$work"/data/member/wal/*.wal | wc -c)
echo "WAL: $(ls "$work"/data/member/wal/*.wal | wc -l) segments, $wal_bytes bytes"
for args in "wal" "wal --all --json" "check" "version"; do
    # shellcheck disable=SC2086
    /usr/bin/time -f "%e %M" -o "$work/time" "$inspect" $args "$work/data" >/dev/null || true
    read -r secs rss_kb <"$work/time"
    mbps=$(echo "scale=1; $wal_bytes / 1000000 / ($secs + 0.001)" | bc)
    printf '%-18s %6.2f s  %7s MB/s of WAL  max RSS %6d KB\n' "$args" "$secs" "$mbps" "$rss_kb"
done

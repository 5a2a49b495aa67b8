#!/usr/bin/env bash
# rollback2 on 200,000 keys of 500 bytes (a db of ~138 MB, made once by real etcd 3.4.23 into
# .cache/bench/rollback-200k via the JSON gateway, txns of 128 puts). Prints wall time and max
# RSS of rollback2 (on a fresh copy each run), of its --dry-run (read + check + convert, no
# writes) and of reading the db file alone, and the ratios. Targets: < 1 s, < 300 MB RSS
# (the Go original: 3.7-4.4 s, 0.9-1.1 GB). Asserts nothing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
runs=${RUNS:-3}
keys=${KEYS:-200000}
bench="$repo/.cache/bench"
src="$bench/rollback-${keys}"
bin_dir=${ETCD_BIN_DIR:-$repo/.cache/etcd-bin}
etcd="$bin_dir/etcd-3.4.23"
# The floor both must pay: reading the whole db once. etcdutl (3.5.x) `snapshot status` does it
# (bbolt walk + hash of every key/value), so rollback2 is measured against it on the same db:
# the oldest and the newest 3.5 here (their Go toolchains differ: 3.5.16+ take a third of the
# time of 3.5.0/3.5.1 on this db).
etcdutl=$(ls "$bin_dir"/etcdutl-3.5.* 2>/dev/null | sort -V | tail -1)
etcdutl_old=$(ls "$bin_dir"/etcdutl-3.5.* 2>/dev/null | sort -V | head -1)
command -v /usr/bin/time >/dev/null || { echo "bench-rollback: needs GNU time (/usr/bin/time)" >&2; exit 1; }

cargo build --release --locked --bin rollback2 >&2
bin="$repo/target/release/rollback2"

free_port() { python3 - 2>/dev/null <<'PY' || shuf -i 20000-60000 -n 1
import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])
PY
}

generate() {
    local tmp="$src.tmp" cport pport pid
    rm -rf "$tmp"; mkdir -p "$tmp"
    cport=$(free_port); pport=$(free_port)
    "$etcd" --name bench --data-dir "$tmp/data" \
        --listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
        --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
        --initial-cluster "bench=http://127.0.0.1:$pport" --quota-backend-bytes=4294967296 \
        >"$tmp/etcd.log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null || true' EXIT
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$cport/health" >/dev/null 2>&1 && break
        sleep 0.1
    done
    # Keys "/registry/bench-keys/NNNNNN": the 21-byte prefix and each 3-digit group are whole
    # base64 blocks, so a key's base64 is a concatenation of precomputed pieces.
    local prefix val i hi lo body n start
    prefix=$(printf '/registry/bench-keys/' | base64 -w0)
    val=$(head -c 500 /dev/zero | tr '\0' 'v' | base64 -w0)
    local -a t
    for i in $(seq 0 999); do t[i]=$(printf '%03d' "$i" | base64 -w0); done
    echo "bench-rollback: loading $keys keys of 500 bytes into etcd 3.4.23 (once)..." >&2
    start=$(date +%s)
    n=0
    while [ "$n" -lt "$keys" ]; do
        body='{"success":['
        for ((i = n; i < n + 128 && i < keys; i++)); do
            hi=$((i / 1000)); lo=$((i % 1000))
            [ "$i" -gt "$n" ] && body+=','
            body+="{\"request_put\":{\"key\":\"$prefix${t[hi]}${t[lo]}\",\"value\":\"$val\"}}"
        done
        body+=']}'
        curl -sf -X POST "http://127.0.0.1:$cport/v3/kv/txn" -H 'Content-Type: application/json' \
            --data-binary "$body" >/dev/null
        n=$i
    done
    echo "bench-rollback: loaded in $(( $(date +%s) - start )) s" >&2
    kill -TERM "$pid"; wait "$pid" || true
    trap - EXIT
    mv "$tmp" "$src"
}

[ -d "$src/data/member" ] || generate

db="$src/data/member/snap/db"
db_mb=$(( $(stat -c %s "$db") / 1000000 ))
work="$bench/rollback-work"

measure() { # prints "wall_s maxrss_kb cpu_s" of the command; fails when the command fails
    local f="$bench/time.out"
    if ! /usr/bin/time -o "$f" -f '%e %M %U %S' "$@" >"$bench/cmd.out" 2>&1; then
        echo "bench-rollback: failed: $*" >&2; cat "$bench/cmd.out" >&2; exit 1
    fi
    tail -1 "$f" | awk '{ printf "%s %s %.2f\n", $1, $2, $3 + $4 }'
}

best() { sort -n | head -1; }

read_t=(); read_m=(); read_c=(); dry_t=(); dry_m=(); dry_c=(); full_t=(); full_m=(); full_c=()
utl_t=(); utl_m=(); utl_c=(); old_t=(); old_m=(); old_c=()
for r in $(seq "$runs"); do
    rm -rf "$work" "$work.rollback.backup"; mkdir -p "$(dirname "$work")"
    cp -a "$src/data" "$work"
    cat "$work/member/snap/db" "$work"/member/wal/* >/dev/null   # same page-cache state each run
    x=$(measure cat "$work/member/snap/db"); read -r t m c <<<"$x"; read_t+=("$t"); read_m+=("$m"); read_c+=("$c")
    if [ -n "$etcdutl" ]; then
        x=$(measure "$etcdutl" snapshot status "$work/member/snap/db" -w json); read -r t m c <<<"$x"
        utl_t+=("$t"); utl_m+=("$m"); utl_c+=("$c")
        x=$(measure "$etcdutl_old" snapshot status "$work/member/snap/db" -w json); read -r t m c <<<"$x"
        old_t+=("$t"); old_m+=("$m"); old_c+=("$c")
    fi
    x=$(measure "$bin" --data-dir "$work" --dry-run); read -r t m c <<<"$x"; dry_t+=("$t"); dry_m+=("$m"); dry_c+=("$c")
    x=$(measure "$bin" --data-dir "$work"); read -r t m c <<<"$x"; full_t+=("$t"); full_m+=("$m"); full_c+=("$c")
    grep -q 'Finished successfully' "$bench/cmd.out" || { echo "bench-rollback: no success line" >&2; exit 1; }
    grep -q . "$work"/member/snap/*.snap || { echo "bench-rollback: no result" >&2; exit 1; }
done
rm -rf "$work" "$work.rollback.backup"

pick() { printf '%s\n' "$@" | best; }
rt=$(pick "${read_t[@]}"); rm_=$(pick "${read_m[@]}"); rc=$(pick "${read_c[@]}")
dt=$(pick "${dry_t[@]}"); dm=$(pick "${dry_m[@]}"); dc=$(pick "${dry_c[@]}")
ft=$(pick "${full_t[@]}"); fm=$(pick "${full_m[@]}"); fc=$(pick "${full_c[@]}")
echo "rollback2, $keys keys x 500 B, db ${db_mb} MB, best of $runs runs (load average now: $(cut -d' ' -f1 /proc/loadavg)):"
printf '  %-36s %6.2f s wall %6.2f s cpu %6d MB max RSS\n' "read the db (cat > /dev/null)" "$rt" "$rc" $((rm_ / 1024))
printf '  %-36s %6.2f s wall %6.2f s cpu %6d MB max RSS\n' "rollback2 --dry-run (read+convert)" "$dt" "$dc" $((dm / 1024))
printf '  %-36s %6.2f s wall %6.2f s cpu %6d MB max RSS\n' "rollback2 (full: writes, fsync, swap)" "$ft" "$fc" $((fm / 1024))
if [ -n "$etcdutl" ]; then
    compare() { # name, wall, max RSS, cpu of one etcdutl
        printf '  %-36s %6.2f s wall %6.2f s cpu %6d MB max RSS\n' "$1 snapshot status" "$2" "$4" $(($3 / 1024))
        awk -v name="$1" -v f="$ft" -v d="$dt" -v u="$2" -v m="$fm" -v um="$3" -v fc="$fc" -v dc="$dc" -v uc="$4" 'BEGIN {
            printf "    rollback2 / %s: full %.2fx wall, %.2fx cpu; --dry-run %.2fx wall, %.2fx cpu; max RSS %.2fx (goal <= 1.0)\n", name, f / (u > 0 ? u : 0.01), fc / (uc > 0 ? uc : 0.01), d / (u > 0 ? u : 0.01), dc / (uc > 0 ? uc : 0.01), m / (um > 0 ? um : 1) }'
    }
    compare "$(basename "$etcdutl_old")" "$(pick "${old_t[@]}")" "$(pick "${old_m[@]}")" "$(pick "${old_c[@]}")"
    compare "$(basename "$etcdutl")" "$(pick "${utl_t[@]}")" "$(pick "${utl_m[@]}")" "$(pick "${utl_c[@]}")"
else
    echo "  etcdutl 3.5.x not in $bin_dir: no comparison (run ./scripts/fetch-etcd.sh)"
fi
awk -v f="$ft" -v r="$rt" -v m="$fm" -v fc="$fc" -v dc="$dc" -v rc="$rc" 'BEGIN {
    if (r > 0) printf "  ratio full / read-db: %.1fx wall; dry-run / read-db: %.1fx cpu\n", f / r, (rc > 0 ? dc / rc : 0);
    printf "  vs Go original (3.7-4.4 s, 0.9-1.1 GB): %.1fx faster, %.1fx less memory (midpoints)\n", 4.05 / (f > 0 ? f : 0.01), 1000 / (m / 1024);
    printf "  targets: < 1 s: %s, < 300 MB: %s\n", (f < 1 ? "met" : "MISSED"), (m / 1024 < 300 ? "met" : "MISSED") }'

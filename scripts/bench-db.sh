#!/usr/bin/env bash
# Full-scan speed and memory of our db reader against etcdutl, on one large db made once by
# real etcd and cached in .cache/bench. Prints figures and ratios; asserts nothing.
# Env: BENCH_DB_KEYS (default 1000000), BENCH_DB_VALUE_BYTES (default 700; ~1 GB at 1M keys).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
keys=${BENCH_DB_KEYS:-1000000}
value_bytes=${BENCH_DB_VALUE_BYTES:-700}
bins="$repo/.cache/etcd-bin"
db="$repo/.cache/bench/db-${keys}x${value_bytes}"
mkdir -p "$repo/.cache/bench"

cargo build --quiet --release --examples >&2
if [ ! -f "$db" ]; then
    echo "bench-db: making $db ($keys keys of $value_bytes bytes with etcd 3.5.1; takes minutes, cached)" >&2
    "$repo/target/release/examples/bench_db_make" "$bins/etcd-3.5.1" "$db.tmp" "$keys" "$value_bytes"
    mv "$db.tmp" "$db"
fi
size=$(stat -c %s "$db")
cat "$db" >/dev/null # same warm page cache for every contender

# measure NAME CMD...: runs CMD with stdout to /dev/null under /usr/bin/time -v; sets
# secs and rss_kb.
measure() {
    local name=$1; shift
    local log
    log=$(mktemp)
    /usr/bin/time -v "$@" >/dev/null 2>"$log" || { echo "bench-db: $name failed:" >&2; cat "$log" >&2; rm -f "$log"; return 1; }
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; print s}' "$log")
    rss_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
    rm -f "$log"
    printf '%-34s %8.2f s %9.1f MB/s %8.1f MB max RSS\n' "$name" "$secs" \
        "$(echo "$size / 1048576 / $secs" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)"
}

inspect="$repo/target/release/examples/inspect_db"
[ -x "$repo/target/release/etcd-inspect" ] && inspect_cmd=("$repo/target/release/etcd-inspect" db) || inspect_cmd=("$inspect")
echo "bench-db: $db: $(echo "$size / 1048576" | bc) MB, $keys keys"
measure "etcdutl-3.5.1 snapshot status" "$bins/etcdutl-3.5.1" snapshot status "$db" -w json
utl_secs=$secs utl_rss=$rss_kb
measure "ours: db --json (live keys)" "${inspect_cmd[@]}" "$db" --json
live_secs=$secs live_rss=$rss_kb
measure "ours: db --json --revisions" "${inspect_cmd[@]}" "$db" --json --revisions
rev_secs=$secs rev_rss=$rss_kb
printf 'ratio etcdutl/ours time: live %.2fx, revisions %.2fx (>1 = we are faster)\n' \
    "$(echo "$utl_secs / $live_secs" | bc -l)" "$(echo "$utl_secs / $rev_secs" | bc -l)"
printf 'ratio ours/etcdutl RSS: live %.2f, revisions %.2f\n' \
    "$(echo "$live_rss / $utl_rss" | bc -l)" "$(echo "$rev_rss / $utl_rss" | bc -l)"

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

cargo build --quiet --release --example bench_db_make --bin etcd-inspect >&2
if [ ! -f "$db" ]; then
    echo "bench-db: making $db ($keys keys of $value_bytes bytes with etcd 3.5.1; takes minutes, cached)" >&2
    "$repo/target/release/examples/bench_db_make" "$bins/etcd-3.5.1" "$db.tmp" "$keys" "$value_bytes"
    mv "$db.tmp" "$db"
fi
size=$(stat -c %s "$db")
cat "$db" >/dev/null # same warm page cache for every contender

# measure NAME CMD...: runs CMD with stdout to /dev/null under /usr/bin/time; prints wall and
# CPU (user+sys) seconds, MB/s by each, max RSS; sets cpu and rss_kb. CPU time is the fairer
# figure on a shared machine: wall time includes waiting for the CPU.
measure() {
    local name=$1; shift
    local log wall user sys
    log=$(mktemp)
    if ! /usr/bin/time -f '%e %U %S %M' -o "$log" "$@" >/dev/null 2>"$log.err"; then
        echo "bench-db: $name failed:" >&2; cat "$log.err" >&2; rm -f "$log" "$log.err"; return 1
    fi
    read -r wall user sys rss_kb <"$log"
    rm -f "$log" "$log.err"
    cpu=$(echo "$user + $sys" | bc -l)
    printf '%-32s wall %6.2f s (%7.1f MB/s)  cpu %6.2f s (%7.1f MB/s)  max RSS %7.1f MB\n' "$name" \
        "$wall" "$(echo "$size / 1048576 / $wall" | bc -l)" \
        "$cpu" "$(echo "$size / 1048576 / $cpu" | bc -l)" "$(echo "$rss_kb / 1024" | bc -l)"
    wall_s=$wall
}

inspect_cmd=("$repo/target/release/etcd-inspect" db)
echo "bench-db: $db: $(echo "$size / 1048576" | bc) MB, $keys keys; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2; do
    echo "round $round:"
    measure "etcdutl-3.5.1 snapshot status" "$bins/etcdutl-3.5.1" snapshot status "$db" -w json
    utl_cpu=$cpu utl_wall=$wall_s utl_rss=$rss_kb
    measure "ours: db --json (live keys)" "${inspect_cmd[@]}" "$db" --json
    live_cpu=$cpu live_wall=$wall_s live_rss=$rss_kb
    measure "ours: db --json --revisions" "${inspect_cmd[@]}" "$db" --json --revisions
    rev_cpu=$cpu rev_wall=$wall_s rev_rss=$rss_kb
    printf '  speed-up over etcdutl (>1 = faster): live keys cpu %.2fx wall %.2fx; revisions cpu %.2fx wall %.2fx\n' \
        "$(echo "$utl_cpu / $live_cpu" | bc -l)" "$(echo "$utl_wall / $live_wall" | bc -l)" \
        "$(echo "$utl_cpu / $rev_cpu" | bc -l)" "$(echo "$utl_wall / $rev_wall" | bc -l)"
    printf '  max RSS ours/etcdutl: live keys %.3f, revisions %.3f\n' \
        "$(echo "$live_rss / $utl_rss" | bc -l)" "$(echo "$rev_rss / $utl_rss" | bc -l)"
done

#!/usr/bin/env bash
# Benchmarks etcd-version-monitor (the static release binary) against one real etcd:
# scrape latency (median, p99) through the monitor vs straight from etcd, throughput with
# concurrent clients, the monitor's RSS idle and after 1000 scrapes, and the binary's size;
# then its threads and memory under loads (examples/bench-monitor-loads.rs).
# Prints figures and ratios; asserts nothing. Extra args go to examples/bench-monitor.rs
# (e.g. --extensive, --clients 8, --seconds 10).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
etcd_dir=$(./scripts/fetch-etcd.sh)
static_dir=$(./scripts/build-static.sh)
cargo build --quiet --release --locked --example bench-monitor --example bench-monitor-loads >&2
"$repo/target/release/examples/bench-monitor" \
    --monitor "$static_dir/etcd-version-monitor" \
    --etcd "$etcd_dir/etcd-${BENCH_ETCD_VERSION:-3.5.1}" "$@"
# Threads and memory under idle connections, too few descriptors, a huge header, big upstreams.
"$repo/target/release/examples/bench-monitor-loads" \
    --monitor "$static_dir/etcd-version-monitor" --etcd "$etcd_dir/etcd-3.5.1"

#!/usr/bin/env bash
# Benchmarks: prints figures and ratios, asserts nothing. Usage: scripts/bench.sh [PART...]
# Each part is scripts/bench-<part>.sh; with no argument all parts run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
"$repo/scripts/setup.sh"
parts=("$@")
if [ ${#parts[@]} -eq 0 ]; then
    for f in "$repo"/scripts/bench-*.sh; do
        [ -e "$f" ] || continue
        p=${f##*/bench-}; parts+=("${p%.sh}")
    done
fi
for p in "${parts[@]}"; do
    echo "== bench: $p"
    "$repo/scripts/bench-$p.sh"
done

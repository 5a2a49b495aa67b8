#!/bin/sh
# Kept for manifests that still call /usr/local/bin/migrate-if-needed.sh: everything (env
# fallbacks, defaults, the migration itself) is in the migrate binary. POSIX sh, runs under
# busybox ash. Uses the migrate beside this script, else /usr/local/bin/migrate; its exit
# status is migrate's.
set -eu
here=$(dirname "$0")
if [ -x "$here/migrate" ] && [ ! -d "$here/migrate" ]; then
    exec "$here/migrate" "$@"
fi
exec /usr/local/bin/migrate "$@"

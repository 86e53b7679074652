#!/bin/sh
# Stops the resident verdict program this checkout's bin/prebake started (src/runtime/resident.ts)
# for a state base (default /run/prebake): SIGTERM, after which it answers what it has taken and
# goes. `npm test` runs it at its end; a resident program of another install is left alone.
base=${1:-${PREBAKE_STATE_DIR:-/run/prebake}}
dist=$(cd "$(dirname "$0")/../dist" 2>/dev/null && pwd -P) || exit 0
{ read -r pid _ < "$base/resident.pid"; } 2>/dev/null || exit 0
case $pid in ''|*[!0-9]*) exit 0 ;; esac
for a in $(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -- '/dist$'); do
  [ "$(cd "$a" 2>/dev/null && pwd -P)" = "$dist" ] && kill -TERM "$pid" 2>/dev/null
done
exit 0

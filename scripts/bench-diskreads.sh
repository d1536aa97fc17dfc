#!/usr/bin/env bash
# GETs that need the disk, and what they do to the other connections of
# their event loop: kvbench fills 400,000 keys of 1,000 random bytes
# (~270 MB of tables after compression), the server restarts (tables not
# open), the tables are dropped from the OS page cache, then 32 kvbench
# clients GET random keys for 5 s while 2 others PING on the side.
#   bash scripts/bench-diskreads.sh [KVSERVER_BINARY ...]   (default bin/kvserver)
# With several binaries the data is written once and each binary is
# measured on a fresh copy. Needs bin/kvbench, redis-cli, python3.
# Loopback only; everything started here is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- bin/kvserver
work=$(mktemp -d)
port=28190
kp=""
cleanup() { [ -n "$kp" ] && kill "$kp" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
printf '[storage]\nblock_cache_bytes = "8MiB"\nsync = "none"\n' >"$work/c.toml"

start() { # binary dir
  "$1" -c "$work/c.toml" -listen 127.0.0.1:$port -admin off -dir "$2" >"$work/log" 2>&1 &
  kp=$!
  for _ in $(seq 100); do timeout 2 redis-cli -p $port ping >/dev/null 2>&1 && return; sleep 0.1; done
  echo "kvserver did not start"; cat "$work/log"; exit 1
}
stop() { kill "$kp"; wait "$kp" || true; kp=""; }

start "$1" "$work/data"
timeout 600 bin/kvbench -addr 127.0.0.1:$port -keys 400000 -value-size 1000 -prefill -ops get -duration 1s -warmup 0s >/dev/null
stop
echo "tables: $(du -sh "$work/data" | cut -f1)"
for bin in "$@"; do
  rm -rf "$work/run"; cp -a "$work/data" "$work/run"
  start "$bin" "$work/run"
  sync
  python3 -c "
import glob, os
for f in glob.glob('$work/run/*.sst'):
    fd = os.open(f, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
"
  echo "== $bin"
  timeout 60 bin/kvbench -addr 127.0.0.1:$port -keys 400000 -ops get -clients 32 -duration 5s -warmup 0s 2>/dev/null | grep -E '^ +(op|get) ' &
  gp=$!
  timeout 60 bin/kvbench -addr 127.0.0.1:$port -ops ping -clients 2 -duration 5s -warmup 0s 2>/dev/null | grep -E '^ +ping '
  wait $gp
  stop
done

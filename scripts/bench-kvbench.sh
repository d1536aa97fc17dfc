#!/usr/bin/env bash
# kvserver vs redis-server measured by kvbench in one run, alternating:
# `kvbench -clients 512 -ops put,get`, unpipelined and -pipeline 16.
#   kvserver sync=none (pipe and RESP) vs redis-server without persistence,
#   kvserver sync=always (pipe)        vs redis-server appendfsync always.
# Prints one table row per run. Loopback only; stops what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${DUR:-10s}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
kvport=28380; rport=26390

run() { # label addr proto pipeline
  local line
  line=$(./bin/kvbench -addr "$2" -proto "$3" -clients 512 -pipeline "$4" -ops put,get -prefill -keys 100000 \
    -duration "$DUR" -warmup 2s 2>/dev/null | awk '/^  (put|get|all) /{printf "%s %s p99=%s ms; ", $1, $4, $8}')
  echo "| $1 | $3 | $4 | $line |"
}
echo "| target | proto | pipeline | ops/s and p99 (put; get; all) |"
echo "|---|---|---:|---|"
for sync in none always; do
  for P in 1 16; do
    rm -rf "$work/kv"; ./bin/kvserver -listen 127.0.0.1:$kvport -admin off -dir "$work/kv" -sync $sync >/dev/null 2>&1 &
    kv=$!; pids+=($kv); sleep 1
    run "kvserver sync=$sync" 127.0.0.1:$kvport pipe "$P"
    [ $sync = none ] && run "kvserver sync=$sync" 127.0.0.1:$kvport resp "$P"
    kill $kv; wait $kv 2>/dev/null || true
    rm -rf "$work/r"; mkdir -p "$work/r"
    if [ $sync = none ]; then ropts=(--save "" --appendonly no); rl="redis no persistence"; else ropts=(--save "" --appendonly yes --appendfsync always); rl="redis AOF always"; fi
    redis-server --port $rport --bind 127.0.0.1 --dir "$work/r" "${ropts[@]}" >/dev/null 2>&1 &
    r=$!; pids+=($r); sleep 1
    run "$rl" 127.0.0.1:$rport resp "$P"
    kill $r; wait $r 2>/dev/null || true
  done
done

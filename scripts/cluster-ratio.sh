#!/usr/bin/env bash
# Issue 5's second target, measured by alternation: for each of PAIRS
# rounds, one standalone kvserver (sync = always, otherwise its defaults)
# and then the three-node sample cluster (conf/node{1,2,3}.toml), each on
# fresh data, each under `kvbench -clients $CLIENTS -ops $OPS` for
# DURATION; prints both put rates and their ratio per round, and the
# median ratio at the end. Alternating a few seconds apart keeps the VM's
# changes of pace out of the ratio, which a single run of
# scripts/bench-cluster.sh (the two measured minutes apart) does not.
#
#   bash scripts/cluster-ratio.sh                 # OPS=put,get PAIRS=5
#   OPS=put PAIRS=8 bash scripts/cluster-ratio.sh
#
# Refuses to start while the ports it uses are taken. Loopback only;
# everything started here is stopped, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sample-cluster.sh
PAIRS=${PAIRS:-5}
CLIENTS=${CLIENTS:-512}
OPS=${OPS:-put,get}
DURATION=${DURATION:-15s}
[ -x bin/kvserver ] && [ -x bin/kvbench ] && [ -x bin/kvcli ] || make build >/dev/null

pids=()
work=
out=$(mktemp -d) # kvbench's reports, kept to the end
stop() { # the servers of the run, and their data
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  [ -z "$work" ] || rm -rf "$work"
  work=
}
trap 'stop; rm -rf "$out"' EXIT

if ss -ltn | grep -qE ':(8080|8081|8082|8090|7001|7002|7003|9080|9081|9082) '; then
  echo "ports 8080-8082, 8090, 7001-7003 or 9080-9082 in use: stop what holds them first" >&2
  exit 1
fi

puts() { # kvbench output file: puts/s without separators
  awk '$1 == "put" { gsub(",", "", $4); print $4 }' "$1"
}

bench() { # addresses output
  ./bin/kvbench -addr "$1" -clients "$CLIENTS" -ops "$OPS" -duration "$DURATION" -warmup 2s >"$2" 2>&1 || true
  [ -n "$(puts "$2")" ] || { echo "kvbench against $1 failed:" >&2; tail -3 "$2" >&2; exit 1; }
}

ratios=()
for round in $(seq "$PAIRS"); do
  work=$(mktemp -d)
  ./bin/kvserver -listen 127.0.0.1:8090 -admin off -dir "$work/standalone" -sync always >"$work/standalone.log" 2>&1 &
  pids=($!)
  for _ in $(seq 50); do ./bin/kvcli -p 8090 ping >/dev/null 2>&1 && break; sleep 0.1; done
  bench 127.0.0.1:8090 "$out/standalone"
  stop

  work=$(mktemp -d)
  start_sample_cluster ./bin/kvserver "$work"
  bench 127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082 "$out/cluster"
  s=$(puts "$out/standalone")
  c=$(puts "$out/cluster")
  r=$(awk -v s="$s" -v c="$c" 'BEGIN { printf "%.2f", c / s }')
  ratios+=("$r")
  printf 'round %d  -ops %s  standalone %7d puts/s  cluster %7d puts/s  ratio %s\n' "$round" "$OPS" "$s" "$c" "$r"
  stop
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{ r[NR] = $1 } END {
  m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
  printf "median ratio %.3f over %d rounds (min %s, max %s)\n", m, NR, r[1], r[NR]
}'

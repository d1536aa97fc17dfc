#!/usr/bin/env bash
# Alternating A/B of kvserver builds on the three-node sample layout: for
# each of PAIRS rounds, every binary given runs in turn on fresh data
# (conf/node{1,2,3}.toml, data under a temp dir) under
# `kvbench -clients $CLIENTS -ops $OPS` (default put) against all three
# nodes. Per run it prints puts/s (and gets/s), the puts' p99, the nodes'
# CPU per request (from /proc/PID/stat over 8 s
# of the run, seconds 4-12 after the start, so DURATION is at least 12s),
# loopback TCP segments per request (/proc/net/snmp, the same 8 s: client
# requests and replies, raft messages, their acknowledgements) and raft-log
# fsyncs per second per node. On a noisy machine, compare
# medians of many pairs, not single runs.
#
#   bash scripts/cluster-ab.sh /tmp/kv-old /tmp/kv-new        # PAIRS=5
#   PAIRS=8 CLIENTS=64 DURATION=20s bash scripts/cluster-ab.sh A B
#
# Refuses to start while the sample ports are taken (a leftover cluster
# would answer instead of the build under test). Loopback only; everything
# started here is stopped, also when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sample-cluster.sh
[ $# -ge 1 ] || { echo "usage: $0 KVSERVER_BINARY..." >&2; exit 2; }
PAIRS=${PAIRS:-5}
CLIENTS=${CLIENTS:-512}
OPS=${OPS:-put}
DURATION=${DURATION:-12s}
case "$DURATION" in
  [0-9]*s) [ "${DURATION%s}" -ge 12 ] || { echo "DURATION must be at least 12s" >&2; exit 2; } ;;
esac
[ -x bin/kvbench ] && [ -x bin/kvcli ] || make build >/dev/null

pids=()
work=
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT

ports_busy() { ss -ltn | grep -qE ':(8080|8081|8082|7001|7002|7003|9080|9081|9082) '; }
node_cpu() { # clock ticks used by the nodes so far
  local c=0 p
  for p in "${pids[@]}"; do c=$((c + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
  echo "$c"
}
segs() { # TCP segments sent so far, all of loopback (the nodes' and kvbench's)
  awk '/^Tcp:/ { n++ } /^Tcp:/ && n == 2 { print $12 }' /proc/net/snmp
}
syncs() { # raft-log fsyncs so far, one line per node
  local p
  for p in 0 1 2; do curl -s "127.0.0.1:908$p/metrics" | awk '$1=="kv_raft_log_syncs_total"{print $2}'; done
}

run() { # binary
  if ports_busy; then echo "sample ports in use: stop what holds them first" >&2; exit 1; fi
  work=$(mktemp -d)
  pids=()
  start_sample_cluster "$1" "$work"
  ./bin/kvbench -addr 127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082 -clients "$CLIENTS" -ops "$OPS" \
    -duration "$DURATION" -warmup 2s >"$work/out" 2>&1 &
  local bp=$! c0 c1 s0 s1
  sleep 4
  c0=$(node_cpu); s0=$(syncs); g0=$(segs)
  sleep 8
  c1=$(node_cpu); s1=$(syncs); g1=$(segs)
  wait "$bp" || true
  local fsyncs
  fsyncs=$(paste <(echo "$s0") <(echo "$s1") | awk '{printf "%.0f ", ($2-$1)/8}')
  # kvbench's table: op count errors ops/s mean p50 p90 p99 ...
  # Node CPU is per request of any kind (the "all" row).
  awk -v name="$(basename "$1")" -v t=$((c1 - c0)) -v g=$((g1 - g0)) -v hz="$(getconf CLK_TCK)" -v fs="$fsyncs" '
    $1 == "put" { puts = $4; p99 = $8 }
    $1 == "get" { gets = "  " $4 " gets/s" }
    $1 == "all" { n = $4; gsub(",", "", n)
      printf "%-16s %8s puts/s%s  put p99 %7s ms  node CPU %5.1f us/op  TCP segments/op %4.2f  fsyncs/s per node %s\n", name, puts, gets, p99, t * 1e6 / hz / 8 / n, g / 8 / n, fs }
  ' "$work/out"
  grep -q '^  put' "$work/out" || { echo "$(basename "$1"): kvbench failed:"; tail -3 "$work/out"; }
  cleanup
  pids=()
  work=
}

for _ in $(seq "$PAIRS"); do
  for b in "$@"; do run "$b"; done
done

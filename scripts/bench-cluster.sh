#!/usr/bin/env bash
# Cluster benchmark, one run, side by side on this machine:
#   1. a three-member etcd cluster (Debian's etcd-server) measured with
#      etcd's own tool, `etcdctl check perf --load=xl` (the anchor);
#   2. the three-node kvserver cluster (conf/node{1,2,3}.toml layout, fresh
#      data under a temp dir) with `kvbench -clients 512 -ops put,get`, keys
#      sent to their shard's leader (-route, the default), then put without;
#   3. one standalone kvserver (sync = always) with the same kvbench load.
# The cluster and the standalone server are measured minutes apart here;
# scripts/cluster-ratio.sh alternates them for the ratio of the two.
# TLS=1 runs the cluster with mutual TLS on the raft port (certificates
# from scripts/peer-certs.sh).
# Installs etcd-server/etcd-client with apt when missing. Loopback only;
# everything started here is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/sample-cluster.sh
DUR=${DUR:-20s}
CLIENTS=${CLIENTS:-512}
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

echo "== etcd: 3 members, etcdctl check perf --load=xl"
cluster="e1=http://127.0.0.1:32380,e2=http://127.0.0.1:32381,e3=http://127.0.0.1:32382"
for i in 0 1 2; do
  ETCD_UNSUPPORTED_ARCH= etcd --name e$((i+1)) --data-dir "$work/etcd$i" \
    --listen-client-urls http://127.0.0.1:3237$i --advertise-client-urls http://127.0.0.1:3237$i \
    --listen-peer-urls http://127.0.0.1:3238$i --initial-advertise-peer-urls http://127.0.0.1:3238$i \
    --initial-cluster "$cluster" --initial-cluster-state new >"$work/etcd$i.log" 2>&1 &
  pids+=($!)
done
sleep 3
eps=http://127.0.0.1:32370,http://127.0.0.1:32371,http://127.0.0.1:32372
ETCDCTL_API=3 etcdctl --endpoints=$eps check perf --load=xl 2>&1 | tr '\r' '\n' | grep -E '^(PASS|FAIL)' || true
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()

echo "== kvserver: 3-node cluster${TLS:+ (raft over mutual TLS)}, kvbench -clients $CLIENTS -ops put,get"
tls=(-e '')
if [ "${TLS:-}" = 1 ]; then
  bash scripts/peer-certs.sh "$work/certs" node1=127.0.0.1 node2=127.0.0.1 node3=127.0.0.1 >/dev/null
  tls=(-e "s#^\# tls_\(cert\|key\|ca\)_file = \"certs/#tls_\1_file = \"$work/certs/#")
fi
start_sample_cluster ./bin/kvserver "$work" "${tls[@]}"
# Measure a settled cluster: the leader balancer (cluster.balance_leaders)
# starts moving leaders 20 s after the cluster is healthy, and a move costs
# a stall of up to an election timeout, so wait (up to 60 s) until no node
# leads more than its share, ceil(8/3) = 3 of the sample's 8 shards.
for _ in $(seq 120); do
  led=$(for a in 9080 9081 9082; do curl -s "127.0.0.1:$a/metrics" | awk '$1=="kv_cluster_shards_led"{print $2}'; done | sort -n | tail -1)
  [ -n "$led" ] && [ "$led" -le 3 ] && break
  sleep 0.5
done
# kvbench sends each key to its shard's leader (-route, the default); the
# last run is without, each client on one node and the nodes forwarding.
for run in "put true" "put,get true" "put false"; do
  set -- $run
  echo "-- -ops $1 -route=$2"
  ./bin/kvbench -addr 127.0.0.1:8080,127.0.0.1:8081,127.0.0.1:8082 -clients "$CLIENTS" -ops $1 -route=$2 -duration "$DUR" -warmup 3s 2>/dev/null | sed -n '/^target/p;/^   op/,/^client/p'
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()

echo "== kvserver: standalone, sync=always, kvbench -clients $CLIENTS -ops put,get"
./bin/kvserver -listen 127.0.0.1:8090 -admin off -dir "$work/standalone" -sync always >"$work/standalone.log" 2>&1 &
pids+=($!)
sleep 1
for ops in put put,get; do
  echo "-- -ops $ops"
  ./bin/kvbench -addr 127.0.0.1:8090 -clients "$CLIENTS" -ops $ops -duration "$DUR" -warmup 3s 2>/dev/null | sed -n '/^   op/,/^client/p'
done

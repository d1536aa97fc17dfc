#!/usr/bin/env bash
# Starts or stops the three-node loopback cluster of conf/node{1,2,3}.toml in
# the background: logs and pid files under ./cluster-data.
#   scripts/cluster.sh start | stop | status
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p cluster-data
case "${1:-}" in
start)
  for i in 1 2 3; do
    pidf=cluster-data/node$i.pid
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then
      echo "node$i already running (pid $(cat "$pidf"))"; continue
    fi
    ./bin/kvserver -c conf/node$i.toml >>cluster-data/node$i.log 2>&1 &
    echo $! >"$pidf"
    echo "node$i started (pid $!, log cluster-data/node$i.log)"
  done
  # Return once the cluster serves (every shard has a leader), so the next
  # command can use it; give up after 30 s and point at the logs.
  for _ in $(seq 150); do
    if ./bin/kvcli cluster status 2>/dev/null | grep -q 'state: healthy'; then
      echo "cluster healthy"; exit 0
    fi
    sleep 0.2
  done
  echo "cluster not healthy after 30 s; see cluster-data/node*.log" >&2
  exit 1
  ;;
stop)
  for i in 1 2 3; do
    pidf=cluster-data/node$i.pid
    [ -f "$pidf" ] || continue
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      echo "node$i stopped"
    fi
    rm -f "$pidf"
  done
  ;;
status)
  for i in 1 2 3; do
    pidf=cluster-data/node$i.pid
    if [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; then echo "node$i up (pid $(cat "$pidf"))"; else echo "node$i down"; fi
  done
  ;;
*)
  echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac

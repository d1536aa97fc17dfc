#!/usr/bin/env bash
# Smoke test with the real Redis tools: start bin/kvserver on a free
# loopback port, run redis-cli one-shot commands and redis-benchmark, and
# fail on any error. Prints "N passed, N failed" at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
for tool in redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null || { echo "smoke: $tool missing (run scripts/deps.sh)"; exit 1; }
done
[ -x bin/kvserver ] || { echo "smoke: bin/kvserver not built (make build)"; exit 1; }

# A loopback port nobody listens on (a refused connection means free),
# below the kernel's ephemeral range when there is room: a port from that
# range can be taken as the source port of any outgoing connection (ours
# included: the PINGs below) between this check and the server's bind.
eph_start=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
if [ "${eph_start:-0}" -gt 12000 ]; then lo=10000; span=$((eph_start - 10000)); else lo=20000; span=40000; fi
free_port() {
  local p
  while :; do
    p=$((lo + RANDOM % span))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

# Start the server and wait until it answers PING. A port can be taken
# between the check and the bind, so a server that exits is retried on
# fresh ports; one that never answers fails the smoke with its log shown
# (redis-benchmark would otherwise retry a refused connection forever).
start_server() {
  local attempt
  for attempt in 1 2 3; do
    port=$(free_port)
    admin=$(free_port)
    [ "$port" = "$admin" ] && continue
    ./bin/kvserver -listen "127.0.0.1:$port" -admin "127.0.0.1:$admin" -dir "$dir/data$attempt" >"$dir/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
      [ "$(timeout 5 redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && return 0
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    echo "smoke: kvserver (attempt $attempt, port $port) did not answer PING; its log:"
    cat "$dir/server.log"
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=
  done
  return 1
}
start_server || { echo "smoke: FAIL kvserver did not start"; exit 1; }

passed=0; failed=0
check() { # name, expected, actual
  if [ "$2" = "$3" ]; then passed=$((passed+1)); else failed=$((failed+1)); echo "FAIL $1: want [$2] got [$3]"; fi
}
cli() { timeout 10 redis-cli -p "$port" "$@" 2>&1; }

check ping PONG "$(cli ping)"
check set OK "$(cli set smoke:k hello)"
check get hello "$(cli get smoke:k)"
check get-missing "" "$(cli get smoke:missing)"
check exists 1 "$(cli exists smoke:k)"
check del 1 "$(cli del smoke:k)"
check mset OK "$(cli mset smoke:a 1 smoke:b 2)"
check mget "$(printf '1\n2')" "$(cli mget smoke:a smoke:b)"
check select OK "$(cli select 0)"
check info-cluster "cluster_enabled:0" "$(cli info cluster | tr -d '\r' | grep cluster_enabled)"
check unknown "ERR unknown command 'nosuch'" "$(cli nosuch)"
check metrics 0 "$(curl -sf -m 10 "http://127.0.0.1:$admin/metrics" | grep -c '^kv_requests_total' >/dev/null; echo $?)"
check healthz 0 "$(curl -sf -m 10 "http://127.0.0.1:$admin/healthz" >/dev/null; echo $?)"

bench=$(timeout 120 redis-benchmark -p "$port" -t set,get -n 20000 -q 2>&1)
echo "$bench"
if echo "$bench" | grep -qiE 'error|warning' || [ "$(echo "$bench" | grep -c 'requests per second')" -ne 2 ]; then
  failed=$((failed+1)); echo "FAIL redis-benchmark"
else
  passed=$((passed+1))
fi
check alive PONG "$(cli ping)"

echo "smoke: $passed passed, $failed failed"
[ "$failed" = 0 ]

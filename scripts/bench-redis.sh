#!/usr/bin/env bash
# Side-by-side: kvserver vs redis-server under redis-benchmark, same run,
# alternating, RUNS rounds (default 3), medians reported as a markdown table.
#   (a) kvserver sync=none   vs redis-server --save "" --appendonly no
#   (b) kvserver sync=always vs redis-server --appendonly yes --appendfsync always
# each with -P 16 and -P 1. Needs bin/kvserver (make build), redis-server,
# redis-benchmark. Everything listens on loopback and is stopped at the end.
# LOOPS="2 1" runs one kvserver per listed server.event_loops value in every
# round (default: one kvserver with the built-in default, the CPU count);
# its cells list the medians in that order.
# TLS=1 runs every benchmark over TLS instead: kvserver's server.tls_listen
# against redis-server's tls-port, both with a certificate made by
# scripts/peer-certs.sh (needs openssl), redis-benchmark --tls.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
LOOPS=${LOOPS:-default}
N=${N:-400000}
work=$(mktemp -d)
kvport=28180; kvadmin=29180; rport=26380
kvtls=28181; rtls=26381
TLS=${TLS:-}
tlsargs=()
if [ -n "$TLS" ]; then
  bash scripts/peer-certs.sh "$work/certs" server=127.0.0.1 >/dev/null
  tlsargs=(--tls --cacert "$work/certs/ca.pem")
fi
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

start_kv() { # sync loops
  rm -rf "$work/kv"; conf=()
  printf '[server]\n' >"$work/kv.toml"
  if [ "$2" != default ]; then printf 'event_loops = %s\n' "$2" >>"$work/kv.toml"; fi
  if [ -n "$TLS" ]; then
    printf 'tls_listen = "127.0.0.1:%s"\ntls_cert_file = "%s"\ntls_key_file = "%s"\n' $kvtls "$work/certs/server.pem" "$work/certs/server-key.pem" >>"$work/kv.toml"
  fi
  conf=(-c "$work/kv.toml")
  ./bin/kvserver "${conf[@]}" -listen 127.0.0.1:$kvport -admin 127.0.0.1:$kvadmin -dir "$work/kv" -sync "$1" >"$work/kv.log" 2>&1 &
  kvpid=$!; pids+=($kvpid)
  for _ in $(seq 100); do redis-cli -p $kvport ping >/dev/null 2>&1 && return; sleep 0.1; done; echo "kvserver did not start"; exit 1
}
start_redis() { # args...
  rm -rf "$work/redis"; mkdir -p "$work/redis"
  local t=()
  if [ -n "$TLS" ]; then
    t=(--tls-port $rtls --tls-cert-file "$work/certs/server.pem" --tls-key-file "$work/certs/server-key.pem"
       --tls-ca-cert-file "$work/certs/ca.pem" --tls-auth-clients no)
  fi
  redis-server --port $rport --bind 127.0.0.1 --dir "$work/redis" "${t[@]}" "$@" >"$work/redis.log" 2>&1 &
  rpid=$!; pids+=($rpid)
  for _ in $(seq 100); do redis-cli -p $rport ping >/dev/null 2>&1 && return; sleep 0.1; done; echo "redis did not start"; exit 1
}
bench() { # port P -> "set get"
  timeout 300 redis-benchmark "${tlsargs[@]}" -p "$1" -t set,get -n "$N" -r 200000 -d 100 -c 50 -P "$2" -q 2>/dev/null | tr '\r' '\n' \
    | awk '/^SET: [0-9]/{s=$2} /^GET: [0-9]/{g=$2} END{print s, g}'
}
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

echo "| pairing | -P | kvserver SET | redis SET | kvserver GET | redis GET |"
echo "|---|---:|---:|---:|---:|---:|"
for pairing in none always; do
  for P in 16 1; do
    rm -f "$work"/kv*.set "$work"/kv*.get; : >"$work/r.set"; : >"$work/r.get"
    for r in $(seq "$RUNS"); do
      for l in $LOOPS; do
        start_kv "$pairing" "$l"; read -r s g < <(bench $([ -n "$TLS" ] && echo $kvtls || echo $kvport) "$P"); echo "$s" >>"$work/kv$l.set"; echo "$g" >>"$work/kv$l.get"
        kill $kvpid; wait $kvpid 2>/dev/null || true
      done
      if [ "$pairing" = none ]; then start_redis --save "" --appendonly no; else start_redis --save "" --appendonly yes --appendfsync always; fi
      read -r s g < <(bench $([ -n "$TLS" ] && echo $rtls || echo $rport) "$P"); echo "$s" >>"$work/r.set"; echo "$g" >>"$work/r.get"
      kill $rpid; wait $rpid 2>/dev/null || true
    done
    label="kv sync=$pairing vs redis $([ "$pairing" = none ] && echo 'no persistence' || echo 'AOF always')"
    kvs=""; kvg=""
    for l in $LOOPS; do kvs="$kvs${kvs:+ / }$(median <"$work/kv$l.set")"; kvg="$kvg${kvg:+ / }$(median <"$work/kv$l.get")"; done
    echo "| $label | $P | $kvs | $(median <"$work/r.set") | $kvg | $(median <"$work/r.get") |"
  done
done

# Sourced by the benchmark scripts, from the repository's root.
#
# start_sample_cluster BINARY DIR [SED_ARGS...] starts the three sample
# nodes (conf/node{1,2,3}.toml, the file's sed-edited copies in DIR, extra
# sed arguments applied too) on fresh data under DIR, logging at warn,
# appends their PIDs to the caller's pids array, and returns once raft
# says healthy and every client port answers (a node opens its port only
# once its shards caught up), or after 30 s.
start_sample_cluster() {
  local bin=$1 dir=$2 i
  shift 2
  for i in 1 2 3; do
    sed -e "s#./cluster-data/node$i#$dir/kv$i#" -e 's/^level = .*/level = "warn"/' "$@" "conf/node$i.toml" >"$dir/node$i.toml"
    grep -q '^\[log\]' "$dir/node$i.toml" || printf '[log]\nlevel = "warn"\n' >>"$dir/node$i.toml"
    "$bin" -c "$dir/node$i.toml" >"$dir/kv$i.log" 2>&1 &
    pids+=($!)
  done
  for _ in $(seq 150); do
    ./bin/kvcli cluster status 2>/dev/null | grep -q 'state: healthy' &&
      ./bin/kvcli -p 8081 ping >/dev/null 2>&1 && ./bin/kvcli -p 8082 ping >/dev/null 2>&1 && return 0
    sleep 0.2
  done
}

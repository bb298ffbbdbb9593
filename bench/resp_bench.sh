#!/usr/bin/env bash
# redis-benchmark against geokv-server's Redis port (--durability wal) and
# against redis-server (appendonly, fsync every second) in the same run:
# SET, GET, INCR and SADD, 100-byte values, 100,000 random keys, with -c 50
# and with -c 50 -P 16. Prints requests per second and geokv/redis ratios.
#
# With --one-connection GEOKV_BENCH it measures instead one connection with 64
# requests in flight: `geokv-bench run --workload C` (single gets through the
# Cap'n Proto API) against geokv-server, and `redis-benchmark -c 1 -P 64` GETs
# against redis-server (after SETs of the same keys), and prints one JSON
# object with both rates and their ratio.
#
#   bench/resp_bench.sh --server build/rel/server/geokv-server [--requests N]
#   bench/resp_bench.sh --server build/rel/server/geokv-server \
#     --one-connection build/rel/bench/geokv-bench [--duration S] [--keys N] [--requests N]
set -euo pipefail

usage="usage: $0 --server GEOKV_SERVER [--requests N] [--one-connection GEOKV_BENCH [--duration S] [--keys N]]"
server=""
requests=200000
geokv_bench=""
duration=10
keys=100000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    --one-connection) geokv_bench=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --keys) keys=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ -x "$server" ]] || { echo "resp_bench: --server must name geokv-server" >&2; exit 2; }
[[ -z "$geokv_bench" || -x "$geokv_bench" ]] ||
  { echo "resp_bench: --one-connection must name geokv-bench" >&2; exit 2; }
for tool in redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "resp_bench: $tool not found (redis-tools)" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/resp-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

# Debian's redis-tools ships the server itself as redis-check-rdb, which runs
# as the server when called redis-server (the redis-server package is no more
# than that link and a service), so redis-tools alone is enough.
redis_server=$(command -v redis-server || true)
if [[ -z "$redis_server" && -x /usr/bin/redis-check-rdb ]]; then
  ln -s /usr/bin/redis-check-rdb "$dir/redis-server"
  redis_server="$dir/redis-server"
fi
[[ -n "$redis_server" ]] || { echo "resp_bench: redis-server not found (redis-server, redis-tools)" >&2; exit 2; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
api_port=$(free_port)
geokv_port=$(free_port)
redis_port=$(free_port)

"$server" --data-dir "$dir/geokv" --listen "127.0.0.1:$api_port" --resp-listen "127.0.0.1:$geokv_port" \
  --durability wal --log-level warn > "$dir/geokv.log" 2>&1 &
pids+=($!)
"$redis_server" --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
  --appendfsync everysec --save "" > "$dir/redis.log" 2>&1 &
pids+=($!)
for port in "$geokv_port" "$redis_port"; do
  for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done

# The requests per second redis-benchmark reports for one test.
rps() {
  local port=$1 test=$2; shift 2
  redis-benchmark -p "$port" -t "$test" -n "$requests" -r "$keys" -d 100 --csv "$@" 2>/dev/null |
    awk -F'"' 'NR == 2 { printf "%.0f", $4 }'
}

if [[ -n "$geokv_bench" ]]; then
  geokv_json=$("$geokv_bench" run --connect "127.0.0.1:$api_port" --workload C --batch 1 \
    --inflight 64 --keys "$keys" --value-size 100 --duration "$duration" --json)
  g=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["results"][0]["ops_per_s"])' "$geokv_json")
  redis-benchmark -p "$redis_port" -t set -n "$keys" -r "$keys" -d 100 -c 1 -P 64 -q >/dev/null
  r=$(rps "$redis_port" get -c 1 -P 64)
  ratio=$(awk -v g="$g" -v r="$r" 'BEGIN { if (r > 0) printf "%.3f", g / r; else print "null" }')
  printf '{"command":"one-connection","keys":%s,"value_size":100,"inflight":64,"redis_requests":%s,' \
    "$keys" "$requests"
  printf '"redis_get_per_s":%s,"geokv_get_per_s":%s,"ratio":%s,"geokv":%s}\n' \
    "${r:-null}" "$g" "$ratio" "$geokv_json"
  exit 0
fi

printf '%-6s %-14s %12s %12s %7s\n' command clients geokv redis ratio
for shape in "-c 50" "-c 50 -P 16"; do
  for test in set get incr sadd; do
    # shellcheck disable=SC2086
    g=$(rps "$geokv_port" "$test" $shape)
    # shellcheck disable=SC2086
    r=$(rps "$redis_port" "$test" $shape)
    ratio=$(awk -v g="$g" -v r="$r" 'BEGIN { if (r > 0) printf "%.2f", g / r; else print "-" }')
    printf '%-6s %-14s %12s %12s %7s\n' "${test^^}" "$shape" "$g" "$r" "$ratio"
  done
done

#!/usr/bin/env bash
# redis-benchmark against geokv-server's Redis port (--durability wal) and
# against redis-server (appendonly, fsync every second) in the same run:
# SET, GET, INCR and SADD, 100-byte values, 100,000 random keys, with -c 50
# and with -c 50 -P 16. Prints requests per second and geokv/redis ratios.
#
#   bench/resp_bench.sh --server build/rel/server/geokv-server [--requests N]
set -euo pipefail

server=""
requests=200000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) server=$2; shift 2 ;;
    --requests) requests=$2; shift 2 ;;
    *) echo "usage: $0 --server GEOKV_SERVER [--requests N]" >&2; exit 2 ;;
  esac
done
[[ -x "$server" ]] || { echo "resp_bench: --server must name geokv-server" >&2; exit 2; }
for tool in redis-server redis-benchmark redis-cli; do
  command -v "$tool" >/dev/null || { echo "resp_bench: $tool not found (redis-server, redis-tools)" >&2; exit 2; }
done

dir=$(mktemp -d /tmp/resp-bench.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
geokv_port=$(free_port)
redis_port=$(free_port)

"$server" --data-dir "$dir/geokv" --listen 127.0.0.1:0 --resp-listen "127.0.0.1:$geokv_port" \
  --durability wal --log-level warn > "$dir/geokv.log" 2>&1 &
pids+=($!)
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
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
  redis-benchmark -p "$port" -t "$test" -n "$requests" -r 100000 -d 100 --csv "$@" 2>/dev/null |
    awk -F'"' 'NR == 2 { printf "%.0f", $4 }'
}

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

#!/usr/bin/env bash
# The geokv demo: builds what is missing, starts one node on loopback with a
# fresh data dir, and walks through every data type with geokv-cli.
#
#   ./scripts/demo.sh                 run the session, then stop the node
#   ./scripts/demo.sh --keep-running  leave the node up until Ctrl-C
#
#   GEOKV_DEMO_BUILD_DIR  build directory (default: build/demo, Release)
set -euo pipefail
cd "$(dirname "$0")/.."

keep_running=0
for arg in "$@"; do
  case "$arg" in
    --keep-running) keep_running=1 ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

build_dir=${GEOKV_DEMO_BUILD_DIR:-build/demo}
server="$build_dir/server/geokv-server"
cli_bin="$build_dir/client/geokv-cli"

if [[ ! -x "$server" || ! -x "$cli_bin" ]]; then
  ./scripts/install-deps.sh
  echo "== building geokv (Release) in $build_dir"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DGEOKV_BUILD_BENCH=OFF -DGEOKV_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$build_dir" -j2 --target geokv-server geokv-cli
fi

work=$(mktemp -d -t geokv-demo-XXXXXX)
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== starting a node (region demo, data in $work/data)"
"$server" --node-id demo-1 --region demo --listen 127.0.0.1:0 --data-dir "$work/data" \
  --durability fsync 2>"$work/server.log" &
server_pid=$!
port=""
for _ in $(seq 1 300); do
  port=$(sed -n 's/.*client API listening on .* port \([0-9]*\).*/\1/p' "$work/server.log")
  [[ -n "$port" ]] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n "$port" ]] || { echo "demo.sh: the node did not start" >&2; cat "$work/server.log" >&2; exit 1; }
address="127.0.0.1:$port"
echo "   listening on $address"

# Prints the command, runs it, and shows its output and exit code.
step() {
  echo
  echo "\$ geokv-cli $*"
  set +e
  "$cli_bin" --connect "$address" "$@"
  local rc=$?
  set -e
  [[ $rc -eq 0 ]] || echo "   (exit code $rc)"
}

echo
echo "== LWW registers: the last write wins"
step set greeting hello
step set greeting "hello, world"
step get greeting
step del greeting
step get greeting

echo
echo "== Multi-value registers: concurrent writes are kept as siblings"
step mvset profile '{"name":"ada"}'
step mvset profile '{"name":"ada l."}'
step mvget profile
context=$("$cli_bin" --connect "$address" --json mvget profile |
          sed -n 's/.*"context":"\([0-9a-f]*\)".*/\1/p')
echo "   (writing with the context of that read merges the siblings)"
step mvset profile '{"name":"Ada Lovelace"}' --context "$context"
step mvget profile

echo
echo "== OR-sets: add wins over a concurrent remove"
step sadd tags db crdt geo
step srem tags geo
step smembers tags
step scard tags
step sismember tags crdt

echo
echo "== Counters"
step incrby visits 10
step incrby visits -- -3
step counter visits

echo
echo "== Types and errors"
step type tags
step sadd visits oops
step --json get nothing

echo
echo "== Read-your-writes with a causal token"
token=$("$cli_bin" --connect "$address" --json set session active |
        sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p')
step get session --token "$token"

step info

if [[ $keep_running -eq 1 ]]; then
  echo
  echo "== the node keeps running on $address; Ctrl-C stops it"
  wait "$server_pid" || true
fi
echo
echo "== stopping the node (SIGTERM)"
kill -TERM "$server_pid"
wait "$server_pid"
echo "   clean shutdown (exit code $?)"
server_pid=""

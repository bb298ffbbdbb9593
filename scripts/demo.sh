#!/usr/bin/env bash
# The geokv demo: builds what is missing, starts three regions (eu, us, ap)
# on loopback, one node each, with a WAN emulator on every link between them
# (50 ms one way), and shows with geokv-cli every data type, replication with
# causal tokens, a partition with writes on both sides, and convergence after
# healing.
#
#   ./scripts/demo.sh                 run the session, then stop the cluster
#   ./scripts/demo.sh --keep-running  leave the cluster up until Ctrl-C
#
#   GEOKV_DEMO_BUILD_DIR  build directory (default: build/demo, Release)
#   GEOKV_DEMO_DELAY_MS   one-way delay between regions (default: 50)
set -euo pipefail
cd "$(dirname "$0")/.."

keep_running=0
for arg in "$@"; do
  case "$arg" in
    --keep-running) keep_running=1 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

build_dir=${GEOKV_DEMO_BUILD_DIR:-build/demo}
delay_ms=${GEOKV_DEMO_DELAY_MS:-50}
server="$build_dir/server/geokv-server"
cli_bin="$build_dir/client/geokv-cli"
proxy_bin="$build_dir/tools/geokv-wan-proxy"

if [[ ! -x "$server" || ! -x "$cli_bin" || ! -x "$proxy_bin" ]]; then
  ./scripts/install-deps.sh
  echo "== building geokv (Release) in $build_dir"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DGEOKV_BUILD_BENCH=OFF >/dev/null
  cmake --build "$build_dir" -j2 --target geokv-server geokv-cli geokv-wan-proxy
fi

regions=(eu us ap)
work=$(mktemp -d -t geokv-demo-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Sets `port` to a loopback port nothing listens on now, below the range
# the kernel hands out for port 0, from a random start.
next_port=$((20000 + RANDOM % 10000))
free_port() {
  while (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; do next_port=$((next_port + 1)); done
  port=$next_port
  next_port=$((next_port + 1))
}

# Waits until `pattern` (sed, one group) appears in `log`; prints the group.
wait_for_log() {
  local log=$1 pattern=$2 pid=$3 found=""
  for _ in $(seq 1 300); do
    found=$(sed -n "s/$pattern/\\1/p" "$log" | head -n1)
    [[ -n "$found" ]] && { echo "$found"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "demo.sh: a process did not start; its log:" >&2
  cat "$log" >&2
  return 1
}

declare -A peer_port client_address proxy_address control_port
for r in "${regions[@]}"; do
  free_port
  peer_port[$r]=$port
done

echo "== starting a WAN emulator on each link between regions (${delay_ms} ms one way)"
for from in "${regions[@]}"; do
  for to in "${regions[@]}"; do
    [[ $from == "$to" ]] && continue
    log="$work/proxy-$from-$to.log"
    "$proxy_bin" --listen 127.0.0.1:0 --target "127.0.0.1:${peer_port[$to]}" \
      --delay-ms "$delay_ms" --jitter-ms 5 --control 127.0.0.1:0 --log-level warn 2>"$log" &
    pids+=($!)
    proxy_address[$from-$to]=$(wait_for_log "$log" '^listening on \(.*\)$' $!)
    control_port[$from-$to]=$(wait_for_log "$log" '^control on .*:\([0-9]*\)$' $!)
  done
done

echo "== starting one node per region"
for r in "${regions[@]}"; do
  peers=""
  for p in "${regions[@]}"; do
    [[ $p == "$r" ]] || peers+="${peers:+,}$p=${proxy_address[$r-$p]}"
  done
  log="$work/node-$r.log"
  "$server" --node-id "$r-1" --region "$r" --listen 127.0.0.1:0 --data-dir "$work/data-$r" \
    --peer-listen "127.0.0.1:${peer_port[$r]}" --peers "$peers" --durability fsync \
    --anti-entropy-interval 2s --heartbeat 250ms 2>"$log" &
  pids+=($!)
  port=$(wait_for_log "$log" '.*client API listening on .* port \([0-9]*\).*' $!)
  client_address[$r]="127.0.0.1:$port"
  echo "   $r: client API on ${client_address[$r]}, peers $peers"
done

cli() { local r=$1; shift; "$cli_bin" --connect "${client_address[$r]}" "$@"; }

# Prints the command, runs it against region $1, shows output and exit code.
step() {
  local r=$1; shift
  echo
  echo "[$r] \$ geokv-cli $*"
  set +e
  cli "$r" "$@"
  local rc=$?
  set -e
  [[ $rc -eq 0 ]] || echo "   (exit code $rc)"
}

token_of() { sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p'; }

# Sends a control command to the proxies of every link touching region $1.
links_of() {
  local r=$1 command=$2
  for key in "${!control_port[@]}"; do
    [[ $key == "$r-"* || $key == *"-$r" ]] || continue
    exec 3<>"/dev/tcp/127.0.0.1/${control_port[$key]}"
    echo "$command" >&3
    head -n1 <&3 >/dev/null
    exec 3>&-
  done
}

echo "   waiting for every region to connect to the others"
for r in "${regions[@]}"; do
  for _ in $(seq 1 300); do
    cli "$r" --json info | grep -q '"connected":false' || break
    sleep 0.1
  done
done

echo
echo "== Every type, written in eu"
step eu set greeting "hello, world"
step eu mvset profile '{"name":"ada"}'
step eu sadd tags db crdt geo
step eu incrby visits 10
step eu type tags
step eu sadd visits oops

echo
echo "== Read-your-writes in another region with a causal token"
token=$(cli eu --json set session active | token_of)
echo "   eu wrote session=active, token $token"
step us --token "$token" get session
echo "   (us waited until the write had crossed the ${delay_ms} ms link)"
step eu --token "$token" wait-replicated us ap

echo
echo "== Counters add up across regions"
step eu incrby hits 1
step us incrby hits 10
step ap incrby hits 100
token=$(cli ap --json incrby hits 1000 | token_of)
step eu --token "$token" counter hits

echo
echo "== ap is cut off; both sides keep taking writes"
links_of ap partition
step ap incrby hits 5
step eu incrby hits 7
step eu srem tags geo
step ap sadd tags geo maps
step eu mvset profile '{"name":"Ada Lovelace"}'
step ap mvset profile '{"name":"Countess of Lovelace"}'
step eu counter hits
step ap counter hits
echo "   (each side sees only its own increment)"
token=$(cli eu --json set during-partition eu | token_of)
step eu --token "$token" wait-replicated ap --wait 1000
echo "   (ap cannot get eu's writes while the partition lasts)"

echo
echo "== Healing: the regions converge"
links_of ap heal
ap_token=$(cli ap --json set healed yes | token_of)
step eu --token "$token" wait-replicated ap --wait 10000
step eu --token "$ap_token" get healed
for r in "${regions[@]}"; do step "$r" counter hits; done
echo "   (1111 before the partition, +7 in eu and +5 in ap while apart)"
step us smembers tags
echo "   (geo: ap's add was concurrent with eu's remove, and an add wins)"
step us mvget profile
echo "   (both concurrent profile writes are kept as siblings; a write with this read's context merges them)"
for _ in $(seq 1 100); do
  digests=$(for r in "${regions[@]}"; do cli "$r" --json info | sed -n 's/.*"state_digest":"\([0-9a-f]*\)".*/\1/p'; done | sort -u | wc -l)
  [[ $digests -eq 1 ]] && break
  sleep 0.1
done
[[ $digests -eq 1 ]] || { echo "demo.sh: the regions did not converge" >&2; exit 1; }
echo
for r in "${regions[@]}"; do
  echo "   $r state digest: $(cli "$r" --json info | sed -n 's/.*"state_digest":"\([0-9a-f]*\)".*/\1/p')"
done
step eu info

if [[ $keep_running -eq 1 ]]; then
  echo
  echo "== the cluster keeps running; Ctrl-C stops it"
  for r in "${regions[@]}"; do echo "   $r: geokv-cli --connect ${client_address[$r]} ..."; done
  wait "${pids[@]}" || true
fi
echo
echo "== stopping the cluster (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
pids=()
[[ $status -eq 0 ]] && echo "   clean shutdown" || { echo "   a process exited with $status" >&2; exit 1; }

#!/usr/bin/env bash
# The geokv demo: builds what is missing, starts three regions (eu, us, ap)
# of two nodes each on loopback, with a WAN emulator between the regions
# (one way: eu-us 30 ms, us-ap 80 ms, eu-ap 120 ms) and a metrics endpoint
# per node, with TLS on every port (clients present a certificate too) and
# gossip sealed under a key, made on the fly by scripts/gen-certs.sh, and a
# users file on every node (admin and reader, with random secrets; every
# client call logs in), and narrates a short run: concurrent conflicting
# writes in every region and what each region converges to; the read-only
# user refused a write; a partition with writes on both sides, the heal and
# the time to converge; read-your-writes across regions with a causal
# token; a write load through the Redis port (redis-cli) and the replication
# lag percentiles. Needs no root.
#
#   ./scripts/demo.sh                 run it, then keep the cluster up until Ctrl-C
#   ./scripts/demo.sh --duration S    run it, keep the cluster up S seconds, stop
#
#   GEOKV_DEMO_BUILD_DIR     build directory (default: build/demo, Release)
#   GEOKV_DEMO_METRICS_PORT  first metrics port (default: 9401; the six nodes
#                            take it and the next five, as monitoring/prometheus.yml expects)
set -euo pipefail
cd "$(dirname "$0")/.."

duration=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration)
      [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || { echo "demo.sh: --duration takes whole seconds" >&2; exit 2; }
      duration=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

build_dir=${GEOKV_DEMO_BUILD_DIR:-build/demo}
metrics_port=${GEOKV_DEMO_METRICS_PORT:-9401}
server="$build_dir/server/geokv-server"
cli_bin="$build_dir/client/geokv-cli"
proxy_bin="$build_dir/tools/geokv-wan-proxy"

if [[ ! -x "$server" || ! -x "$cli_bin" || ! -x "$proxy_bin" ]] || ! command -v redis-cli >/dev/null; then
  ./scripts/install-deps.sh
fi
if [[ ! -x "$server" || ! -x "$cli_bin" || ! -x "$proxy_bin" ]]; then
  echo "== building geokv (Release) in $build_dir"
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DGEOKV_BUILD_BENCH=OFF >/dev/null
  cmake --build "$build_dir" -j2 --target geokv-server geokv-cli geokv-wan-proxy
fi

regions=(eu us ap)
nodes=(eu-1 eu-2 us-1 us-2 ap-1 ap-2)
declare -A delay_ms=([eu-us]=30 [us-eu]=30 [us-ap]=80 [ap-us]=80 [eu-ap]=120 [ap-eu]=120)
work=$(mktemp -d -t geokv-demo-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "== Ctrl-C: stopping"; exit 0' INT

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

region_of() { echo "${1%-*}"; }

declare -A peer_port gossip_port metrics_address client_address redis_port proxy_address control_port
i=0
for n in "${nodes[@]}"; do
  free_port; peer_port[$n]=$port
  free_port; gossip_port[$n]=$port
  metrics_address[$n]="127.0.0.1:$((metrics_port + i))"
  if (exec 3<>"/dev/tcp/127.0.0.1/$((metrics_port + i))") 2>/dev/null; then
    echo "demo.sh: port $((metrics_port + i)) is taken; set GEOKV_DEMO_METRICS_PORT" >&2
    exit 1
  fi
  i=$((i + 1))
done

tls="$work/tls"
echo "== making a CA, a certificate per node, a client certificate and a gossip key in $tls"
node_specs=()
for n in "${nodes[@]}"; do node_specs+=(--node "$n.$(region_of "$n")"); done
./scripts/gen-certs.sh "${node_specs[@]}" --client demo --gossip-key "$tls" >/dev/null

# The users file (mode 600, docs/operations.md#users): admin (role admin)
# and reader (role read), each with a random secret in $work/NAME.secret
# (mode 600; geokv-cli reads it there, never from its command line). The
# hashes take 10,000 PBKDF2 rounds instead of the default 600,000: every
# geokv-cli call below is a new connection that logs in anew, more than a
# hundred in all, and a random 192-bit secret needs no slow hash against
# guessing.
users="$work/users"
echo "== making users in $users: admin (role admin) and reader (role read), random secrets"
make_user() {
  local name=$1 role=$2 hash
  (umask 077; head -c 24 /dev/urandom | base64 >"$work/$name.secret")
  hash=$("$cli_bin" hash-secret --iterations 10000 <"$work/$name.secret")
  (umask 077; echo "$name $role $hash" >>"$users")
}
make_user admin admin
make_user reader read
chmod 600 "$users"

echo "== starting the WAN emulator: every region reaches every node of another"
echo "   region through a proxy (one way: eu-us 30 ms, us-ap 80 ms, eu-ap 120 ms)"
for n in "${nodes[@]}"; do
  for r in "${regions[@]}"; do
    [[ $r == "$(region_of "$n")" ]] && continue
    log="$work/proxy-$r-$n.log"
    : >"$log"
    "$proxy_bin" --listen 127.0.0.1:0 --target "127.0.0.1:${peer_port[$n]}" \
      --delay-ms "${delay_ms[$r-$(region_of "$n")]}" --jitter-ms 2 --control 127.0.0.1:0 \
      --log-level warn 2>"$log" &
    pids+=($!)
    proxy_address[$r-$n]=$(wait_for_log "$log" '^listening on \(.*\)$' $!)
    control_port[$r-$n]=$(wait_for_log "$log" '^control on .*:\([0-9]*\)$' $!)
  done
done

echo "== starting six nodes: two per region, gossip within each region, N = 2"
for n in "${nodes[@]}"; do
  r=$(region_of "$n")
  seeds="" routes=""
  for p in "${regions[@]}"; do
    [[ $p == "$r" ]] && continue
    seeds+="${seeds:+,}$p=${proxy_address[$r-$p-1]}"
    routes+="${routes:+,}$p=${proxy_address[$p-$n]}"
  done
  log="$work/node-$n.log"
  : >"$log"
  "$server" --node-id "$n" --region "$r" --listen 127.0.0.1:0 --data-dir "$work/data-$n" \
    --peer-listen "127.0.0.1:${peer_port[$n]}" --peers "$seeds" --peer-routes "$routes" \
    --gossip-listen "127.0.0.1:${gossip_port[$n]}" --seeds "127.0.0.1:${gossip_port[$r-1]}" \
    --replication-factor 2 --metrics-listen "${metrics_address[$n]}" --durability fsync \
    --anti-entropy-interval 2s --heartbeat 250ms --resp-listen 127.0.0.1:0 \
    --tls-cert "$tls/$n.pem" --tls-key "$tls/$n.key" --tls-ca "$tls/ca.pem" \
    --client-ca "$tls/client-ca.pem" --gossip-key-file "$tls/gossip.keys" \
    --users "$users" 2>"$log" &
  pids+=($!)
  port=$(wait_for_log "$log" '.*client API listening on .* port \([0-9]*\).*' $!)
  client_address[$n]="127.0.0.1:$port"
  redis_port[$n]=$(wait_for_log "$log" '.*redis protocol listening on .* port \([0-9]*\).*' $!)
  echo "   $n: client API ${client_address[$n]}, redis port ${redis_port[$n]}," \
    "metrics http://${metrics_address[$n]}/metrics"
done
client_tls=(--tls-ca "$tls/ca.pem" --tls-cert "$tls/client-demo.pem" --tls-key "$tls/client-demo.key")
echo "   every port speaks TLS, and every client logs in as a user:"
echo "   geokv-cli ${client_tls[*]} --tls-name NODE --user admin --secret-file $work/admin.secret ...;"
echo "   REDISCLI_AUTH=\$(cat $work/admin.secret) redis-cli --tls --cacert $tls/ca.pem \\"
echo "     --cert $tls/client-demo.pem --key $tls/client-demo.key --user admin -p PORT"
echo "   (or, connected without --user, AUTH admin SECRET)"

# Runs geokv-cli against node $2 logged in as user $1. Each node's
# certificate carries its name as a DNS name.
cli_as() {
  local user=$1 n=$2; shift 2
  "$cli_bin" --connect "${client_address[$n]}" "${client_tls[@]}" --tls-name "$n" \
    --user "$user" --secret-file "$work/$user.secret" "$@"
}
# The demo's own calls log in as admin (info's peer list needs that role).
cli() { cli_as admin "$@"; }
# Runs redis-cli against node $1's Redis port as admin: with no command
# after the node, it sends the commands it reads, one per line, over one
# connection.
redis_cli() {
  local n=$1; shift
  REDISCLI_AUTH=$(cat "$work/admin.secret") redis-cli --tls --cacert "$tls/ca.pem" \
    --cert "$tls/client-demo.pem" --key "$tls/client-demo.key" --user admin \
    -p "${redis_port[$n]}" "$@"
}

# Prints the command, runs it against node $1, shows output and exit code.
step() {
  local n=$1; shift
  echo
  echo "[$n] \$ geokv-cli $*"
  set +e
  cli "$n" "$@"
  local rc=$?
  set -e
  [[ $rc -eq 0 ]] || echo "   (exit code $rc)"
}

token_of() { sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p'; }
digest_of() { cli "$1" --json info | sed -n 's/.*"state_digest":"\([0-9a-f]*\)".*/\1/p'; }
now_ms() { date +%s%3N; }

# Sends a control command to the proxies of every link into or out of region $1.
links_of() {
  local r=$1 command=$2
  for key in "${!control_port[@]}"; do
    [[ $key == "$r-"* || $key == *"-$r-"* ]] || continue
    exec 3<>"/dev/tcp/127.0.0.1/${control_port[$key]}"
    echo "$command" >&3
    head -n1 <&3 >/dev/null
    exec 3>&-
  done
}

# Waits until every node shows the same state digest (N = 2: each holds every key).
wait_converged() {
  local distinct=0
  for _ in $(seq 1 600); do
    distinct=$(for n in "${nodes[@]}"; do digest_of "$n"; done | sort -u | wc -l)
    [[ $distinct -eq 1 ]] && return 0
    sleep 0.1
  done
  echo "demo.sh: the nodes did not converge" >&2
  return 1
}

echo "   waiting until every node knows all six and its links are up"
for n in "${nodes[@]}"; do
  for _ in $(seq 1 300); do
    info=$(cli "$n" --json info)
    peers=$(grep -o '"connected":true' <<<"$info" | wc -l)
    [[ $peers -ge 5 ]] && break
    sleep 0.1
  done
done
step eu-1 members

echo
echo "== Concurrent conflicting writes: all three regions set 'color' at once"
writers=()
cli eu-1 set color red >/dev/null & writers+=($!)
cli us-1 set color green >/dev/null & writers+=($!)
cli ap-2 set color blue >/dev/null & writers+=($!)
cli eu-2 mvset motto "eu: local first" >/dev/null & writers+=($!)
cli us-2 mvset motto "us: move fast" >/dev/null & writers+=($!)
cli ap-1 mvset motto "ap: converge" >/dev/null & writers+=($!)
wait "${writers[@]}"
wait_converged
for n in eu-1 us-1 ap-1; do step "$n" get color; done
echo "   (every region picked the same value: the write with the latest hybrid"
echo "    timestamp wins an LWW register, whichever region made it)"
step us-2 mvget motto
echo "   (a multi-value register keeps all three concurrent writes as siblings)"

echo
echo "== Roles: the user reader has the read role"
echo
echo "[us-2] \$ geokv-cli --user reader get color"
cli_as reader us-2 get color
echo
echo "[us-2] \$ geokv-cli --user reader set color black"
if refusal=$(cli_as reader us-2 set color black 2>&1); then
  echo "demo.sh: the reader's write was accepted: $refusal" >&2
  exit 1
fi
echo "$refusal"
grep -q PERMISSION_DENIED <<<"$refusal" || { echo "demo.sh: expected PERMISSION_DENIED" >&2; exit 1; }
echo "   (refused as expected, and nothing written: reading is all its role allows)"

echo
echo "== Read-your-writes across regions with a causal token"
token=$(cli eu-1 --json set session active | token_of)
echo "   eu-1 wrote session=active; its token: $token"
start=$(now_ms)
step ap-2 --token "$token" get session
echo "   (ap-2 answered after $(( $(now_ms) - start )) ms: it waited for the write to cross the 120 ms link)"
step eu-1 --token "$token" wait-replicated us ap

echo
echo "== ap is cut off; both sides keep taking writes"
links_of ap partition
step ap-1 incrby hits 5
step eu-2 incrby hits 7
step us-1 sadd tags geo
step ap-2 srem tags geo
step eu-1 counter hits
step ap-1 counter hits
echo "   (each side sees only its own increment)"
token=$(cli eu-1 --json set during-partition eu | token_of)
step eu-1 --token "$token" wait-replicated ap --wait 1000
echo "   (ap cannot get eu's writes while the partition lasts)"

echo
echo "== Healing: how long until all six nodes hold the same data"
start=$(now_ms)
links_of ap heal
wait_converged
echo "   converged $(( $(now_ms) - start )) ms after the heal"
for n in eu-1 us-2 ap-1; do step "$n" counter hits; done
echo "   (12 everywhere: +7 in eu and +5 in ap while apart)"
step ap-2 smembers tags
echo "   (ap's remove could not remove an add it had not seen: geo stays)"

echo
echo "== Replication lag under a short write load in eu"
echo "   100 SETs through the Redis port, 50 each to eu-1 and eu-2, one connection each:"
echo "   for i in \$(seq 1 50); do echo \"SET load-eu-1-\$i v\$i\"; done | redis-cli ... -p PORT"
for n in eu-1 eu-2; do
  answers=$(for i in $(seq 1 50); do echo "SET load-$n-$i v$i"; done | redis_cli "$n")
  [[ $(grep -c '^OK$' <<<"$answers") -eq 50 ]] || { echo "demo.sh: $n did not take the SETs: $answers" >&2; exit 1; }
done
wait_converged
echo
echo "[ap-2] \$ redis-cli ... GET load-eu-2-7"
redis_cli ap-2 GET load-eu-2-7
# Percentiles from the geokv_replication_lag_seconds histogram of a node.
lag_percentiles() {
  local n=$1 source=$2 address=${metrics_address[$1]}
  exec 3<>"/dev/tcp/${address%:*}/${address#*:}"
  printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$address" >&3
  cat <&3 | tr -d '\r' | awk -v src="$source" -v node="$n" '
    $1 ~ /^geokv_replication_lag_seconds_bucket/ && index($1, "source_region=\"" src "\"") {
      match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5)
      les[++k] = le; counts[k] = $2 }
    END {
      total = counts[k]
      if (total == 0) { printf "   %s: no writes from %s yet\n", node, src; exit }
      split("0.5 0.9 0.99", qs, " ")
      line = sprintf("   %s, writes from %s (%d):", node, src, total)
      for (q = 1; q <= 3; q++) {
        for (i = 1; i <= k; i++) if (counts[i] >= qs[q] * total) break
        line = line sprintf(" p%s <= %s s", qs[q] * 100, les[i])
      }
      print line }'
  exec 3>&-
}
lag_percentiles us-1 eu
lag_percentiles ap-1 eu
echo "   (upper bucket bounds; the lag includes each link's one-way delay, and the"
echo "    tail the writes that waited out the partition)"

echo
echo "== metrics: curl http://${metrics_address[eu-1]}/metrics; Prometheus: monitoring/prometheus.yml"
if [[ -z $duration ]]; then
  echo "== the cluster keeps running; Ctrl-C stops it"
  for n in "${nodes[@]}"; do
    echo "   $n: geokv-cli --connect ${client_address[$n]} ${client_tls[*]} --tls-name $n" \
      "--user admin --secret-file $work/admin.secret ..."
  done
  wait "${pids[@]}" || true
else
  [[ $duration -gt 0 ]] && { echo "== keeping the cluster up for $duration s"; sleep "$duration"; }
fi
echo
echo "== stopping the cluster (SIGTERM)"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
pids=()
[[ $status -eq 0 ]] && echo "   clean shutdown" || { echo "   a process exited with $status" >&2; exit 1; }

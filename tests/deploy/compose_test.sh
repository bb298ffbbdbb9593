#!/usr/bin/env bash
# The compose demo (deploy/docker-compose.yml) on a real Docker engine:
# builds the base image if the engine lacks it and the images, starts the
# demo under a project name of its own, and checks that
#   - every node speaks TLS (a plaintext client is refused) and seals its
#     gossip under a key;
#   - every node runs with the users file the certs service made: a
#     certificate naming no user must log in; the user reader, logged in
#     with its secret, may read but its write is refused and changes
#     nothing; the certificate user workload (role write) may not make a
#     node leave or remove a member; the operator (admin) sees peer details;
#   - a write in one region is read in the others;
#   - Prometheus scrapes all six nodes, and the client's workload runs;
#   - `docker kill` of a node leaves the others serving: writes and reads
#     succeed in every region;
#   - `docker network disconnect` of the WAN links from a region's network
#     cuts that region off, and both sides keep accepting writes;
#   - after reconnecting the links and restarting the killed node, all six
#     nodes converge: the same values and the same state digest.
# Tears everything down (`down -v`) however it ends. Prints what it does and
# how long each phase took.
#
# Needs: a Docker engine this user may use (`docker info`), docker-compose
# 1.28+; root or sudo if the base image must be built
# (scripts/docker-base-image.sh). Without an engine it says why and exits 77
# (ctest: skipped).
#
#   GEOKV_CLI=PATH              a geokv-cli on the host: also read through a published port
#   GEOKV_COMPOSE_TEST_KEEP=1   leave the project up at the end (for a look;
#                               `docker-compose -p NAME -f deploy/docker-compose.yml down -v`)
set -euo pipefail
cd "$(dirname "$0")/../.."

skip() { echo "compose_test: SKIPPED: $*"; exit 77; }
command -v docker >/dev/null || skip "no docker command on this machine"
docker_error=$(docker info 2>&1 >/dev/null) || skip "no Docker engine runs here (docker info: ${docker_error##*$'\n'})"
command -v docker-compose >/dev/null || skip "docker-compose is not installed"

t0=$(date +%s)
phase_start=$t0
log() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
fail() { echo "[$(( $(date +%s) - t0 ))s] compose_test: FAILED: $*" >&2; exit 1; }
timings=()
phase_done() {
  local now; now=$(date +%s)
  timings+=("$1: $((now - phase_start)) s")
  phase_start=$now
}

project="geokvtest$$$((RANDOM % 1000))"
compose_file=deploy/docker-compose.yml
dc() { docker-compose -p "$project" -f "$compose_file" "$@"; }
# Host ports: let the engine choose, so nothing here collides with a demo
# or another test on this machine.
export GEOKV_PORT_EU1= GEOKV_PORT_EU2= GEOKV_PORT_US1= GEOKV_PORT_US2= \
  GEOKV_PORT_AP1= GEOKV_PORT_AP2= GEOKV_PORT_PROMETHEUS= GEOKV_PORT_GRAFANA=
export GEOKV_WORKLOAD_INTERVAL=0.2

status=1
teardown() {
  status=$?
  trap - EXIT INT TERM
  if [[ $status -ne 0 ]]; then
    echo "---- compose_test failed: state of project $project"
    dc ps 2>&1 || true
    dc logs --no-color --tail=30 2>&1 | tail -n 250 || true
  fi
  if [[ ${GEOKV_COMPOSE_TEST_KEEP:-0} == 1 ]]; then
    log "keeping project $project up (GEOKV_COMPOSE_TEST_KEEP=1)"
  else
    log "tearing down project $project (down -v)"
    dc down -v --remove-orphans -t 5 >/dev/null 2>&1 || dc down -v --remove-orphans -t 5 || true
  fi
  echo "compose_test: timings:"
  printf '  %s\n' "${timings[@]}" "total: $(( $(date +%s) - t0 )) s"
  [[ $status -eq 0 ]] && echo "compose_test: PASSED"
  exit "$status"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# ---- images
log "building the images (deploy/build-images.sh; the base image first if missing)"
deploy/build-images.sh 2>&1 | sed -u 's/^/    /'
phase_done "images (build-images.sh)"

# ---- start
log "starting project $project: 6 nodes, 3 WAN links, Prometheus, the client"
dc up -d --no-build 2>&1 | sed -u 's/^/    /'
phase_done "docker-compose up (until every node is healthy)"

cid() { dc ps -q "$1"; }
client=$(cid client)
[[ -n $client ]] || fail "no client container"
nodes=(eu-1 eu-2 us-1 us-2 ap-1 ap-2)

# Every port speaks TLS: clients present a certificate the certs service
# made, and verify each node's by its host name. Every node has users: a
# certificate is served as the user it names (client-NAME.pem: CN=NAME).
tls_dir=/etc/geokv/tls
# tls_as NAME: the flags of the client certificate client-NAME.
tls_as() {
  echo --tls-ca "$tls_dir/ca.pem" --tls-cert "$tls_dir/client-$1.pem" --tls-key "$tls_dir/client-$1.key"
}
# geokv-cli against NODE with client certificate CERT, run in the client
# container (on every region's network); GEOKV_SECRET, where set, is passed
# on through the environment.
cli_as() {
  local cert=$1 node=$2; shift 2
  # shellcheck disable=SC2046 # tls_as prints paths without spaces
  docker exec -e GEOKV_SECRET "$client" geokv-cli --connect "$node:7400" $(tls_as "$cert") --timeout 10 "$@"
}
# As the user workload (role write), as the client's workload runs; as the
# user operator (role admin), for what needs admin (info's peer details).
cli() { cli_as workload "$@"; }
admin_cli() { cli_as operator "$@"; }
# Runs "$@" until it succeeds, every 0.2 s, for at most $1 seconds.
wait_until() {
  local limit=$1; shift
  local deadline=$(( $(date +%s) + limit ))
  until "$@" >/dev/null 2>&1; do
    [[ $(date +%s) -lt $deadline ]] || return 1
    sleep 0.2
  done
}
token_of() { sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p'; }
# expect_value WANT NODE ARGS...: the command's output must be WANT.
expect_value() {
  local want=$1 node=$2 got; shift 2
  got=$(cli "$node" "$@" 2>&1) || fail "$node: geokv-cli $* failed: $got"
  [[ $got == "$want" ]] || fail "$node: geokv-cli $*: got '$got', want '$want'"
}
connected_peers() { admin_cli "$1" info | grep -c '^peer: .* connected' || true; }
peers_up() { [[ $(connected_peers "$1") -ge $2 ]]; }
digest_of() { cli "$1" info | sed -n 's/^state_digest: //p'; }
digests() { local n; for n in "$@"; do digest_of "$n" || echo "unreachable-$n"; done; }
all_equal_digests() { [[ $(digests "${nodes[@]}" | sort -u | wc -l) -eq 1 ]]; }
# Prometheus's answer to an instant query, the value alone.
prom_query() {
  docker exec "$client" bash -c '
    exec 3<>/dev/tcp/prometheus/9090 || exit 1
    printf "GET /api/v1/query?query=%s HTTP/1.0\r\nHost: prometheus\r\n\r\n" "$1" >&3
    cat <&3' -- "$1" | sed -n 's/.*"value":\[[^,]*,"\([^"]*\)"\].*/\1/p'
}
targets_up() { [[ $(prom_query 'count(up%7Bjob%3D%22geokv%22%7D%3D%3D1)') == 6 ]]; }
workload_rounds() { cli eu-2 --consistency one counter workload:rounds 2>/dev/null || echo 0; }
workload_running() { [[ $(workload_rounds) -gt 0 ]]; }

log "waiting until every node has its 5 peer links up (its region's other node, 4 across the WAN)"
for n in "${nodes[@]}"; do
  wait_until 90 peers_up "$n" 5 || fail "$n has $(connected_peers "$n") of 5 peer links up"
done
phase_done "peer links up"

log "TLS and the gossip key are in force: a plaintext client is refused"
if docker exec "$client" geokv-cli --connect eu-1:7400 --timeout 3 info >/dev/null 2>&1; then
  fail "eu-1 served a client without TLS"
fi
# The whole log first: `grep -q` in the pipe would end it early, and under
# pipefail the SIGPIPE of `dc logs` would fail the check.
eu1_log=$(dc logs --no-color eu-1)
grep -q "gossip: datagrams sealed under key" <<<"$eu1_log" \
  || fail "eu-1 does not seal its gossip under a key"

# ---- replication across regions
log "a write in eu is read in us and ap"
token=$(cli eu-1 --json set deploy:greeting "hello from eu" | token_of)
[[ -n $token ]] || fail "eu-1: set gave no token"
for n in us-1 ap-2; do
  start_ms=$(date +%s%3N)
  expect_value "hello from eu" "$n" --token "$token" get deploy:greeting
  log "  $n read it (waiting for its token) in $(( $(date +%s%3N) - start_ms )) ms"
done
expect_value OK eu-1 --token "$token" wait-replicated us ap
log "a write in ap is read in eu, without a token (polling)"
cli ap-1 set deploy:from-ap "hello from ap" >/dev/null || fail "ap-1: set failed"
has_ap_write() { [[ $(cli eu-2 get deploy:from-ap) == 'hello from ap' ]]; }
wait_until 30 has_ap_write || fail "eu-2 did not get ap-1's write within 30 s"
phase_done "replication"

# ---- users and roles
# expect_refused WANT NODE CLI ARGS...: the geokv-cli call must fail with
# exit code 3 (an error from the node) and say WANT.
expect_refused() {
  local want=$1 node=$2 run=$3 rc=0 out; shift 3
  out=$("$run" "$node" "$@" 2>&1) || rc=$?
  [[ $rc -eq 3 && $out == *"$want"* ]] \
    || fail "$node: $run $* should be refused with $want (exit 3), got exit $rc: $out"
}
log "every node has the users file: a certificate naming no user (guest) must log in"
guest_cli() { cli_as guest "$@"; }
for n in "${nodes[@]}"; do
  expect_refused "unauthenticated" "$n" guest_cli info
done
# As the user reader (role read), logged in over the guest certificate
# with the secret the certs service made: through GEOKV_SECRET, or
# --secret-file in the container; never on a command line.
reader_secret=$(docker exec "$client" cat "$tls_dir/reader.secret") || fail "no reader.secret in the tls volume"
reader_cli() { GEOKV_SECRET=$reader_secret cli_as guest "$1" --user reader "${@:2}"; }
reader_file_cli() { cli_as guest "$1" --user reader --secret-file "$tls_dir/reader.secret" "${@:2}"; }
wrong_secret_cli() { GEOKV_SECRET=not-the-secret cli_as guest "$1" --user reader "${@:2}"; }
log "the user reader (secret in GEOKV_SECRET) reads; its writes are refused and change nothing"
expect_value "hello from eu" us-2 --token "$token" get deploy:greeting  # (as workload) us-2 has it
got=$(reader_cli us-2 get deploy:greeting 2>&1) || fail "us-2: reader's get failed: $got"
[[ $got == "hello from eu" ]] || fail "us-2: reader's get deploy:greeting gave '$got'"
for n in us-2 eu-1; do
  expect_refused PERMISSION_DENIED "$n" reader_cli set deploy:greeting "overwritten by reader"
  expect_refused PERMISSION_DENIED "$n" reader_file_cli set deploy:by-reader "written by reader"
  expect_refused PERMISSION_DENIED "$n" reader_file_cli incrby deploy:hits 100
done
expect_value "hello from eu" eu-1 get deploy:greeting
expect_value "hello from eu" us-2 get deploy:greeting
rc=0; out=$(cli eu-1 get deploy:by-reader 2>&1) || rc=$?
[[ $rc -eq 1 ]] || fail "eu-1: deploy:by-reader should not exist after reader's refused set (exit $rc: $out)"
rc=0; out=$(cli eu-1 counter deploy:hits 2>&1) || rc=$?
[[ $rc -eq 1 || $out == 0 ]] || fail "eu-1: deploy:hits should be unset after reader's refused incrby (exit $rc: $out)"
expect_refused "refused" eu-1 wrong_secret_cli get deploy:greeting
log "  reader read deploy:greeting on us-2; its set and incrby were refused (PERMISSION_DENIED) on us-2 and eu-1, and a wrong secret is refused"
log "the certificate user workload (role write) may not make a node leave or remove a member, nor see peer details"
expect_refused PERMISSION_DENIED eu-1 cli leave
expect_refused PERMISSION_DENIED eu-1 cli remove eu-2
expect_refused PERMISSION_DENIED us-1 cli remove us-2
workload_peer_lines=$(cli eu-1 info | grep -c '^peer:' || true)
[[ $workload_peer_lines -eq 0 ]] || fail "eu-1 showed workload $workload_peer_lines peer lines in info (admin only)"
[[ $(connected_peers eu-1) -ge 5 ]] || fail "eu-1 showed operator $(connected_peers eu-1) connected peers, want 5"
# member_alive NODE MEMBER: NODE counts MEMBER (of its region) alive.
member_alive() { grep -Eq "^${2%%-*} +$2 +alive" <<<"$(cli "$1" members)"; }
for pair in "eu-2 eu-1" "eu-1 eu-2" "us-1 us-2"; do
  read -r n m <<<"$pair"
  member_alive "$n" "$m" || fail "$n does not count $m alive after the refused leave and remove: $(cli "$n" members)"
done
log "  leave and remove were refused (PERMISSION_DENIED); every member is still alive; operator sees the peers"
phase_done "users and roles"

log "Prometheus scrapes all six nodes and loaded the alert rules; the client's workload runs"
wait_until 60 targets_up || fail "Prometheus: $(prom_query 'count(up%7Bjob%3D%22geokv%22%7D%3D%3D1)') of 6 targets up"
rule_groups=$(docker exec "$client" bash -c '
  exec 3<>/dev/tcp/prometheus/9090 && printf "GET /api/v1/rules HTTP/1.0\r\n\r\n" >&3 && cat <&3' \
  | grep -o '"name":"geokv-[a-z]*"' | sort -u | wc -l)
[[ $rule_groups -ge 1 ]] || fail "Prometheus loaded no geokv alert group from monitoring/alerts.yml"
wait_until 60 workload_running || fail "the workload counted no round in 60 s"
log "  6 of 6 targets up, $rule_groups alert groups; the workload has done $(workload_rounds) rounds"

log "the published host ports answer"
host_port() { dc port "$1" "$2" | sed -n 's/.*:\([0-9]*\)$/\1/p'; }
eu1_port=$(host_port eu-1 7400)
prometheus_port=$(host_port prometheus 9090)
[[ -n $eu1_port && -n $prometheus_port ]] || fail "eu-1:7400 or prometheus:9090 is not published"
if [[ -x ${GEOKV_CLI:-} ]]; then
  host_tls=$(mktemp -d)
  for f in ca.pem client-workload.pem client-workload.key; do
    docker cp "$client:$tls_dir/$f" "$host_tls/$f" >/dev/null || fail "cannot copy $f out of the client"
  done
  expect_host=$("$GEOKV_CLI" --connect "127.0.0.1:$eu1_port" --tls-ca "$host_tls/ca.pem" \
      --tls-cert "$host_tls/client-workload.pem" --tls-key "$host_tls/client-workload.key" \
      --tls-name eu-1 --timeout 10 get deploy:greeting) \
    || fail "geokv-cli on the host could not read through 127.0.0.1:$eu1_port"
  [[ $expect_host == "hello from eu" ]] || fail "host read through 127.0.0.1:$eu1_port gave '$expect_host'"
  rm -rf "$host_tls"
  log "  eu-1's client API on 127.0.0.1:$eu1_port: the host's geokv-cli read deploy:greeting over TLS"
else
  (exec 3<>"/dev/tcp/127.0.0.1/$eu1_port") || fail "nothing listens on eu-1's published port $eu1_port"
  log "  eu-1's client API on 127.0.0.1:$eu1_port accepts connections (set GEOKV_CLI for a real read)"
fi
ready=$(exec 3<>"/dev/tcp/127.0.0.1/$prometheus_port" && printf 'GET /-/ready HTTP/1.0\r\n\r\n' >&3 && head -n1 <&3)
[[ $ready == *" 200 "* ]] || fail "Prometheus on 127.0.0.1:$prometheus_port: $ready"
log "  Prometheus on 127.0.0.1:$prometheus_port is ready"
phase_done "metrics, workload, host ports"

# ---- kill a node
eu1=$(cid eu-1)
log "docker kill eu-1 (SIGKILL)"
docker kill "$eu1" >/dev/null
[[ $(docker inspect -f '{{.State.Running}}' "$eu1") == false ]] || fail "eu-1 still runs after docker kill"
log "every region still takes writes and reads (consistency ONE: N = 2, eu has one owner left)"
declare -A after_kill_token
for n in eu-2 us-1 ap-1; do
  reply=$(cli "$n" --json --consistency one set "deploy:after-kill:$n" "written on $n" 2>&1) \
    || fail "$n: write after the kill failed: $reply"
  after_kill_token[$n]=$(token_of <<<"$reply")
  expect_value "written on $n" "$n" --consistency one get "deploy:after-kill:$n"
done
expect_value "written on eu-2" us-2 --consistency one --token "${after_kill_token[eu-2]}" get deploy:after-kill:eu-2
expect_value "written on ap-1" eu-2 --consistency one --token "${after_kill_token[ap-1]}" get deploy:after-kill:ap-1
is_dead() { cli eu-2 members | grep -Eq "^eu +eu-1 +dead"; }
wait_until 30 is_dead || fail "eu-2 never declared eu-1 dead"
log "  eu-2's gossip declared eu-1 dead; writes and reads went on in eu, us and ap"
[[ $(docker inspect -f '{{.State.Running}}' "$eu1") == false ]] \
  || log "  (note: the engine restarted eu-1 by itself)"
phase_done "kill"

# ---- cut ap off
ap_net="${project}_ap"
links=(wan-eu-ap wan-us-ap)
log "docker network disconnect $ap_net from ${links[*]}: ap is cut off"
for l in "${links[@]}"; do docker network disconnect "$ap_net" "$(cid "$l")"; done
cut_start=$(date +%s)
log "both sides keep accepting writes"
cli ap-1 set deploy:partition:ap "ap, while cut off" >/dev/null || fail "ap-1: write during the partition failed"
cli ap-2 incrby deploy:hits 5 >/dev/null || fail "ap-2: increment during the partition failed"
eu_reply=$(cli eu-2 --json --consistency one set deploy:partition:eu "eu, while ap was away" 2>&1) \
  || fail "eu-2: write during the partition failed: $eu_reply"
eu_token=$(token_of <<<"$eu_reply")
cli eu-2 --consistency one incrby deploy:hits 7 >/dev/null || fail "eu-2: increment during the partition failed"
us_reply=$(cli us-1 --json incrby deploy:hits 11 2>&1) || fail "us-1: increment during the partition failed: $us_reply"
us_token=$(token_of <<<"$us_reply")
log "the cut is real: eu's write reaches us but not ap"
expect_value OK eu-2 --token "$eu_token" wait-replicated us --wait 10000
if out=$(cli eu-2 --token "$eu_token" wait-replicated ap --wait 3000 2>&1); then
  fail "ap got eu's write through the partition: $out"
fi
rc=0; out=$(cli ap-1 --consistency one get deploy:partition:eu 2>&1) || rc=$?
[[ $rc -eq 1 ]] || fail "ap-1 should not have deploy:partition:eu (exit $rc: $out)"
expect_value 5 ap-1 counter deploy:hits
expect_value 18 us-2 --token "$eu_token" --token "$us_token" counter deploy:hits
log "  ap counts 5 (its own), us 18 (eu's 7 and us's 11)"
phase_done "partition"

# ---- heal
log "reconnecting the links to $ap_net; restarting eu-1"
for l in "${links[@]}"; do docker network connect --alias "$l" "$ap_net" "$(cid "$l")"; done
heal_start=$(date +%s)
docker start "$eu1" >/dev/null
wait_until 60 cli eu-1 info || fail "eu-1 did not come back"
log "pausing the workload so the nodes can settle"
docker exec "$client" touch /tmp/workload.pause
wait_until 30 docker exec "$client" test -e /tmp/workload.paused || fail "the workload did not pause"
log "waiting until all six nodes hold the same state (state digest)"
wait_until 180 all_equal_digests || { digests "${nodes[@]}" | paste -d' ' <(printf '%s\n' "${nodes[@]}") -; fail "no convergence within 180 s of the heal"; }
log "  converged $(( $(date +%s) - heal_start )) s after the heal (ap was cut off $(( heal_start - cut_start )) s); digest $(digest_of eu-1)"
for n in "${nodes[@]}"; do
  expect_value 23 "$n" --consistency one counter deploy:hits
  expect_value "ap, while cut off" "$n" --consistency one get deploy:partition:ap
  expect_value "eu, while ap was away" "$n" --consistency one get deploy:partition:eu
  expect_value "written on eu-2" "$n" --consistency one get deploy:after-kill:eu-2
  expect_value "hello from eu" "$n" --consistency one get deploy:greeting
done
log "  every node: deploy:hits = 23, and every write made during the kill and the partition"
cli eu-1 set deploy:after-restart "eu-1 is back" >/dev/null || fail "eu-1: write after its restart failed"
expect_value "eu-1 is back" eu-2 get deploy:after-restart
rounds=$(workload_rounds)
log "the workload counted $rounds rounds; its log ends: $(docker logs "$client" 2>&1 | tail -n1)"
phase_done "heal and convergence"
status=0

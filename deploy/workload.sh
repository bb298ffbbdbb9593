#!/usr/bin/env bash
# The compose demo's client: a continuous light workload through geokv-cli.
# Each round writes a key in one region, reads it in another with the
# write's causal token (the read waits for the write to cross the WAN
# link), and counts the round in the counter `workload:rounds`. It prints a
# summary every GEOKV_WORKLOAD_REPORT rounds; failures are counted, never
# fatal (nodes die and regions are cut off in this demo).
#
#   GEOKV_WORKLOAD_NODES     nodes' client APIs (default: the demo's six, port 7400)
#   GEOKV_WORKLOAD_INTERVAL  pause between rounds, seconds (default 0.2)
#   GEOKV_WORKLOAD_KEYS      distinct keys written (default 1000)
#   GEOKV_WORKLOAD_REPORT    rounds between summaries (default 20)
#   GEOKV_WORKLOAD_TLS_DIR   with TLS: the directory of ca.pem and the client's
#                            client-workload.pem and .key (scripts/gen-certs.sh);
#                            each node's certificate carries its host name. On
#                            nodes with users, it is served as the user
#                            workload, who needs the role write
#
# While /tmp/workload.pause exists it sends nothing and says so in
# /tmp/workload.paused (tests use this to let the cluster settle).
set -uo pipefail
read -r -a nodes <<<"${GEOKV_WORKLOAD_NODES:-eu-1 eu-2 us-1 us-2 ap-1 ap-2}"
interval=${GEOKV_WORKLOAD_INTERVAL:-0.2}
keys=${GEOKV_WORKLOAD_KEYS:-1000}
report=${GEOKV_WORKLOAD_REPORT:-20}
trap 'echo "workload: stopped after $round rounds ($ok ok, $failed failed)"; exit 0' TERM INT

tls=()
if [[ -n ${GEOKV_WORKLOAD_TLS_DIR:-} ]]; then
  d=$GEOKV_WORKLOAD_TLS_DIR
  tls=(--tls-ca "$d/ca.pem" --tls-cert "$d/client-workload.pem" --tls-key "$d/client-workload.key")
fi
cli() { local node=$1; shift; geokv-cli --connect "$node:7400" "${tls[@]}" --timeout 10 "$@"; }
round=0 ok=0 failed=0
spread=$(( ${#nodes[@]} > 3 ? ${#nodes[@]} - 3 : 1 ))
echo "workload: ${#nodes[@]} nodes (${nodes[*]}), a round every ${interval}s"
while true; do
  if [[ -e /tmp/workload.pause ]]; then
    [[ -e /tmp/workload.paused ]] || echo "workload: paused after $round rounds, $ok ok, $failed failed"
    touch /tmp/workload.paused
    sleep 0.2
    continue
  fi
  [[ -e /tmp/workload.paused ]] && { rm -f /tmp/workload.paused; echo "workload: resumed"; }
  round=$((round + 1))
  # With the default list (two nodes per region, in order), the reader is
  # always in another region than the writer.
  i=$((RANDOM % ${#nodes[@]}))
  src=${nodes[$i]}
  dst=${nodes[$(( (i + 2 + RANDOM % spread) % ${#nodes[@]} ))]}
  key="workload:$((round % keys))"
  step="set $key on $src"
  reply=$(cli "$src" --json set "$key" "round $round from $src" 2>&1)
  token=$(sed -n 's/.*"token":"\([0-9a-f]*\)".*/\1/p' <<<"$reply")
  if [[ -n $token ]]; then
    step="get $key on $dst with the token"
    reply=$(cli "$dst" --token "$token" get "$key" 2>&1) \
      && { step="incrby workload:rounds on $src"; reply=$(cli "$src" incrby workload:rounds 1 2>&1); } \
      && step=""
  fi
  if [[ -z $step ]]; then
    ok=$((ok + 1))
  else
    failed=$((failed + 1))
    echo "workload: round $round failed: $step: ${reply:-no reply}"
  fi
  (( round % report == 0 )) && echo "workload: $round rounds, $ok ok, $failed failed"
  sleep "$interval"
done

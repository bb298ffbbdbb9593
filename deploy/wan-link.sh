#!/usr/bin/env bash
# One WAN link of the compose demo: a container on the networks of two
# regions running one geokv-wan-proxy per node of those regions, each
# delaying both directions by the link's one-way delay.
#
#   wan-link.sh DELAY_MS PORT=HOST:PORT...   proxy PORT to HOST:PORT; control on PORT+100
#   wan-link.sh --health                     exit 0 if every proxy answers on its control port
#
# GEOKV_WAN_JITTER_MS (default 2) adds jitter. If one proxy exits, the others
# are stopped and the script exits 1, so the container's restart policy
# starts the link again. SIGTERM stops them all and exits 0.
set -uo pipefail
ports_file=/tmp/wan-link.control-ports

if [[ ${1:-} == --health ]]; then
  [[ -s $ports_file ]] || exit 1
  while read -r port; do
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    echo status >&3
    read -r -t 2 reply <&3 || exit 1
    exec 3>&-
    [[ $reply == ok* ]] || exit 1
  done <"$ports_file"
  exit 0
fi

[[ $# -ge 2 && $1 =~ ^[0-9]+$ ]] || { echo "usage: wan-link.sh DELAY_MS PORT=HOST:PORT..." >&2; exit 2; }
delay=$1; shift
jitter=${GEOKV_WAN_JITTER_MS:-2}
pids=()
stop() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  wait
}
trap 'stop; exit 0' TERM INT
: >"$ports_file"
for spec in "$@"; do
  port=${spec%%=*} target=${spec#*=}
  echo "wan-link: :$port -> $target, ${delay} ms one way (+0..${jitter} ms), control :$((port + 100))"
  geokv-wan-proxy --listen "0.0.0.0:$port" --target "$target" --delay-ms "$delay" \
    --jitter-ms "$jitter" --control "0.0.0.0:$((port + 100))" --log-level warn &
  pids+=($!)
  echo $((port + 100)) >>"$ports_file"
done
wait -n
status=$?
echo "wan-link: a proxy exited with $status; stopping the link" >&2
stop
exit 1

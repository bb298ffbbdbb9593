#!/usr/bin/env bash
# Installs, from the system's configured Debian package sources, the packages
# geokv needs to build and test that this machine lacks. Idempotent: when all
# are present it only checks and exits.
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  capnproto libcapnp-dev
  libssl-dev  # TLS: kj-tls's OpenSSL, and util/tls's checks of certificate files
  openssl  # tests: the CA and certificates of TLS clusters
  librocksdb-dev
  libzstd-dev  # compressed peer connections (util/zstd_stream.h)
  libgtest-dev libgmock-dev librapidcheck-dev
  libspdlog-dev libfmt-dev libcli11-dev
  libboost-dev
  prometheus-cpp-dev
  prometheus  # tests: promtool, and a real server scraping a cluster
  python3  # tests: the dashboard and alert checks (tests/monitoring)
  faketime  # tests: a node whose clock is off
  redis-tools  # tests: redis-cli against the Redis port
  python3-venv  # tests: redis-py in a virtual environment under the build dir
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# Makes the virtual environment the redis-py tests run in, under the build
# dir (never system-wide): python3 -m venv DIR, then pip install redis.
# When the package index cannot be reached this is not a failure: the
# tests that need it skip and say why.
set -uo pipefail
venv=${1:?usage: make_venv.sh VENV_DIR}
if "$venv/bin/python" -c 'import redis' 2>/dev/null; then
  echo "make_venv: redis-py already in $venv"
  exit 0
fi
if ! python3 -m venv "$venv"; then
  echo "make_venv: python3 -m venv failed (Debian: install python3-venv); redis-py tests will skip"
  exit 0
fi
if ! timeout 180 "$venv/bin/pip" install --quiet --disable-pip-version-check 'redis>=4.5'; then
  echo "make_venv: pip could not install redis from the package index; redis-py tests will skip"
fi
exit 0

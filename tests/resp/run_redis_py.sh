#!/usr/bin/env bash
# Runs the redis-py suite with the build dir's virtual environment, or
# skips (exit 77) with the reason when redis-py could not be installed.
set -uo pipefail
venv=${1:?usage: run_redis_py.sh VENV_DIR GEOKV_SERVER}
server=${2:?usage: run_redis_py.sh VENV_DIR GEOKV_SERVER}
if ! "$venv/bin/python" -c 'import redis' 2>/dev/null; then
  echo "SKIP: redis-py is not in $venv (make_venv.sh could not install it; see resp_venv's output)"
  exit 77
fi
exec "$venv/bin/python" "$(dirname "$0")/redis_py_test.py" --server "$server"

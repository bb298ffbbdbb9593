#!/usr/bin/env bash
# Installs what is missing, builds with sanitizers, and runs every test.
# Exits non-zero on any failure.
#   GEOKV_BUILD_DIR  build directory (default: build/test)
#   GEOKV_SANITIZE   sanitizers (default: address,undefined; empty for none)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh

build_dir=${GEOKV_BUILD_DIR:-build/test}
sanitize=${GEOKV_SANITIZE-address,undefined}

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGEOKV_SANITIZE="$sanitize"
cmake --build "$build_dir" -j2
cd "$build_dir"
ctest --output-on-failure -j2 --timeout 900

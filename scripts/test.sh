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

# -O1 -g1: half the compile time of RelWithDebInfo's -O2 -g under the
# sanitizers (docs/testing.md), with line numbers in their reports.
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGEOKV_SANITIZE="$sanitize" \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG"
cmake --build "$build_dir" -j2
cd "$build_dir"
ctest --output-on-failure -j2 --timeout 900

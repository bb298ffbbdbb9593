#!/usr/bin/env bash
# Builds the benchmarks (Release, in their own build directory) and runs every
# figure of issue 16's table, each through its program's --json output, into
# one file per figure; then prints the table (scripts/bench_table.py) and, on
# a full run of every figure, writes it into docs/benchmarks.md.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
table="$root/scripts/bench_table.py"

usage() {
  cat <<EOF
usage: scripts/bench.sh [--quick] [--only NAME]... [--out DIR] [--build-dir DIR]
                        [--no-build] [--no-doc] [--dry-run]

Builds geokv's benchmarks Release and runs the figures of issue 16's table:
one JSON file per figure (NAME.json, the benchmark's --json output, and
NAME.run.json: command, commit, mode, seconds, exit status) in the output
directory, then prints the table with scripts/bench_table.py.

A full run takes about 11 minutes on a 2-core machine, plus the build (seconds
when it is up to date): most of it is the watch of false-deaths (4 minutes
rather than the goal's 10, to stay under 15 in all), the 60 s partition of
converge and the 20 kills of detect. --quick takes about a minute. Run it on a
quiet machine: every figure is a ratio within one run, but the two cores are
shared by client, servers and benchmark.

  --quick          a smoke run: seconds per figure, small data; its numbers
                   are not measurements (the table says so)
  --only NAME      run only this figure (repeatable); the others' files in
                   the output directory stay as they are
  --out DIR        the output directory (default: build/bench/results)
  --build-dir DIR  the Release build directory (default: build/bench)
  --no-build       use the binaries already in the build directory
  --no-doc         do not write the table into docs/benchmarks.md (a quick
                   run never does)
  --dry-run        print the commands of the figures, run nothing
  --help           this text

Figures (NAME):
$(python3 "$table" --names | sed 's/^/  /')
EOF
}

quick=0
only=()
build_dir="$root/build/bench"
out=""
build=1
doc=1
dry_run=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --quick) quick=1; shift ;;
    --only) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; only+=("$2"); shift 2 ;;
    --out) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; out=$2; shift 2 ;;
    --build-dir) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; build_dir=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --no-doc) doc=0; shift ;;
    --dry-run) dry_run=1; build=0; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
out=${out:-$build_dir/results}

mapfile -t all_names < <(python3 "$table" --names)
for name in "${only[@]}"; do
  [[ " ${all_names[*]} " == *" $name "* ]] ||
    { echo "bench.sh: no figure $name (one of: ${all_names[*]})" >&2; exit 2; }
done
names=("${all_names[@]}")
[[ ${#only[@]} -eq 0 ]] || names=("${only[@]}")

if [[ $build -eq 1 ]]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DGEOKV_SANITIZE= "${launcher[@]}" >/dev/null
  cmake --build "$build_dir" -j"$(nproc)" --target geokv-server geokv-bench geokv-store-bench \
    geokv-repl-bench geokv-cluster-bench
fi
bin="$build_dir/bench"
server="$build_dir/server/geokv-server"
[[ $dry_run -eq 1 ]] || for b in "$server" "$bin/geokv-bench" "$bin/geokv-store-bench" "$bin/geokv-repl-bench" \
  "$bin/geokv-cluster-bench"; do
  [[ -x "$b" ]] || { echo "bench.sh: $b is missing (build it, or drop --no-build)" >&2; exit 2; }
done

# The command of one figure, full or quick, on stdout one word a line.
w() { printf '%s\n' "$@"; }
figure_command() {
  local name=$1 q=$quick
  case "$name" in
    noop-a|noop-a-fsync)
      local durability=wal
      [[ $name == noop-a-fsync ]] && durability=fsync
      w "$bin/geokv-bench" compare --workload A --batch 1 --inflight 64 --durability "$durability"
      if [[ $q -eq 1 ]]; then w --keys 2000 --duration 1; else w --duration 10; fi ;;
    rocksdb-w)
      w "$bin/geokv-bench" compare --workload W --batch 100 --inflight 8 --value-size 100 \
        --durability wal
      if [[ $q -eq 1 ]]; then w --keys 2000 --duration 1; else w --duration 10; fi ;;
    store-lww)
      w "$bin/geokv-store-bench" --json
      [[ $q -eq 0 ]] || w --quick ;;
    quorum)
      w "$bin/geokv-cluster-bench" throughput --no-aggregate
      if [[ $q -eq 1 ]]; then w --keys 2000 --duration 1; else w --duration 10; fi ;;
    lag)
      w "$bin/geokv-repl-bench" lag --delay-ms 50
      if [[ $q -eq 1 ]]; then w --peak-seconds 1 --duration 2; fi ;;
    orset-bytes)
      w "$bin/geokv-repl-bench" orset-bytes --elements
      if [[ $q -eq 1 ]]; then w 2000 --repeats 2; else w 100000 --repeats 10; fi ;;
    converge)
      w "$bin/geokv-repl-bench" converge
      if [[ $q -eq 1 ]]; then
        w --partition-seconds 3 --keys 3000 --max-backlog 64KiB
      else
        w --partition-seconds 60 --keys 100000 --max-backlog 1MiB
      fi ;;
    detect)
      w "$bin/geokv-cluster-bench" detect --trials
      if [[ $q -eq 1 ]]; then w 2; else w 20; fi ;;
    false-deaths)
      w "$bin/geokv-cluster-bench" false-positives --drop 0.05 --minutes
      if [[ $q -eq 1 ]]; then w 0.2; else w 4; fi ;;
    one-connection)
      w "$root/bench/resp_bench.sh" --server "$server" --one-connection "$bin/geokv-bench"
      if [[ $q -eq 1 ]]; then
        w --keys 2000 --duration 1 --requests 100000
      else
        w --keys 100000 --duration 10 --requests 2000000
      fi ;;
  esac
  # Every benchmark program takes --json; resp_bench.sh's one-connection
  # mode prints JSON of its own.
  case "$name" in store-lww|one-connection) ;; *) w --json ;; esac
}

if [[ $dry_run -eq 1 ]]; then
  for name in "${names[@]}"; do
    mapfile -t cmd < <(figure_command "$name")
    echo "$name: ${cmd[*]}"
  done
  exit 0
fi

mkdir -p "$out"
commit=$(git -C "$root" rev-parse --short HEAD)
# Uncommitted changes to what is measured (not to the docs this run rewrites).
git -C "$root" diff --quiet HEAD -- . ':(exclude)*.md' || commit="$commit+dirty"
mode=full
[[ $quick -eq 0 ]] || mode=quick
started=$(date +%s)
for name in "${names[@]}"; do
  mapfile -t cmd < <(figure_command "$name")
  shown=${cmd[*]}
  shown=${shown//$root\//}
  echo "== $name: $shown" >&2
  t0=$(date +%s.%N)
  rc=0
  "${cmd[@]}" >"$out/$name.json" 2>"$out/$name.log" || rc=$?
  t1=$(date +%s.%N)
  [[ $rc -eq 0 ]] || echo "bench.sh: $name exited $rc (see $out/$name.log)" >&2
  python3 - "$out/$name.run.json" "$shown" "$commit" "$mode" "$t0" "$t1" "$rc" <<'EOF'
import json, sys, time
path, command, commit, mode, t0, t1, rc = sys.argv[1:]
with open(path, "w", encoding="utf-8") as f:
    json.dump({"command": command, "commit": commit, "mode": mode,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "seconds": round(float(t1) - float(t0), 1), "exit": int(rc)}, f)
    f.write("\n")
EOF
  echo "   $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", b - a }') s" >&2
done
echo "== all: $(( $(date +%s) - started )) s" >&2

doc_args=()
if [[ $quick -eq 0 && $doc -eq 1 ]]; then doc_args=(--doc "$root/docs/benchmarks.md"); fi
python3 "$table" "$out" "${doc_args[@]}"

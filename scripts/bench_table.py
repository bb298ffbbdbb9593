#!/usr/bin/env python3
"""Prints the table of issue 16's figures from the JSON files scripts/bench.sh writes.

Every figure is one file NAME.json in the results directory: the --json output
of the benchmark that measures it. Beside it, NAME.run.json (written by
bench.sh) holds the command, the commit, the mode (full or quick), how long it
took and its exit status. The goals live here, in FIGURES, and every ratio is
computed here from the benchmarks' raw fields (ops/s, bytes, milliseconds), so
that the table holds one set of goals whatever each program prints.

  scripts/bench_table.py RESULTS_DIR                 # the table on stdout
  scripts/bench_table.py RESULTS_DIR --doc docs/benchmarks.md
      # also replaces the table between the markers in that file

Standard library only.
"""

import argparse
import json
import os
import subprocess
import sys

BEGIN = "<!-- bench-table:begin -->"
END = "<!-- bench-table:end -->"


class Row:
    """One line of the table: what `measure(data)` returns is (value text, met)."""

    def __init__(self, figure, goal, measure):
        self.figure = figure
        self.goal = goal
        self.measure = measure


def ops(data, target):
    """ops/s of one target of a geokv-bench compare (no-op, geokv, rocksdb)."""
    for result in data["results"]:
        if result["target"] == target:
            return result["ops_per_s"]
    raise KeyError(target)


def rate_ratio(num, den):
    return num / den if den > 0 else 0.0


def compare_ratio(other, goal):
    def measure(data):
        g, o = ops(data, "geokv"), ops(data, other)
        r = rate_ratio(g, o)
        return f"{r:.2f} ({g:,.0f} vs {o:,.0f} ops/s)", r >= goal
    return measure


def store_lww(goal):
    def measure(data):
        cell = next(c for c in data["cells"] if c["durability"] == "wal" and c["per_commit"] > 1)
        r = rate_ratio(cell["geokv_ops_per_s"], cell["rocksdb_ops_per_s"])
        return (f"{r:.2f} ({cell['geokv_ops_per_s']:,.0f} vs "
                f"{cell['rocksdb_ops_per_s']:,.0f} ops/s)"), r >= goal
    return measure


def quorum(workload, goal):
    def measure(data):
        def rate(runs):
            return next(r["ops_per_s"] for r in runs if r["workload"] == workload)
        three, one = rate(data["three_nodes"]), rate(data["one_node"])
        r = rate_ratio(three, one)
        return f"{r:.2f} ({three:,.0f} vs {one:,.0f} ops/s)", r >= goal
    return measure


def lag(slack_ms):
    def measure(data):
        p99 = data["lag_ms"]["p99"]
        over = p99 - data["delay_ms"]
        return (f"{over:.0f} ms (p99 {p99:.0f} ms at {data['achieved_rate']:,.0f} sets/s)",
                over <= slack_ms)
    return measure


def orset_bytes(data):
    size = data["into_big_set"]["replication_to_r1"]["median"]
    goal = 2 * data["element_size"] + 60
    return (f"{size:.0f} B (goal {goal} B for {data['element_size']}-byte elements, "
            f"{data['elements']:,} in the set)"), size <= goal


def converge(goal_s):
    def measure(data):
        s = data["converge_s"]
        path = data["path"]
        return f"{s:.2f} s ({path})", s <= goal_s and path == "anti-entropy"
    return measure


def detect(goal_ms):
    def measure(data):
        d = data["dead_ms"]
        return (f"{d['median'] / 1000:.2f} s (median of {d['count']}; max {d['max'] / 1000:.2f} s)",
                d["median"] <= goal_ms)
    return measure


def false_deaths(goal_minutes):
    def measure(data):
        detections = data["failure_detections"] - data["failure_detections_at_start"]
        deaths = max(data["to_dead"], detections)
        minutes = data["seconds"] / 60
        value = (f"{deaths} in {minutes:.1f} min at {data['gossip_drop'] * 100:g}% loss "
                 f"({data['to_suspect']} turns to suspect)")
        # Fewer minutes watched than the goal's: met only for what was watched.
        partial = f" ({minutes:.1f} of {goal_minutes} min)" if minutes < goal_minutes else ""
        return value, deaths == 0, partial
    return measure


def one_connection(goal):
    def measure(data):
        g, r = data["geokv_get_per_s"], data["redis_get_per_s"]
        ratio = rate_ratio(g, r or 0)
        return f"{ratio:.2f} ({g:,.0f} vs {r:,.0f} GET/s)", ratio >= goal
    return measure


# (file name, its rows), in the order of issue 16's table.
FIGURES = [
    ("noop-a", [Row("single ops, workload A, 64 in flight, wal: geokv / no-op server", "≥ 0.9",
                    compare_ratio("no-op", 0.9))]),
    ("noop-a-fsync", [Row("the same in fsync: geokv / no-op server", "≥ 0.8",
                          compare_ratio("no-op", 0.8))]),
    ("rocksdb-w", [Row("workload W, batches of 100: geokv / plain RocksDB batched puts", "≥ 0.7",
                       compare_ratio("rocksdb", 0.7))]),
    ("store-lww", [Row("store: grouped LWW applies / RocksDB batched puts (wal)", "≥ 0.6",
                       store_lww(0.6))]),
    ("quorum", [Row("three-node region at QUORUM / one node, W (sets)", "≥ 0.6", quorum("W", 0.6)),
                Row("three-node region at QUORUM / one node, C (gets)", "≥ 0.6", quorum("C", 0.6))]),
    ("lag", [Row("replication lag p99 − one-way delay (50 ms), at half the peak rate", "≤ 15 ms",
                 lag(15))]),
    ("orset-bytes", [Row("bytes r0 → r1 for one add to a large OR-set", "≤ 2 × element + 60 B",
                         orset_bytes)]),
    ("converge", [Row("convergence after a partition, through anti-entropy", "≤ 5 s",
                      converge(5))]),
    ("detect", [Row("median time to declare a SIGKILLed node dead (500 ms period)", "≤ 2.5 s",
                    detect(2500))]),
    ("false-deaths", [Row("false deaths at 5% gossip loss", "0 over 10 min", false_deaths(10))]),
    ("one-connection", [Row("one connection, 64 in flight: geokv GET (Cap'n Proto) / redis GET -P 64",
                            "≥ 0.5", one_connection(0.5))]),
]

NAMES = [name for name, _ in FIGURES]


def head_commit():
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        return subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def read_json(path):
    """The object in a file (the last line that parses, for outputs with progress lines)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                return json.loads(line)
        raise


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(results_dir):
    """The table's lines (Markdown) and whether any figure came from a quick run."""
    lines = ["| figure | measured | goal | result | command | commit |",
             "| --- | --- | --- | --- | --- | --- |"]
    quick = False
    fallback_commit = None
    for name, rows in FIGURES:
        run = {}
        run_path = os.path.join(results_dir, name + ".run.json")
        if os.path.exists(run_path):
            run = read_json(run_path)
        if run.get("mode") == "quick":
            quick = True
        commit = run.get("commit")
        if not commit:
            fallback_commit = fallback_commit or head_commit()
            commit = fallback_commit
        command = f"`{run['command']}`" if run.get("command") else ""
        data, problem = None, None
        data_path = os.path.join(results_dir, name + ".json")
        if run.get("skipped"):
            problem = "skipped: " + run["skipped"]
        elif not os.path.exists(data_path):
            problem = "not run"
        else:
            try:
                data = read_json(data_path)
            except (OSError, ValueError) as e:
                problem = f"no JSON ({e.__class__.__name__})"
            if run.get("exit", 0) != 0:
                problem = f"failed (exit {run['exit']})"
        for row in rows:
            if problem is None:
                try:
                    value, met, *qualifier = row.measure(data)
                    result = ("met" if met else "MISSED") + "".join(qualifier)
                except (KeyError, TypeError, ValueError, StopIteration, ZeroDivisionError) as e:
                    value, result = f"unreadable JSON ({e.__class__.__name__}: {e})", "—"
            else:
                value, result = problem, "—"
            lines.append("| " + " | ".join(cell(c) for c in (
                row.figure, value, row.goal, result, command, commit)) + " |")
    return lines, quick


def render(results_dir):
    lines, quick = table(results_dir)
    intro = ("Generated by `scripts/bench_table.py` from the `--json` output of "
             "`scripts/bench.sh`; every ratio is measured within one run of one program.")
    if quick:
        intro += (" **Quick run** (`--quick`): durations of seconds, a smoke test of the "
                  "scripts, not a measurement.")
    return "\n".join([intro, ""] + lines) + "\n"


def replace_in_doc(doc, text):
    with open(doc, encoding="utf-8") as f:
        content = f.read()
    begin, end = content.find(BEGIN), content.find(END)
    if begin < 0 or end < begin:
        raise SystemExit(f"bench_table: {doc} lacks the markers {BEGIN} ... {END}")
    content = content[:begin + len(BEGIN)] + "\n" + text + content[end:]
    with open(doc, "w", encoding="utf-8") as f:
        f.write(content)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results_dir", nargs="?", help="where bench.sh wrote NAME.json and NAME.run.json")
    parser.add_argument("--doc", help="a Markdown file whose table between "
                        f"{BEGIN} and {END} is replaced")
    parser.add_argument("--names", action="store_true",
                        help="print the figures' names, one a line, and exit")
    args = parser.parse_args(argv)
    if args.names:
        print("\n".join(NAMES))
        return 0
    if not args.results_dir or not os.path.isdir(args.results_dir):
        print(f"bench_table: no directory {args.results_dir}", file=sys.stderr)
        return 2
    text = render(args.results_dir)
    sys.stdout.write(text)
    if args.doc:
        replace_in_doc(args.doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

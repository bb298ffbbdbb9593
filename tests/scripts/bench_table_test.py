#!/usr/bin/env python3
"""scripts/bench_table.py on the sample outputs in bench_samples/ (trimmed --json
outputs of a `scripts/bench.sh --quick` run): the ratios it computes, met and
MISSED, a figure not run, one that failed, and the table replaced in a document
between its markers. Runs no benchmark."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "scripts", "bench_table.py")
SAMPLES = os.path.join(HERE, "bench_samples")


def generate(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], check=True, capture_output=True,
                          text=True).stdout


def row(table, figure_start):
    lines = [l for l in table.splitlines() if l.startswith("| " + figure_start)]
    if len(lines) != 1:
        raise AssertionError(f"{len(lines)} rows start with {figure_start!r} in:\n{table}")
    return [c.strip() for c in lines[0].strip("|").split(" | ")]


class BenchTableTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="bench-table-test.")
        self.results = os.path.join(self.dir, "results")
        shutil.copytree(SAMPLES, self.results)

    def tearDown(self):
        shutil.rmtree(self.dir)

    def test_every_figure_has_a_sample(self):
        names = generate("--names").split()
        self.assertEqual(len(names), 11)
        for name in names:
            self.assertTrue(os.path.exists(os.path.join(SAMPLES, name + ".json")), name)

    def test_ratios_goals_and_results(self):
        table = generate(self.results)
        self.assertIn("**Quick run**", table)
        # geokv / no-op: 11,331 / 24,542 ops/s.
        self.assertEqual(row(table, "single ops, workload A")[1:4],
                         ["0.46 (11,331 vs 24,542 ops/s)", "≥ 0.9", "MISSED"])
        self.assertTrue(row(table, "workload W")[1].startswith("0.26 "))
        self.assertTrue(row(table, "store: grouped")[1].startswith("0.32 "))
        self.assertTrue(row(table, "three-node region at QUORUM / one node, W")[1].startswith("0.46 "))
        self.assertTrue(row(table, "three-node region at QUORUM / one node, C")[1].startswith("0.20 "))
        # p99 91 ms less the 50 ms delay.
        self.assertTrue(row(table, "replication lag")[1].startswith("41 ms "))
        self.assertIn("goal 92 B", row(table, "bytes r0")[1])
        self.assertEqual(row(table, "convergence")[1:4], ["4.26 s (anti-entropy)", "≤ 5 s", "met"])
        self.assertEqual(row(table, "median time")[3], "MISSED")
        self.assertEqual(row(table, "false deaths")[3], "met (0.2 of 10 min)")
        self.assertTrue(row(table, "one connection")[1].startswith("0.01 "))
        noop = row(table, "single ops, workload A")
        self.assertTrue(noop[4].startswith("`build/bench/geokv-bench compare --workload A"), noop[4])
        self.assertEqual(noop[5], "abc1234")

    def test_missing_failed_and_skipped_figures(self):
        os.remove(os.path.join(self.results, "lag.json"))
        os.remove(os.path.join(self.results, "lag.run.json"))
        with open(os.path.join(self.results, "detect.run.json"), "w", encoding="utf-8") as f:
            f.write('{"command": "detect", "commit": "abc1234", "mode": "full", "exit": 1}\n')
        with open(os.path.join(self.results, "converge.json"), "w", encoding="utf-8") as f:
            f.write("geokv-repl-bench: the cluster did not start\n")
        with open(os.path.join(self.results, "one-connection.run.json"), "w",
                  encoding="utf-8") as f:
            f.write('{"commit": "abc1234", "mode": "full", "skipped": "no redis-server"}\n')
        table = generate(self.results)
        self.assertEqual(row(table, "replication lag")[1], "not run")
        self.assertEqual(row(table, "median time")[1:4], ["failed (exit 1)", "≤ 2.5 s", "—"])
        self.assertTrue(row(table, "convergence")[1].startswith("no JSON"))
        self.assertEqual(row(table, "one connection")[1], "skipped: no redis-server")
        # The rest is still read.
        self.assertEqual(row(table, "false deaths")[3], "met (0.2 of 10 min)")

    def test_replaces_the_table_in_a_document(self):
        doc = os.path.join(self.dir, "benchmarks.md")
        with open(doc, "w", encoding="utf-8") as f:
            f.write("# Benchmarks\n\n<!-- bench-table:begin -->\nold table\n"
                    "<!-- bench-table:end -->\n\n## History\nkept\n")
        printed = generate(self.results, "--doc", doc)
        for _ in range(2):  # a second run replaces its own table
            generate(self.results, "--doc", doc)
        with open(doc, encoding="utf-8") as f:
            content = f.read()
        self.assertNotIn("old table", content)
        self.assertEqual(content, "# Benchmarks\n\n<!-- bench-table:begin -->\n" + printed +
                         "<!-- bench-table:end -->\n\n## History\nkept\n")

    def test_a_document_without_markers_is_refused(self):
        doc = os.path.join(self.dir, "plain.md")
        with open(doc, "w", encoding="utf-8") as f:
            f.write("# Benchmarks\n")
        result = subprocess.run([sys.executable, SCRIPT, self.results, "--doc", doc],
                                capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("lacks the markers", result.stderr)
        with open(doc, encoding="utf-8") as f:
            self.assertEqual(f.read(), "# Benchmarks\n")


if __name__ == "__main__":
    unittest.main()

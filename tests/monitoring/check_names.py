#!/usr/bin/env python3
"""Checks that the dashboard and the alerts use only metrics geokv exports.

Every metric name in the expressions of monitoring/grafana/dashboards/*.json
and monitoring/alerts.yml must be listed in monitoring/metric_names.txt (a
histogram's _bucket, _sum and _count series count as it; Prometheus's own
`up` is allowed). The dashboard must parse, and every panel must name the
provisioned datasource and have a query. Every listed metric must be shown
by the dashboard and described, with every alert, in docs/monitoring.md.

Usage: check_names.py REPO_ROOT [RULES_OUT]. With RULES_OUT, also writes the
dashboard's expressions there as recording rules (Grafana's variables
replaced), for `promtool check rules` to parse them. Exits 1 listing every
problem found.
Standard library only: no YAML parser, so alerts.yml is read line by line
and the count of expressions is checked against the count of rules.
"""

import json
import pathlib
import re
import sys

PROMETHEUS_OWN = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
            "unless", "offset", "bool", "inf", "nan"}


def read_names(path):
    """{name: type} from metric_names.txt."""
    names = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in ("counter", "gauge", "histogram"):
            sys.exit(f"{path}:{n}: expected 'NAME counter|gauge|histogram', got {line!r}")
        names[parts[0]] = parts[1]
    return names


def metric_names_in(expr):
    """The metric names a PromQL expression (Grafana variables allowed) selects."""
    out = set()
    # label_values(metric{...}, label): the label is not a metric.
    for m in re.finditer(r"label_values\(\s*([A-Za-z_:][\w:]*)", expr):
        out.add(m.group(1))
    expr = re.sub(r"label_values\([^()]*(\([^()]*\))?[^()]*\)", " ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", " ", expr)
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", expr):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        out.add(word)
    return out


def alert_exprs(path):
    """[(rule name, expr)] from a Prometheus rules file in block or plain style."""
    lines = path.read_text().splitlines()
    rules, exprs = [], []
    current = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"\s*-\s*(alert|record):\s*(\S+)", line)
        if m:
            current = m.group(2)
            rules.append(current)
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m:
            indent, value = len(m.group(1)), m.group(2).strip()
            if value in ("|", "|-", "|+", ">", ">-", ">+"):
                block = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    block.append(lines[i].strip())
                    i += 1
                exprs.append((current, " ".join(block)))
                continue
            if value[:1] in "\"'":
                value = value[1:-1]
            exprs.append((current, value))
        i += 1
    return rules, exprs


def as_promql(expr):
    """A dashboard expression with Grafana's variables replaced by values."""
    expr = re.sub(r"\$__(rate_)?interval|\$\{__(rate_)?interval\}", "1m", expr)
    return re.sub(r"\$\{\w+\}|\$\w+", ".*", expr)


def panels_of(dashboard):
    for p in dashboard.get("panels", []):
        yield p
        yield from p.get("panels", [])  # a collapsed row holds its panels


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    names = read_names(root / "monitoring/metric_names.txt")
    allowed = set(names) | PROMETHEUS_OWN
    for name, kind in names.items():
        if kind == "histogram":
            allowed |= {name + s for s in HISTOGRAM_SUFFIXES}
    problems = []
    used = set()

    def check_expr(where, expr):
        found = metric_names_in(expr)
        if not found:
            problems.append(f"{where}: no metric found in {expr!r}")
        for name in sorted(found - allowed):
            problems.append(f"{where}: {name} is not in monitoring/metric_names.txt")
        for name in found:
            base = name
            for s in HISTOGRAM_SUFFIXES:
                if name.endswith(s) and names.get(name[: -len(s)]) == "histogram":
                    base = name[: -len(s)]
            used.add(base)

    # Alerts.
    alerts_path = root / "monitoring/alerts.yml"
    rules, exprs = alert_exprs(alerts_path)
    if len(rules) != len(exprs) or not rules:
        problems.append(f"{alerts_path}: {len(rules)} rules but {len(exprs)} expressions read")
    for rule, expr in exprs:
        check_expr(f"alerts.yml {rule}", expr)

    # Dashboards.
    ds_file = root / "monitoring/grafana/provisioning/datasources/prometheus.yml"
    m = re.search(r"^\s*uid:\s*(\S+)", ds_file.read_text(), re.M)
    if not m:
        sys.exit(f"{ds_file}: no datasource uid")
    uid = m.group(1).strip("\"'")
    dashboards = sorted((root / "monitoring/grafana/dashboards").glob("*.json"))
    if not dashboards:
        problems.append("no dashboard in monitoring/grafana/dashboards")
    dashboard_used = set()
    rules_out = []
    for path in dashboards:
        used.clear()
        try:
            dashboard = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            problems.append(f"{path}: not JSON: {e}")
            continue
        if not isinstance(dashboard.get("schemaVersion"), int):
            problems.append(f"{path}: no schemaVersion")
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") == "query":
                q = var.get("query")
                q = q.get("query", "") if isinstance(q, dict) else q
                check_expr(f"{path.name} variable {var.get('name')}", q or "")
                if (var.get("datasource") or {}).get("uid") != uid:
                    problems.append(f"{path.name} variable {var.get('name')}: datasource is not {uid}")
        ids = set()
        for p in panels_of(dashboard):
            title = f"{path.name} panel {p.get('title')!r}"
            if p.get("id") in ids:
                problems.append(f"{title}: id {p.get('id')} used twice")
            ids.add(p.get("id"))
            if "gridPos" not in p:
                problems.append(f"{title}: no gridPos")
            if p.get("type") == "row":
                continue
            if (p.get("datasource") or {}).get("uid") != uid:
                problems.append(f"{title}: datasource is not uid {uid}")
            targets = p.get("targets") or []
            if not targets:
                problems.append(f"{title}: no target")
            for t in targets:
                if "datasource" in t and (t["datasource"] or {}).get("uid") != uid:
                    problems.append(f"{title} target {t.get('refId')}: datasource is not uid {uid}")
                if not t.get("expr", "").strip():
                    problems.append(f"{title} target {t.get('refId')}: empty expr")
                else:
                    check_expr(f"{title} target {t.get('refId')}", t["expr"])
                    rules_out.append({"record": f"dashboard:panel_{p.get('id')}_{t.get('refId')}",
                                      "expr": as_promql(t["expr"])})
        dashboard_used |= used
    for name in sorted(set(names) - dashboard_used):
        problems.append(f"{name}: listed in metric_names.txt but on no dashboard panel")

    # The operator's page.
    doc_path = root / "docs/monitoring.md"
    doc = doc_path.read_text() if doc_path.exists() else ""
    if not doc:
        problems.append(f"{doc_path}: missing or empty")
    for name in sorted(names):
        if f"`{name}`" not in doc:
            problems.append(f"docs/monitoring.md: metric `{name}` not described")
    for rule in rules:
        if f"`{rule}`" not in doc and f"### {rule}" not in doc:
            problems.append(f"docs/monitoring.md: alert {rule} not described")

    if len(sys.argv) > 2:
        # JSON is YAML: promtool reads it as a rules file.
        pathlib.Path(sys.argv[2]).write_text(json.dumps(
            {"groups": [{"name": "dashboard", "rules": rules_out}]}, indent=1))

    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"check_names: {len(names)} metrics, {len(rules)} alert rules and "
          f"{len(dashboards)} dashboard(s) agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())

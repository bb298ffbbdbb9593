#!/usr/bin/env bash
# Checks monitoring/: both Prometheus configs and the alert rules load, the
# alerts pass their unit tests (alerts_test.yml), the dashboard and the
# alerts name only metrics that geokv exports (check_names.py), and the
# dashboard's queries parse. Exits 77 (skipped) when promtool, from the
# Debian package prometheus, is missing.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

promtool=${PROMTOOL:-$(command -v promtool || true)}
if [[ -z "$promtool" || ! -x "$promtool" ]]; then
  echo "SKIP: promtool is not installed (Debian package prometheus; scripts/install-deps.sh installs it)"
  exit 77
fi

failed=0
run() {
  echo "+ $*"
  "$@" || { echo "FAILED: $*"; failed=1; }
}

run "$promtool" check config monitoring/prometheus.yml
run "$promtool" check config monitoring/prometheus-docker.yml
run "$promtool" check rules monitoring/alerts.yml
run "$promtool" test rules tests/monitoring/alerts_test.yml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run python3 tests/monitoring/check_names.py "$root" "$tmp/dashboard_rules.yml"
# The dashboard's queries must parse as PromQL, as Grafana sends them.
run "$promtool" check rules "$tmp/dashboard_rules.yml"
exit "$failed"

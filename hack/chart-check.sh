#!/usr/bin/env bash
# Fast chart gate for CI and pre-commit: generated copies in sync, then `helm lint --strict` and `helm template`
# for the defaults and every charts/chanscale/ci/*-values.yaml. Needs bin/helm (`make tools`).
# The deeper checks (install into a real API server, RBAC) are tests/integration/test_chart.py.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HELM=${HELM:-$ROOT/bin/helm}
CHART=$ROOT/charts/chanscale
[ -x "$HELM" ] || { echo "chart-check: $HELM not found: run \`make tools\`" >&2; exit 1; }

"$ROOT/hack/sync-generated.sh" --check

check() {  # check [VALUES_FILE]
  local args=() label=defaults
  if [ -n "${1:-}" ]; then args=(-f "$1"); label=$(basename "$1"); fi
  "$HELM" lint --strict "$CHART" "${args[@]}" >/dev/null
  "$HELM" template chanscale "$CHART" --namespace chanscale-system "${args[@]}" >/dev/null
  echo "chart-check: ok ($label)"
}
check
for f in "$CHART"/ci/*-values.yaml; do check "$f"; done

#!/usr/bin/env bash
# Lint and test the Rego in policies/: `opa fmt` clean, `opa check --strict` against the input JSON Schema,
# `opa test` passing with at least $MIN_COVERAGE % line coverage. Used by make/CI; the integration test
# tests/integration/test_policy_check.py runs the same checks.
#
#   hack/policy-check.sh              # check
#   MIN_COVERAGE=95 hack/policy-check.sh
#   hack/policy-check.sh --fix        # rewrite files with `opa fmt -w` first
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
POLICIES=${POLICIES:-$ROOT/policies}
MIN_COVERAGE=${MIN_COVERAGE:-90}
OPA=${CHANSCALE_OPA_BIN:-}
if [[ -z $OPA ]]; then
  for c in "$ROOT/bin/opa" "$(command -v opa || true)"; do
    if [[ -n $c && -x $c ]]; then OPA=$c; break; fi
  done
fi
[[ -n $OPA && -x $OPA ]] || { echo "policy-check: opa not found; run \`make tools\` (or hack/tools.sh opa)" >&2; exit 1; }

# JSON Schemas live beside the policies but are not data: OPA would load them into `data` and they would clash.
IGNORE=(--ignore '*.schema.json')

if [[ ${1:-} == --fix ]]; then "$OPA" fmt -w "$POLICIES"; fi

echo "policy-check: opa fmt" >&2
unformatted=$("$OPA" fmt --list "$POLICIES")
if [[ -n $unformatted ]]; then
  echo "policy-check: not opa-fmt formatted (run hack/policy-check.sh --fix):" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "policy-check: opa check --strict --schema input.schema.json" >&2
"$OPA" check --strict "${IGNORE[@]}" --schema "$POLICIES/input.schema.json" "$POLICIES"

echo "policy-check: opa test --coverage (min ${MIN_COVERAGE}%)" >&2
"$OPA" test "${IGNORE[@]}" "$POLICIES"
coverage=$("$OPA" test "${IGNORE[@]}" --coverage "$POLICIES" | python3 -c 'import json,sys; print(json.load(sys.stdin)["coverage"])')
python3 - "$coverage" "$MIN_COVERAGE" <<'PY'
import sys
cov, minimum = float(sys.argv[1]), float(sys.argv[2])
print(f"policy-check: line coverage {cov:.1f}% (minimum {minimum:g}%)", file=sys.stderr)
sys.exit(0 if cov >= minimum else 1)
PY

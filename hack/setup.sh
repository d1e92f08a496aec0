#!/usr/bin/env bash
# What `make demo` and `make test` do before their real work, timed:
#   1. hack/doctor.sh MODE: every precondition, one line each; stops here when something is MISSING;
#   2. the Python environment (hack/venv.sh: network-bound pip) and the Go builds (hack/tools.sh: CPU-bound) run
#      side by side, since neither waits for the other; only what MODE needs is built.
#
#   PYTHON=.venv/bin/python hack/setup.sh demo|test
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:?usage: hack/setup.sh demo|test}
export PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
t0=$(date +%s)

"$ROOT/hack/doctor.sh" "$MODE"
case $MODE in
  demo) extras=demo tools=(demo) ;;
  test) extras=dev tools=() ;;
  *) echo "usage: hack/setup.sh demo|test" >&2; exit 2 ;;
esac
"$ROOT/hack/venv.sh" "$PYTHON" "$extras" & venv=$!
rc=0
"$ROOT/hack/tools.sh" "${tools[@]}" || rc=$?
wait "$venv" || rc=$?
[ "$rc" = 0 ] || { echo "[setup] failed (the output above says why)" >&2; exit "$rc"; }
echo "[setup] ready for \`make $MODE\` in $(( $(date +%s) - t0 ))s"

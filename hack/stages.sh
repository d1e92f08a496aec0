#!/usr/bin/env bash
# hack/stages.sh NAME CMD [NAME CMD ...]: run stages of `make test` side by side and wait for all of them.
#
# The stages run together are the ones that mostly wait on real programs (a control plane, Prometheus, kind, a
# rate() window), not on the two CPUs, so running them at once saves wall time without starving either. Each
# stage's output goes to out/stages/<n>.log and is printed whole, under its [stage] line, when the stage ends, so
# the CI log stays readable. Exits non-zero when any stage failed, after all of them have ended.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p out/stages
names=() pids=() logs=()
while [ $# -ge 2 ]; do
  n=${#names[@]}; log="out/stages/$n.log"
  names+=("$1"); logs+=("$log")
  hack/stage.sh "$1" bash -c "$2" >"$log" 2>&1 &
  pids+=($!)
  printf '[stage] %s: started beside the others (log: %s)\n' "$1" "$log"
  shift 2
done
failed=0 left=${#pids[@]}
declare -A done_=()
while [ "$left" -gt 0 ]; do
  wait -n "${pids[@]}" 2>/dev/null || true
  for i in "${!pids[@]}"; do
    [ -n "${done_[$i]:-}" ] && continue
    kill -0 "${pids[$i]}" 2>/dev/null && continue
    wait "${pids[$i]}"; rc=$?
    done_[$i]=1; left=$((left - 1))
    [ $rc -ne 0 ] && failed=1
    printf '\n----- %s (exit %s) -----\n' "${names[$i]}" "$rc"
    cat "${logs[$i]}"
  done
done
exit $failed

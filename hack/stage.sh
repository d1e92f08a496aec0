#!/usr/bin/env bash
# hack/stage.sh NAME COMMAND...: run one stage of CI or `make test`, printing its name and wall time, so every
# run shows where the minutes went. Exits with the command's status.
set -uo pipefail
name=$1; shift
t0=$(date +%s)
printf '[stage] %s: start %s\n' "$name" "$(date -u +%H:%M:%S)"
"$@"; rc=$?
printf '[stage] %s: %s in %ss\n' "$name" "$([ $rc -eq 0 ] && echo done || echo "FAILED (exit $rc)")" "$(( $(date +%s) - t0 ))"
exit $rc

#!/usr/bin/env bash
# The newcomer test: the README's set-up on a pristine Debian machine, as a new user meets it.
# A minbase Debian root filesystem (debootstrap, via hack/images.sh rootfs; cached per day) becomes a container
# with no Python, no Go, no pyenv: less than a fresh server has. Inside it, as root:
#   1. the README's one `apt-get install` line (read from README.md, `sudo` dropped: root has none);
#   2. git clone of this repository's HEAD (a bundle: committed work only);
#   3. the README's two commands, timed: `make demo` (time to out/demo/demo.png; then once more, warm), then
#      `make test`.
#
#   hack/newcomer.sh [--full|--cheap] [SUITE]     # SUITE: bookworm (default) or trixie
#   NEWCOMER_DEMO_ONLY=1 / NEWCOMER_TEST_ONLY=1 (with --full): only the two demo runs / only `make test`, cold
#
#   --full  (make newcomer): empty caches; step 3 runs both commands. `make test`'s kind stage uses this machine's
#           Docker engine through its socket, on its own cluster (chanscale-newcomer-SUITE) and its own chanscale/* image
#           names; the rootfs and image cache (CHANSCALE_CACHE) are this machine's, so the e2e images are warm.
#   --cheap (CI, make newcomer-cheap): the machine after the apt-get line is cached per day, the Go and pip caches
#           persist in Docker volumes (a user's second clone); step 3 is `make doctor` and `make demo-quick` (the
#           same set-up as `make demo`, 60 s of load instead of 240 s).
#
# The container shares this machine's network namespace (loopback, and the package registries: Debian's archive,
# PyPI, the Go module proxy) and trusts this machine's CA bundle, as a server on this network would.
# Results: out/newcomer/<suite>-<mode>/{times.env,*.log}; a summary line per step.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=full SUITE=bookworm
for a in "$@"; do
  case $a in --full) MODE=full ;; --cheap) MODE=cheap ;; bookworm|trixie) SUITE=$a ;;
    *) echo "usage: hack/newcomer.sh [--full|--cheap] [bookworm|trixie]" >&2; exit 2 ;; esac
done
CACHE=${CHANSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chanscale}
DAY=$(date -u +%Y%m%d)
TAR=$CACHE/rootfs/newcomer-$SUITE-$DAY.tar
BASE=chanscale/newcomer:$SUITE-$DAY
OUT=$ROOT/out/newcomer/$SUITE-$MODE
CLUSTER=chanscale-newcomer-$SUITE  # per suite: a bookworm and a trixie run may share the engine
CA=/etc/ssl/certs/ca-certificates.crt
APT_LINE=$(grep -m1 -E '^(sudo )?apt-get install' "$ROOT/README.md" | sed 's/^sudo //')
[ -n "$APT_LINE" ] || { echo "[newcomer] README.md has no apt-get install line" >&2; exit 1; }

log() { printf '[newcomer] %s\n' "$*" >&2; }

# --- the machine ---------------------------------------------------------------------------------------------
machine() {  # the pristine image: the day's debootstrapped rootfs, plus this network's CA (pre-seeded, as on a server here)
  if docker image inspect "$BASE" >/dev/null 2>&1; then return; fi
  # another day's machine of this suite (and its tarball) makes way for today's
  docker images --format '{{.Repository}}:{{.Tag}}' chanscale/newcomer | grep -E ":$SUITE-[0-9]{8}" | \
    grep -v ":$SUITE-$DAY" | xargs -r docker rmi >/dev/null 2>&1 || true
  find "$CACHE/rootfs" -maxdepth 1 -name "newcomer-$SUITE-*.tar" ! -name "newcomer-$SUITE-$DAY.tar" -delete 2>/dev/null || true
  "$ROOT/hack/images.sh" rootfs "$SUITE" "$TAR"
  local d; d=$(mktemp -d)
  install -D -m 0644 "$CA" "$d/usr/local/share/ca-certificates/site-network.crt"
  install -D -m 0644 "$CA" "$d/etc/ssl/certs/ca-certificates.crt"
  { cat "$TAR"; } | docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'WORKDIR /root' - "$BASE-raw" >/dev/null
  printf 'FROM %s\nCOPY usr /usr\nCOPY etc /etc\n' "$BASE-raw" >"$d/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$BASE" "$d" >/dev/null 2>&1
  docker rmi "$BASE-raw" >/dev/null
  rm -rf "$d"
  log "machine $BASE: debootstrapped $SUITE (minbase), no Python, no Go"
}

# The steps inside the machine; timings go to /out/times.env (seconds since the container started).
read -r -d '' INSIDE <<'SH' || true
set -uo pipefail
t0=$(date +%s); cd /root
mark() { echo "$1=$(( $(date +%s) - t0 ))" >>/out/times.env; echo "[newcomer] $1 at $(( $(date +%s) - t0 ))s" >&2; }
step() {  # step NAME COMMAND...: run with its log in /out/NAME.log; rc in times.env
  local name=$1 rc; shift
  "$@" >"/out/$name.log" 2>&1; rc=$?
  echo "${name}_rc=$rc" >>/out/times.env; mark "${name}_done"
  [ $rc = 0 ] || { tail -40 "/out/$name.log" >&2; echo "[newcomer] $name FAILED ($rc)" >&2; }
  return $rc
}
export DEBIAN_FRONTEND=noninteractive
: >/out/times.env
if [ "$STEPS" != cheap-prepared ]; then
  step apt bash -c "apt-get update -qq && $APT_LINE" || exit 1
fi
[ "$STEPS" = apt-only ] && exit 0
step clone git clone -q /out/repo.bundle chanscale || exit 1
cd chanscale
if [ "$STEPS" = cheap-prepared ]; then
  step doctor make doctor
  step demo bash -c 'make demo-quick && test -s out/demo/demo.png' || exit 1
  cp out/demo/demo.png out/demo/summary.md /out/ 2>/dev/null
else
  if [ "$STEPS" != full-test ]; then
    step demo bash -c 'make demo && test -s out/demo/demo.png' || exit 1
    cp out/demo/demo.png out/demo/summary.md /out/ 2>/dev/null
    rm -f out/demo/demo.png  # the warm figure: the same command again, .venv and ./bin now present
    step demo_warm bash -c 'make demo && test -s out/demo/demo.png'
  fi
  [ "$STEPS" = full-demo ] && exit 0
  step test make test; rc=$?
  hack/e2e-cluster.sh down >/dev/null 2>&1 || true
  exit $rc
fi
SH

run() {  # run IMAGE STEPS [docker args...]
  local image=$1 steps=$2; shift 2
  # shellcheck disable=SC2086  # NEWCOMER_DOCKER_ARGS: extra docker run flags, e.g. --cpus 1 beside other work
  docker run --rm --network host --name "chanscale-newcomer-$SUITE-$MODE" ${NEWCOMER_DOCKER_ARGS:-} \
    -v "$OUT:/out" -e STEPS="$steps" -e APT_LINE="$APT_LINE" \
    -e PIP_CERT=$CA -e "CHANSCALE_E2E_CLUSTER=$CLUSTER" \
    "$@" "$image" bash -c "$INSIDE"
}

main() {
  local t0 rc=0 prepared
  t0=$(date +%s)
  docker info >/dev/null 2>&1 || { log "no Docker engine: run hack/docker.sh"; exit 1; }
  rm -rf "$OUT"; mkdir -p "$OUT"
  git -C "$ROOT" bundle create "$OUT/repo.bundle" HEAD 2>/dev/null
  machine
  if [ "$MODE" = cheap ]; then
    prepared=$BASE-apt-$(echo "$APT_LINE" | sha256sum | cut -c1-8)
    if ! docker image inspect "$prepared" >/dev/null 2>&1; then
      log "preparing $prepared (the README's apt-get line; cached for the day)"
      docker run --network host --name "chanscale-newcomer-prep-$SUITE" -v "$OUT:/out" -e STEPS=apt-only \
        -e APT_LINE="$APT_LINE" "$BASE" bash -c "$INSIDE" || { docker rm -f "chanscale-newcomer-prep-$SUITE" >/dev/null; exit 1; }
      docker commit "chanscale-newcomer-prep-$SUITE" "$prepared" >/dev/null
      docker rm "chanscale-newcomer-prep-$SUITE" >/dev/null
    fi
    [ -z "${NEWCOMER_PREPARE_ONLY:-}" ] || { log "prepared $prepared"; return 0; }
    run "$prepared" cheap-prepared -v "chanscale-newcomer-go-$SUITE:/root/go" \
      -v "chanscale-newcomer-cache-$SUITE:/root/.cache" || rc=$?
  else
    # make test's kind stage: this machine's engine, its own cluster and chanscale/* names, the shared image cache
    # NEWCOMER_DEMO_ONLY=1: stop after the two demo runs (the cold and warm figures, without make test);
    # NEWCOMER_TEST_ONLY=1: the README's second command alone, cold (when the demo's figures are already known)
    local steps=full
    [ -z "${NEWCOMER_DEMO_ONLY:-}" ] || steps=full-demo
    [ -z "${NEWCOMER_TEST_ONLY:-}" ] || steps=full-test
    run "$BASE" "$steps" -v /var/run/docker.sock:/var/run/docker.sock -v "$CACHE:/root/.cache/chanscale" \
      -e CHANSCALE_DEBIAN_IMAGE=chanscale/newcomer-debian:$SUITE \
      -e CHANSCALE_PYTHON_IMAGE=chanscale/newcomer-python:$SUITE \
      -e CHANSCALE_KIND_BASE_IMAGE=chanscale/newcomer-kind-base:$SUITE \
      -e CHANSCALE_KIND_NODE_IMAGE=chanscale/newcomer-kind-node:$SUITE \
      -e CHANSCALE_OPERATOR_IMAGE=chanscale/newcomer-operator:$SUITE \
      -e CHANSCALE_PROMETHEUS_IMAGE=chanscale/newcomer-prometheus:$SUITE || rc=$?
  fi
  if [ "$MODE" = full ] && [ -x "$ROOT/bin/kind" ]; then  # the clone deletes it; this is for a killed run
    "$ROOT/bin/kind" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  log "$SUITE ($MODE): $(tr '\n' ' ' <"$OUT/times.env")-> exit $rc in $(( $(date +%s) - t0 ))s (logs: $OUT)"
  return $rc
}
main

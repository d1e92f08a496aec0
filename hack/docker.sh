#!/usr/bin/env bash
# Makes a working Docker engine available, idempotently (CI runs it on a fresh machine; later runs are instant):
#   1. installs Debian's docker.io when dockerd is missing (apt-get; root);
#   2. where the capability bounding set lacks capabilities (some sandboxed machines drop CAP_SYS_RESOURCE),
#      installs hack/images/runc-capfilter as dockerd's default OCI runtime, so that `docker run --privileged`
#      (and so kind) works: it strips the capabilities the bounding set lacks before calling runc. On a normal
#      Docker host nothing is installed and Docker is left as it is;
#   3. starts dockerd detached (setsid) when it is not running, and waits for `docker info`.
#
#   hack/docker.sh           # ensure Docker
#   hack/docker.sh --check   # only report: exit 0 when `docker info` answers
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WRAPPER=/usr/local/libexec/chanscale/runc-capfilter
RUNTIME=chanscale-runc
DAEMON_JSON=/etc/docker/daemon.json
LOG=${CHANSCALE_DOCKERD_LOG:-/var/log/chanscale-dockerd.log}

log() { printf '[docker] %s\n' "$*" >&2; }
die() { printf '[docker] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = --check ]; then docker info >/dev/null 2>&1; exit; fi

as_root() { [ "$(id -u)" = 0 ] || die "$* needs root (run this script as root, or install and start Docker yourself)"; }

install_engine() {
  command -v dockerd >/dev/null && return
  as_root "installing docker.io"
  log "installing Debian's docker.io (dockerd, containerd, runc)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends docker.io >/dev/null 2>&1 || \
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io >/dev/null; }
}

# install_wrapper: only where the bounding set lacks capabilities. Prints "changed" when daemon.json changed.
install_wrapper() {
  local missing
  missing=$(python3 "$ROOT/hack/images/runc-capfilter" --missing)
  if [ -z "$missing" ]; then return; fi
  as_root "installing the runc capability wrapper"
  if ! cmp -s "$ROOT/hack/images/runc-capfilter" "$WRAPPER" 2>/dev/null; then
    log "the capability bounding set lacks $missing: installing $WRAPPER as dockerd's default runtime"
    install -D -m 0755 "$ROOT/hack/images/runc-capfilter" "$WRAPPER"
  fi
  mkdir -p "$(dirname "$DAEMON_JSON")"
  python3 - "$DAEMON_JSON" "$RUNTIME" "$WRAPPER" <<'PY'
import json, os, sys
path, name, wrapper = sys.argv[1:]
cfg = {}
if os.path.exists(path) and os.path.getsize(path):
    with open(path) as f:
        cfg = json.load(f)
want = dict(cfg)
want["runtimes"] = {**cfg.get("runtimes", {}), name: {"path": wrapper}}
want["default-runtime"] = name
if want != cfg:
    with open(path + ".tmp", "w") as f:
        json.dump(want, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print("changed")
PY
}

start_daemon() {
  local changed=$1 pid
  pid=$(pgrep -xo dockerd || true)
  if [ -n "$pid" ]; then
    if [ "$changed" = changed ]; then
      log "dockerd ($pid) is running: reloading $DAEMON_JSON (SIGHUP)"
      kill -HUP "$pid"; sleep 1
    fi
  else
    as_root "starting dockerd"
    log "starting dockerd (log: $LOG)"
    # setsid: detached from this shell's process group, so it outlives the command that started it.
    setsid dockerd >>"$LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then return; fi
    sleep 1
  done
  tail -20 "$LOG" >&2 || true
  die "docker info did not answer within 60 s (see $LOG)"
}

start=$(date +%s)
# An engine that answers but is not ours to manage (a mounted socket, DOCKER_HOST, a container's view of its host:
# no dockerd here) is used as it is.
if docker info >/dev/null 2>&1 && ! pgrep -x dockerd >/dev/null; then
  log "using the Docker engine at ${DOCKER_HOST:-/var/run/docker.sock} (no local dockerd to manage)"
  exit 0
fi
install_engine
changed=$(install_wrapper)
start_daemon "$changed"
log "docker ready in $(( $(date +%s) - start ))s ($(docker version --format '{{.Server.Version}}')," \
  "default runtime $(docker info --format '{{.DefaultRuntime}}'))"

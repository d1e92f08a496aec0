#!/usr/bin/env bash
# Checks every precondition of the README's two commands before anything starts, one line each: what is there,
# what make will fetch itself, or what is MISSING and the exact command that fixes it.
#
#   hack/doctor.sh demo    # what `make demo` needs (it runs this first and stops on a MISSING line)
#   hack/doctor.sh test    # what `make test` needs, the kind e2e stage included (`make doctor`)
#
# PYTHON (default .venv/bin/python) is the interpreter make will use. Exit status 1 when something is MISSING.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
BIN=${CHANSCALE_BIN:-$ROOT/bin}
MODE=${1:-test}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
ROOT_USER=$([ "$(id -u)" = 0 ] && echo 1 || true)
SUDO=$([ -n "$ROOT_USER" ] && echo "" || echo "sudo ")
missing=0

line() { printf '[doctor] %s\n' "$*"; case $1 in MISSING*) missing=1 ;; esac; }
miss() { line "MISSING $1. Fix: $2"; }

demo_tools=(kube-apiserver kube-controller-manager etcd opa)
test_tools=("${demo_tools[@]}" kubectl helm)
pin() {  # pin TOOL: its pinned version
  case $1 in kube-*|kubectl) echo "$KUBERNETES_VERSION" ;; etcd) echo "$ETCD_VERSION" ;; opa) echo "$OPA_VERSION" ;;
    helm) echo "$HELM_VERSION" ;; esac
}
built() {  # built TOOL: ./bin has it at its pin, or envtest provides it
  [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$1" ] && return 0
  [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$(pin "$1")" ]
}

check_python() { local l; l=$("$ROOT/hack/venv.sh" --check "$PYTHON"); line "$l"; }

check_go() {  # Go only matters when a tool still has to be built
  local t todo=()
  for t in "$@"; do built "$t" || todo+=("$t"); done
  if [ ${#todo[@]} -eq 0 ]; then line "ok      tools: ./bin has $* at their pins (Go not needed)"; return; fi
  line "ok      tools: make builds ${todo[*]} into ./bin (once; a cold build takes minutes)"
  local l; l=$("$ROOT/hack/go.sh" --check); line "$l"
}

check_apt_tool() {  # check_apt_tool COMMAND PACKAGE WHAT [FALLBACK...]
  local cmd=$1 pkg=$2 what=$3 p; shift 3
  for p in "$(command -v "$cmd" 2>/dev/null)" "$BIN/$cmd" "$@"; do
    if [ -n "$p" ] && [ -x "$p" ]; then line "ok      $cmd: $p ($what)"; return; fi
  done
  if [ -n "$ROOT_USER" ] && command -v apt-get >/dev/null; then
    line "ok      $cmd: not installed; make installs Debian's $pkg (root) ($what)"
  else
    miss "$cmd: $what" "${SUDO}apt-get install -y $pkg"
  fi
}

check_ports() {  # every port is picked by the kernel on 127.0.0.1: loopback must accept a bind and a connect
  local py; py=$(command -v python3 || command -v "$PYTHON" || true)
  [ -n "$py" ] || return 0
  if "$py" - <<'PY' 2>/dev/null; then
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
c = socket.create_connection(s.getsockname(), timeout=2); c.close(); s.close()
PY
    line "ok      ports: 127.0.0.1 accepts connections (every port is picked free by the kernel; none is fixed)"
  else
    miss "ports: cannot listen on and connect to 127.0.0.1" "${SUDO}ip link set lo up"
  fi
}

check_disk() {  # check_disk GB DIR...: free space on each filesystem where the builds and caches go
  local need=$1 d free mnt seen=" "; shift
  for d in "$@"; do
    while [ ! -e "$d" ]; do d=$(dirname "$d"); done
    read -r free mnt < <(df -Pk "$d" 2>/dev/null | awk 'NR==2 {print int($4/1048576), $6}')
    [ -n "$mnt" ] && [[ $seen != *" $mnt "* ]] || continue
    seen+="$mnt "
    if [ "$free" -ge "$need" ]; then line "ok      disk: $free GB free on $mnt (need $need GB)"
    else miss "disk: $free GB free on $mnt, need $need GB (Go caches, ./bin, .venv, images)" "free space on $mnt"; fi
  done
}

check_docker() {
  if docker info >/dev/null 2>&1; then line "ok      docker: the engine answers (kind e2e stage)"; return; fi
  if [ -n "$ROOT_USER" ] && command -v apt-get >/dev/null; then
    line "ok      docker: not running; make test's e2e stage installs docker.io and starts dockerd (hack/docker.sh, root)"
  elif command -v docker >/dev/null; then
    miss "docker: installed but the engine does not answer for $(id -un) (kind e2e stage)" "sudo hack/docker.sh && sudo usermod -aG docker $(id -un)"
  else
    miss "docker: needed by make test's kind e2e stage" "sudo hack/docker.sh   (installs docker.io, starts dockerd)"
  fi
  if [ -z "$ROOT_USER" ]; then  # hack/images.sh installs these itself only as root
    local p need=()
    for p in debootstrap gcc libc6-dev; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
    [ ${#need[@]} -eq 0 ] || miss "${need[*]}: the e2e images are built from a debootstrapped Debian" "sudo apt-get install -y ${need[*]}"
  fi
}

gocache=$(go env GOMODCACHE 2>/dev/null || echo "${GOPATH:-$HOME/go}/pkg/mod")
echo "[doctor] checking what \`make $MODE\` needs ($ROOT)"
check_python
case $MODE in
  demo)
    check_go "${demo_tools[@]}"
    check_apt_tool prometheus prometheus "the demo's metrics store" /usr/bin/prometheus
    check_ports
    check_disk 6 "$ROOT" "$gocache" ;;
  test)
    check_go "${test_tools[@]}"
    check_apt_tool prometheus prometheus "integration tests and the demo" /usr/bin/prometheus
    check_apt_tool lua5.4 lua5.4 "the Argo CD health-check tests"
    check_ports
    check_disk 20 "$ROOT" "$gocache" /var/lib/docker
    check_docker ;;
  *) echo "usage: hack/doctor.sh demo|test" >&2; exit 2 ;;
esac
if [ "$missing" = 1 ]; then echo "[doctor] not ready: run the fixes above (README.md's one apt-get line covers them)"; fi
exit "$missing"

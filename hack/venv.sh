#!/usr/bin/env bash
# The Python environment `make demo` and `make test` run in: the project's virtual environment (.venv/, the
# Makefile's default PYTHON), created from any Python >= 3.10 on the machine. The system Python is never modified,
# so Debian's PEP 668 ("externally-managed-environment") never applies.
#
#   hack/venv.sh PYTHON [EXTRAS]   # PYTHON gets chanscale installed editable with EXTRAS (demo: the demo; dev: all)
#   hack/venv.sh --find-python     # print the Python the venv is created from (BASE_PYTHON, python3, python3.X)
#   hack/venv.sh --check PYTHON    # one status line (make doctor); exit 1 when PYTHON cannot be had
#
# When PYTHON is <dir>/bin/python of a venv that does not exist yet, the venv is created at <dir>. Any other PYTHON
# (make PYTHON=...) is used as it is. A stamp (.cache/python-installed) skips pip while pyproject.toml, PYTHON and
# the extras are unchanged and chanscale imports from this clone.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV_APT_HINT="sudo apt-get install -y python3-venv"

log() { printf '[venv] %s\n' "$*" >&2; }
die() { printf '[venv] ERROR: %s\n' "$*" >&2; exit 1; }

# find_python: the first Python >= 3.10 (BASE_PYTHON first, then python3, then the newest python3.X).
find_python() {
  local c
  for c in ${BASE_PYTHON:-} python3 python3.14 python3.13 python3.12 python3.11 python3.10; do
    command -v "$c" >/dev/null || continue
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then command -v "$c"; return; fi
  done
  return 1
}
py_version() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
is_venv_python() { [[ $1 == */bin/python ]] && [ ! -e "$1" ] || [ -f "$(dirname "$1")/../pyvenv.cfg" ]; }

check() {
  local py=$1 base
  if [ -x "$py" ] && [ -f "$(dirname "$py")/../pyvenv.cfg" ]; then
    echo "ok      python: $py $(py_version "$py") (the project venv)"; return
  fi
  if ! is_venv_python "$py"; then
    command -v "$py" >/dev/null || { echo "MISSING python: PYTHON=$py does not exist. Fix: drop PYTHON= to use .venv"; return 1; }
    if "$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(sysconfig.get_path("stdlib") + "/EXTERNALLY-MANAGED"))'; then
      echo "MISSING python: PYTHON=$py is a system Python pip may not install into (PEP 668). Fix: drop PYTHON= to use .venv"
      return 1
    fi
    echo "ok      python: $py $(py_version "$py") (PYTHON= given: installed into as it is)"; return
  fi
  base=$(find_python) || { echo "MISSING python: no Python >= 3.10. Fix: $VENV_APT_HINT"; return 1; }
  if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
    echo "MISSING python: $base $(py_version "$base") cannot create a venv (no ensurepip). Fix: $VENV_APT_HINT"
    return 1
  fi
  echo "ok      python: $base $(py_version "$base"); make creates the venv $(dirname "$(dirname "$py")")"
}

create() {  # create VENV_DIR
  local base; base=$(find_python) || die "no Python >= 3.10 found (python3, python3.1X). Fix: $VENV_APT_HINT"
  log "creating $1 from $base ($(py_version "$base"))"
  "$base" -m venv "$1" || die "$base cannot create a venv (Debian and Ubuntu ship ensurepip separately). Fix: $VENV_APT_HINT"
  "$1/bin/python" -m pip install -q --upgrade pip || log "pip could not upgrade itself; going on with $("$1/bin/python" -m pip --version)"
}

# installed PYTHON: chanscale imports from this clone's operator/ (an editable install of this clone)
installed() {
  [ "$("$1" -c 'import chanscale; print(chanscale.__file__)' 2>/dev/null)" = "$ROOT/operator/chanscale/__init__.py" ]
}

install() {  # install PYTHON EXTRAS
  local py=$1 extras=$2 stamp=$ROOT/.cache/python-installed want out
  if is_venv_python "$py" && [ ! -x "$py" ]; then create "$(dirname "$(dirname "$py")")"; fi
  want=$(cat "$ROOT/pyproject.toml" <(command -v "$py") | sha256sum | cut -c1-16)
  # dev includes demo (cryptography, matplotlib): a dev install also serves the demo.
  if grep -qxE "$want (dev|$extras)" "$stamp" 2>/dev/null && installed "$py"; then return; fi
  log "pip install -e '.[$extras]' into $py"
  local t=$SECONDS
  if ! out=$(cd "$ROOT" && "$py" -m pip install -q -e ".[$extras]" 2>&1); then
    printf '%s\n' "$out" >&2
    if grep -q externally-managed <<<"$out"; then
      die "$py is a system Python (PEP 668): leave PYTHON unset and make uses the project's .venv"
    fi
    die "pip install failed (output above)"
  fi
  mkdir -p "$(dirname "$stamp")" && echo "$want $extras" >"$stamp"
  log "installed in $(( SECONDS - t ))s"
}

case ${1:-} in
  --find-python) find_python ;;
  --check) check "${2:?PYTHON}" ;;
  ""|-*) die "usage: hack/venv.sh PYTHON [EXTRAS] | --find-python | --check PYTHON" ;;
  *) install "$1" "${2:-dev}" ;;
esac

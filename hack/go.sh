#!/usr/bin/env bash
# A Go toolchain new enough for the pinned tools (hack/versions.env GO_MIN), from whatever Go is installed, without
# asking the user to install Go by hand. Only the Go module proxy is used; the toolchain is itself a module there:
#   - local Go >= GO_MIN:            used as it is (GOTOOLCHAIN=local);
#   - local Go 1.21 .. < GO_MIN:     GOTOOLCHAIN=$GO_TOOLCHAIN: the go command fetches that toolchain itself;
#   - local Go < 1.21 (Debian 12's 1.19): `go mod download golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.<os>-<arch>`
#     (checked against the checksum database like any module), then that toolchain's bin/ goes first on PATH;
#   - no Go at all: the error names the one apt-get line (README.md).
#
#   source hack/go.sh; go_setup     # (hack/tools.sh) exports PATH/GOTOOLCHAIN so that `go` is new enough
#   hack/go.sh                      # the same, then prints `go version`
#   hack/go.sh --check              # one status line (make doctor); exit 1 when no usable Go can be had
set -euo pipefail

GO_ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/versions.env
source "$GO_ROOT_DIR/hack/versions.env"
GO_APT_HINT="sudo apt-get install -y golang-go   (any Go; an old one is upgraded through the Go module proxy)"

# go_local_version: the installed go's own version (1.19.8), ignoring any GOTOOLCHAIN switch; empty without Go.
go_local_version() {
  command -v go >/dev/null || return 0
  GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9][0-9.]*\).*/\1/p'
}
# version_ge A B: A >= B (dotted versions).
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$2" ]; }

# go_plan: how a usable Go is obtained - "local", "gotoolchain", "module" or "missing".
go_plan() {
  local v; v=$(go_local_version)
  if [ -z "$v" ]; then echo missing
  elif version_ge "$v" "$GO_MIN"; then echo local
  elif version_ge "$v" 1.21; then echo gotoolchain
  else echo module
  fi
}

# go_toolchain_module: download the toolchain module with the old go command and print its directory.
go_toolchain_module() {
  local mod dir
  mod="golang.org/toolchain@v0.0.1-$GO_TOOLCHAIN.$(go env GOOS)-$(go env GOARCH)"
  printf '[go] Go %s is older than %s: fetching %s from the Go module proxy\n' "$(go_local_version)" "$GO_MIN" "$mod" >&2
  dir=$(cd / && GOFLAGS=-mod=mod GO111MODULE=on go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
  [ -n "$dir" ] && [ -f "$dir/bin/go" ] || { echo "[go] ERROR: downloading $mod failed" >&2; return 1; }
  # Module zips carry no file modes: set the execute bits, as the go command does for the toolchains it fetches.
  find "$dir/bin" "$dir/pkg/tool" -type f ! -perm -u+x -exec chmod a+x {} + 2>/dev/null || true
  echo "$dir"
}

go_setup() {
  case $(go_plan) in
    local) export GOTOOLCHAIN=local ;;
    gotoolchain) export GOTOOLCHAIN=$GO_TOOLCHAIN ;;
    module)
      local dir; dir=$(go_toolchain_module) || return 1
      export PATH="$dir/bin:$PATH" GOTOOLCHAIN=local ;;
    missing)
      echo "[go] ERROR: no Go found; the pinned tools are built from their Go modules. Fix: $GO_APT_HINT" >&2
      return 1 ;;
  esac
}

go_check() {
  local v; v=$(go_local_version)
  case $(go_plan) in
    local) echo "ok      go: $v (>= $GO_MIN)" ;;
    gotoolchain) echo "ok      go: $v < $GO_MIN; make fetches $GO_TOOLCHAIN through the Go module proxy (GOTOOLCHAIN)" ;;
    module) echo "ok      go: $v < $GO_MIN; make fetches $GO_TOOLCHAIN as the module golang.org/toolchain (hack/go.sh)" ;;
    missing) echo "MISSING go: needed to build the test binaries into ./bin. Fix: $GO_APT_HINT"; return 1 ;;
  esac
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  if [ "${1:-}" = --check ]; then go_check; exit; fi
  go_setup
  go version
fi

#!/usr/bin/env bash
# Puts the pinned test-cluster tools into ./bin (or $CHANSCALE_BIN), building them from their upstream Go
# modules with the local Go toolchain. Idempotent: a tool already at its pinned version is skipped, so a fresh
# machine builds once and later runs are instant.
#
#   hack/tools.sh                 # the tools the tests need: kube-apiserver, kube-controller-manager, kubectl,
#                                 # etcd, opa, helm, argocd (hack/argocd.md); prometheus, lua5.4 and
#                                 # redis-server via apt-get when root and missing
#   hack/tools.sh all             # also kube-scheduler, kind, kwok, kwokctl
#   hack/tools.sh node            # what the offline kind images need (hack/images.sh): kind, kubeadm, kubelet,
#                                 # kubectl, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
#                                 # etcd, coredns, crictl, local-path-provisioner, opa
#   hack/tools.sh demo            # only what `make demo` runs: kube-apiserver, kube-controller-manager,
#                                 # etcd, opa, prometheus
#   hack/tools.sh opa helm        # just these
#
# Go: hack/go.sh makes any installed Go usable (an older one gets the pinned toolchain from the Go module proxy);
# Go is only looked for when something has to be built. Kubernetes builds in one `go build` (its binaries share
# most packages and link in parallel) while the other modules build beside it, one at a time: two lanes, two cores.
#
# Binaries already provided are honoured and not rebuilt:
#   - $KUBEBUILDER_ASSETS/{kube-apiserver,etcd,kubectl} (controller-runtime envtest assets);
#   - any tool on PATH that reports the pinned version.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
BIN=${CHANSCALE_BIN:-$ROOT/bin}
WORK=${CHANSCALE_TOOLS_CACHE:-$ROOT/.cache/tools}
mkdir -p "$BIN" "$WORK"
# -dwarf=false: the links strip DWARF anyway (-s -w), so do not generate it: a cold compile is about 25 % faster
# (etcd on this machine, side by side with a fresh GOCACHE each: 164 vs 208 s and 195 vs 269 s).
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false -gcflags=all=-dwarf=false"
# shellcheck source=hack/go.sh
source "$ROOT/hack/go.sh"

log() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

# If the checksum database cannot be reached, fall back narrowly for the modules we build, never globally off.
check_sumdb() {
  if [ -z "${GONOSUMDB:-}" ] && ! timeout 20 go mod download -json golang.org/x/text@v0.3.8 >/dev/null 2>&1; then
    log "the Go checksum database (GOSUMDB) did not answer: verifying only through go.sum for k8s.io, go.etcd.io, helm.sh, sigs.k8s.io and github.com/open-policy-agent"
    export GONOSUMDB="k8s.io,go.etcd.io,helm.sh,sigs.k8s.io,github.com/open-policy-agent"
  fi
}

stamp() { echo "$BIN/.$1.version"; }
have() {  # have NAME VERSION: true when ./bin/NAME was built at VERSION
  [ -x "$BIN/$1" ] && [ -f "$(stamp "$1")" ] && [ "$(cat "$(stamp "$1")")" = "$2" ]
}
provided() {  # provided NAME VERSION-SUBSTRING: true when KUBEBUILDER_ASSETS or PATH already has it
  local name=$1 want=$2 p
  if [ -n "${KUBEBUILDER_ASSETS:-}" ] && [ -x "$KUBEBUILDER_ASSETS/$name" ]; then
    log "$name: using \$KUBEBUILDER_ASSETS/$name"; return 0
  fi
  p=$(command -v "$name" 2>/dev/null || true)
  if [ -n "$p" ] && [ "$(dirname "$p")" != "$BIN" ] && "$p" --version 2>/dev/null | grep -q -- "${want#v}"; then
    log "$name: using $p (reports $want)"; return 0
  fi
  if [ -n "$p" ] && [ "$(dirname "$p")" != "$BIN" ] && "$p" version 2>/dev/null | grep -q -- "${want#v}"; then
    log "$name: using $p (reports $want)"; return 0
  fi
  return 1
}

# module_dir NAME: a throwaway Go module that depends on the tool's module, so that upstream go.mod `replace`
# directives (which `go install pkg@version` refuses) do not get in the way.
module_dir() {
  local d="$WORK/$1"
  mkdir -p "$d"
  if [ ! -f "$d/go.mod" ]; then
    (cd "$d" && go mod init "chanscale.dev/tools/$1" >/dev/null 2>&1)
  fi
  echo "$d"
}

build_kubernetes() {  # build_kubernetes NAME...
  local v=$KUBERNETES_VERSION staging minor d gomod
  minor=$(echo "$v" | cut -d. -f2)
  staging="v0.${v#v1.}"
  d=$(module_dir "kubernetes-$v")
  if [ ! -f "$d/.replaced" ]; then
    log "kubernetes $v: resolving the module and its staging repositories"
    gomod=$(go mod download -json "k8s.io/kubernetes@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with ./staging paths; as a
    # dependency, those replacements are ignored, so point each at its published v0.X.Y instead.
    (cd "$d" && go mod edit -require="k8s.io/kubernetes@$v")
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
      (cd "$d" && go mod edit -replace="$m=$m@$staging")
    done
    touch "$d/.replaced"
  fi
  local date ldflags
  # The release's own date (the module's commit time), not the build's: identical inputs give identical binaries,
  # so the images built from them (hack/images.sh, cached by content) stay cached across clones and rebuilds.
  date=$(cd "$d" && go list -m -json "k8s.io/kubernetes@$v" | \
         python3 -c 'import json,sys; print(json.load(sys.stdin)["Time"])' 2>/dev/null) || date=1970-01-01T00:00:00Z
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=chanscale-tools"
  done
  local name pkgs=()
  for name in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$name"); done
  log "building $* $v in one go build (a cold first build of Kubernetes takes several minutes)"
  (cd "$d" && go build -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}")
  for name in "$@"; do echo "$v" >"$(stamp "$name")"; done
  log "built $*"
}

build_go() {  # build_go NAME MODULE VERSION PACKAGE [LDFLAGS]
  local name=$1 mod=$2 v=$3 pkg=$4 ldflags=${5:-"-s -w"} d
  d=$(module_dir "$name-$v")
  log "building $name $v from $mod"
  (cd "$d" && go mod edit -require="$mod@$v" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name" "$pkg")
  echo "$v" >"$(stamp "$name")"
  log "built $name"
}
queue() { go_jobs+=("$(printf '%q ' "$@")"); }  # queue COMMAND...: run later, in the second build lane

build_argocd() {  # Argo CD's multi-call binary (cmd/main.go picks the role from argv[0]); see hack/argocd.md
  local v=$ARGOCD_VERSION src d
  src=$(go mod download -json "github.com/argoproj/argo-cd/v3@$v" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  # Built as the main module (a copy of the module's folder), so that its own go.mod replaces apply.
  d="$WORK/argocd-$v"
  if [ ! -f "$d/go.mod" ]; then rm -rf "$d"; cp -r "$src" "$d"; chmod -R u+w "$d"; fi
  log "building argocd $v (first build takes several minutes)"
  (cd "$d" && nice -n 10 go build -trimpath -o "$BIN/argocd" -ldflags "-s -w \
      -X github.com/argoproj/argo-cd/v3/common.version=${v#v} -X github.com/argoproj/argo-cd/v3/common.gitTag=$v \
      -X github.com/argoproj/argo-cd/v3/common.gitTreeState=clean -X github.com/argoproj/argo-cd/v3/common.gitCommit=chanscale-tools" ./cmd)
  for role in argocd-application-controller argocd-repo-server; do ln -sfn argocd "$BIN/$role"; done
  # The tests apply Argo CD's own CRDs, RBAC, ConfigMaps and Secrets, from the same version.
  rm -rf "$BIN/argocd-manifests" && mkdir -p "$BIN/argocd-manifests"
  cp -r "$d/manifests/crds" "$d/manifests/install.yaml" "$BIN/argocd-manifests/"
  echo "$v" >"$(stamp argocd)"
}

apt_tool() {  # apt_tool COMMAND [PACKAGE]: install Debian's package when the command is missing (needs root)
  local cmd=$1 pkg=${2:-$1}
  command -v "$cmd" >/dev/null || [ -x "$BIN/$cmd" ] && return 0
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "$cmd is missing: install Debian's '$pkg' package (apt-get install $pkg) or put a $cmd binary in $BIN"
  log "installing Debian's $pkg package"
  (apt-get install -y --no-install-recommends "$pkg" >/dev/null 2>&1 || \
    { apt-get update -qq && apt-get install -y --no-install-recommends "$pkg" >/dev/null; })
}

want_tools=("$@")
if [ ${#want_tools[@]} -eq 0 ]; then
  want_tools=(kube-apiserver kube-controller-manager kubectl etcd opa helm prometheus lua argocd redis-server)
elif [ "${want_tools[0]}" = demo ]; then
  want_tools=(kube-apiserver kube-controller-manager etcd opa prometheus)  # no kubectl: the demo never runs it
elif [ "${want_tools[0]}" = all ]; then
  want_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd opa helm prometheus lua argocd redis-server kind kwok kwokctl)
elif [ "${want_tools[0]}" = node ]; then
  want_tools=(kind kubeadm kubelet kubectl kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd coredns crictl
    local-path-provisioner opa nats-server)
fi

k8s=() go_jobs=()
for t in "${want_tools[@]}"; do
  case $t in
    kube-apiserver|kube-controller-manager|kube-scheduler|kubectl|kubeadm|kubelet|kube-proxy)
      have "$t" "$KUBERNETES_VERSION" || provided "$t" "$KUBERNETES_VERSION" || k8s+=("$t") ;;
    etcd)
      have etcd "$ETCD_VERSION" || provided etcd "$ETCD_VERSION" || \
        queue build_go etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3 ;;
    opa)
      have opa "$OPA_VERSION" || provided opa "$OPA_VERSION" || \
        queue build_go opa github.com/open-policy-agent/opa "$OPA_VERSION" github.com/open-policy-agent/opa \
          "-s -w -X github.com/open-policy-agent/opa/v1/version.Version=${OPA_VERSION#v}" ;;
    helm)
      have helm "$HELM_VERSION" || provided helm "$HELM_VERSION" || \
        queue build_go helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
          "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" ;;
    kind)
      have kind "$KIND_VERSION" || provided kind "$KIND_VERSION" || \
        queue build_go kind sigs.k8s.io/kind "$KIND_VERSION" sigs.k8s.io/kind ;;
    coredns)
      have coredns "$COREDNS_VERSION" || \
        queue build_go coredns github.com/coredns/coredns "$COREDNS_VERSION" github.com/coredns/coredns \
          "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" ;;
    crictl)
      have crictl "$CRICTL_VERSION" || \
        queue build_go crictl sigs.k8s.io/cri-tools "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl \
          "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" ;;
    local-path-provisioner)
      have "$t" "$LOCAL_PATH_PROVISIONER_VERSION" || \
        queue build_go "$t" github.com/rancher/local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
          github.com/rancher/local-path-provisioner ;;
    nats-server)  # the broker of the example JetStream worker (e2e, `chanscale demo --real`)
      have nats-server "$NATS_SERVER_VERSION" || provided nats-server "$NATS_SERVER_VERSION" || \
        queue build_go nats-server github.com/nats-io/nats-server/v2 "$NATS_SERVER_VERSION" github.com/nats-io/nats-server/v2 ;;
    kwok|kwokctl)
      have "$t" "$KWOK_VERSION" || provided "$t" "$KWOK_VERSION" || \
        queue build_go "$t" sigs.k8s.io/kwok "$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/$t" ;;
    prometheus)
      apt_tool prometheus ;;
    lua)  # the Argo CD health-check tests run the Lua script with a real interpreter
      apt_tool lua5.4 ;;
    argocd)
      have argocd "$ARGOCD_VERSION" || queue build_argocd ;;
    redis-server)  # Argo CD's cache
      apt_tool redis-server ;;
    *) die "unknown tool '$t' (known: kube-apiserver kube-controller-manager kube-scheduler kubectl kubeadm kubelet kube-proxy etcd coredns crictl local-path-provisioner opa helm prometheus lua argocd redis-server nats-server kind kwok kwokctl)" ;;
  esac
done
if [ ${#k8s[@]} -gt 0 ] || [ ${#go_jobs[@]} -gt 0 ]; then
  go_setup || exit 1
  check_sumdb
  lane() { local j; for j in "${go_jobs[@]}"; do eval "$j" || return 1; done; }
  pids=()
  if [ ${#go_jobs[@]} -gt 0 ]; then lane & pids+=($!); fi
  if [ ${#k8s[@]} -gt 0 ]; then build_kubernetes "${k8s[@]}" & pids+=($!); fi
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || die "a build failed (its output is above)"
fi
log "tools ready in $BIN"

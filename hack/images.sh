#!/usr/bin/env bash
# Builds every image the kind e2e cluster runs, from source and offline (no registry is ever pulled from):
#   Debian rootfs (debootstrap) -> chanscale/debian; the kind base and node images (Kubernetes components
#   preloaded under the names kubeadm and kind expect); the operator (root Dockerfile), OPA and Prometheus images.
# Pinned by hack/versions.env, named by hack/images.env, and cached by content: each image carries a label with the
# hash of its inputs (build context, Dockerfile, parent images), recorded as a stamp under
#   ${CHANSCALE_CACHE:-~/.cache/chanscale}/images/<hash of versions.env + images.env>/
# and an image whose label matches its inputs is reused, not rebuilt. The debootstrapped rootfs tarball is
# cached under .../rootfs/. Binaries come from hack/tools.sh (built into $CHANSCALE_BIN or ./bin).
#
#   hack/images.sh [build]       # build what changed (cold: about 3 min once the binaries exist; warm: seconds)
#   hack/images.sh build --cold  # ignore the labels and docker's layer cache (for measuring a cold build)
#   hack/images.sh build apps    # only some stages: tools debian apps components kind-base kind-node
#   hack/images.sh env           # print the resolved image names (KEY=VALUE)
#   hack/images.sh apps          # print the application images e2e loads into the cluster
#   hack/images.sh names         # print every image name it tags
#   hack/images.sh rootfs SUITE TAR  # only a debootstrapped minbase SUITE as TAR (hack/newcomer.sh's machine)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
# shellcheck source=hack/images.env
source "$ROOT/hack/images.env"
BIN=${CHANSCALE_BIN:-$ROOT/bin}
CACHE=${CHANSCALE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/chanscale}
KEY=$(cat "$ROOT/hack/versions.env" "$ROOT/hack/images.env" | sha256sum | cut -c1-12)
STATE=$CACHE/images/$KEY
MIRROR=${CHANSCALE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KIND_MODULE=sigs.k8s.io/kind@$KIND_VERSION
LABEL=dev.chanscale.inputs
IMAGES_DIR=$ROOT/hack/images
export DOCKER_BUILDKIT=0  # the classic builder: no frontend image to pull, works with Debian's docker.io

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

env_names() { compgen -v CHANSCALE_ | grep '_IMAGE$' | while read -r v; do echo "$v=${!v}"; done; }
app_images() {
  echo "$CHANSCALE_OPERATOR_IMAGE" "$CHANSCALE_OPA_IMAGE" "$CHANSCALE_PROMETHEUS_IMAGE" \
    "$CHANSCALE_NATS_IMAGE" "$CHANSCALE_NATS_WORKER_IMAGE"
}
kind_dir() {  # the kind module's folder in the Go module cache (its images/base/files)
  (cd /tmp && go mod download -json "$KIND_MODULE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
}
case ${1:-build} in
  env) env_names; exit ;;
  apps) app_images; exit ;;
  names)  # every image name this script tags (the component names need kubeadm: hack/tools.sh node)
    env_names | cut -d= -f2; echo "$CHANSCALE_KIND_NODE_IMAGE-stage"
    "$BIN/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" 2>/dev/null
    python3 "$IMAGES_DIR/kind_storage_manifest.py" "$(kind_dir)" images
    sed -n 's/^ *sandbox_image = "\(.*\)"/\1/p' "$(kind_dir)/images/base/files/etc/containerd/config.toml"
    exit ;;
  build) shift $(( $# > 0 ? 1 : 0 )) ;;
  rootfs) ;;  # defined below
  *) die "usage: hack/images.sh [build [--cold] [STAGE...]|env|apps|names|rootfs SUITE TAR]" ;;
esac
COLD=
if [ "${1:-}" = --cold ]; then COLD=1; shift; fi

# --- cache by content ------------------------------------------------------------------------------------------
slug() { echo "$1" | tr '/:@' '___'; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
image_label() { docker image inspect -f "{{index .Config.Labels \"$LABEL\"}}" "$1" 2>/dev/null || true; }
# inputs_hash DIR [STRING...]: the content of every file under DIR (names and bytes) and the strings.
inputs_hash() {
  local dir=$1; shift
  { (cd "$dir" && find . \( -type f -o -type l \) -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
    printf '%s\n' "$@"; } | sha256sum | cut -c1-16
}
# fresh NAME HASH: the image exists and was built from these inputs (its label says so). The label, not the stamp,
# decides: a change of hack/versions.env that does not touch an image's inputs (a new folder) rebuilds nothing.
fresh() {
  if [ -z "$COLD" ] && [ "$(image_label "$1")" = "$2" ]; then stamp "$1" "$2"; return 0; fi
  return 1
}
stamp() { echo "$2" >"$STATE/$(slug "$1").stamp"; }  # what this version set built, for inspection
ctx() {  # ctx NAME: a fresh, empty build context folder for NAME
  local d=$STATE/ctx/$(slug "$1")
  rm -rf "$d"; mkdir -p "$d"; echo "$d"
}
put() { cp -fL "$1" "$2" 2>/dev/null || die "missing $1 (hack/tools.sh node builds it)"; }

# build NAME CONTEXT [docker build args...]: docker build, unless the inputs are unchanged.
build() {
  local name=$1 dir=$2; shift 2
  local hash t
  hash=$(inputs_hash "$dir" "$@")
  if fresh "$name" "$hash"; then log "$name: cached ($hash)"; return; fi
  t=$(date +%s)
  log "$name: building (log: $STATE/logs/$(slug "$name").log)"
  if ! docker build ${COLD:+--no-cache} --label "$LABEL=$hash" -t "$name" "$@" "$dir" \
      >"$STATE/logs/$(slug "$name").log" 2>&1; then
    tail -30 "$STATE/logs/$(slug "$name").log" >&2
    die "building $name failed"
  fi
  stamp "$name" "$hash"
  log "$name: built in $(( $(date +%s) - t ))s"
}

# static_image NAME BINARY PATH [USER]: FROM scratch, one static binary, which is also the entrypoint.
static_image() {
  local name=$1 binary=$2 path=$3 user=${4:-} d
  d=$(ctx "$name")
  put "$binary" "$d/$(basename "$path")"
  chmod 0755 "$d/$(basename "$path")"
  { echo "FROM scratch"
    echo "COPY $(basename "$path") $path"
    echo "ENV PATH=/usr/local/bin:/usr/bin:/bin"
    if [ -n "$user" ]; then echo "USER $user"; fi
    echo "ENTRYPOINT [\"$path\"]"; } >"$d/Dockerfile"
  build "$name" "$d"
}

tag() { docker tag "$1" "$2"; }

# apt_install PACKAGE...: install what is missing (as root, with apt-get), or fail naming it.
apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || die "missing packages: ${missing[*]} (apt-get install them)"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || \
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
}

# --- the Debian root filesystem ----------------------------------------------------------------------------------
# debootstrap_tar SUITE TAR: a minbase root filesystem of SUITE as a tarball (also hack/newcomer.sh's machine).
debootstrap_tar() {
  local suite=$1 tar=$2 tmp t log=$CACHE/rootfs/debootstrap-$1.log
  apt_install debootstrap
  t=$(date +%s)
  mkdir -p "$(dirname "$tar")" "$CACHE/rootfs"
  tmp=$(mktemp -d "$CACHE/rootfs/debootstrap.XXXXXX")
  log "debootstrap --variant=minbase $suite from $MIRROR (log: $log)"
  debootstrap --variant=minbase --components=main "$suite" "$tmp" "$MIRROR" \
    >"$log" 2>&1 || { tail -20 "$log" >&2; rm -rf "$tmp"; die "debootstrap failed"; }
  rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* "$tmp"/var/log/*
  tar -C "$tmp" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
  rm -rf "$tmp"
  log "debian $suite rootfs: debootstrapped in $(( $(date +%s) - t ))s"
}

debian() {
  local tar=$CACHE/rootfs/debian-$DEBIAN_SUITE-minbase.tar hash
  if [ -n "$COLD" ] || [ ! -f "$tar" ]; then debootstrap_tar "$DEBIAN_SUITE" "$tar"; fi
  hash=$(sha256sum "$tar" | cut -c1-16)
  if fresh "$CHANSCALE_DEBIAN_IMAGE" "$hash"; then log "$CHANSCALE_DEBIAN_IMAGE: cached ($hash)"; return; fi
  docker import --change "LABEL $LABEL=$hash" --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tar" "$CHANSCALE_DEBIAN_IMAGE" >/dev/null
  stamp "$CHANSCALE_DEBIAN_IMAGE" "$hash"
  log "$CHANSCALE_DEBIAN_IMAGE: imported"
}

# debian_image NAME DOCKERFILE [FILE...]: an image FROM the Debian base, context = the files given.
debian_image() {
  local name=$1 dockerfile=$2 d f; shift 2
  d=$(ctx "$name")
  cp "$dockerfile" "$d/Dockerfile"
  for f in "$@"; do put "$f" "$d/$(basename "$f")"; done
  build "$name" "$d" --build-arg "BASE_IMAGE=$CHANSCALE_DEBIAN_IMAGE" \
    --build-arg "BASE_ID=$(image_id "$CHANSCALE_DEBIAN_IMAGE")"
}

# --- the application images --------------------------------------------------------------------------------------
operator() {
  local d; d=$(ctx "$CHANSCALE_OPERATOR_IMAGE")
  debian_image "$CHANSCALE_PYTHON_IMAGE" "$IMAGES_DIR/python.Dockerfile" /etc/ssl/certs/ca-certificates.crt
  # The root Dockerfile's context is what .dockerignore lets in: pyproject.toml, README.md, operator/,
  # hack/image_rootfs.py.
  (cd "$ROOT" && tar --exclude='__pycache__' --exclude='*.pyc' --exclude='*.egg-info' -cf - \
     Dockerfile .dockerignore pyproject.toml README.md operator hack/image_rootfs.py) | tar -C "$d" -xf -
  build "$CHANSCALE_OPERATOR_IMAGE" "$d" \
    --build-arg "PYTHON_IMAGE=$CHANSCALE_PYTHON_IMAGE" --build-arg "OPA_IMAGE=$CHANSCALE_OPA_IMAGE" \
    --build-arg "BASE_ID=$(image_id "$CHANSCALE_PYTHON_IMAGE") $(image_id "$CHANSCALE_OPA_IMAGE")"
}

# The example JetStream worker and load generator, built on the host from examples/nats-worker (static, reproducible:
# -trimpath, no VCS stamp, so unchanged sources give the same bytes and the image stays cached).
nats_worker() {
  local d; d=$(ctx "$CHANSCALE_NATS_WORKER_IMAGE")
  # shellcheck source=hack/go.sh
  (source "$ROOT/hack/go.sh" && go_setup && cd "$ROOT/examples/nats-worker" && CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" \
    go build -trimpath -ldflags "-s -w" -o "$d/" ./cmd/worker ./cmd/loadgen) || die "building examples/nats-worker failed"
  mv "$d/worker" "$d/nats-worker"; mv "$d/loadgen" "$d/nats-loadgen"
  { echo "FROM scratch"
    echo "COPY nats-worker nats-loadgen /usr/local/bin/"
    echo "USER 65532:65532"
    echo "ENTRYPOINT [\"/usr/local/bin/nats-worker\"]"; } >"$d/Dockerfile"
  build "$CHANSCALE_NATS_WORKER_IMAGE" "$d"
}

# --- Kubernetes component images and the kind images ----------------------------------------------------------
pause_binary() {  # upstream's pause.c from the Kubernetes module, static
  local src out=$STATE/pause/pause
  src=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | \
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause/linux/pause.c
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
    mkdir -p "$STATE/pause"
    apt_install gcc libc6-dev
    gcc -Os -Wall -Werror -static -DVERSION="$1" -o "$out" "$src" || die "building pause from $src failed"
    strip "$out"
  fi
  echo "$out"
}

components() {  # builds and prints the image names kubeadm asks for, kind's storage images and its sandbox tag
  local ref name ver sandbox storage
  for ref in $("$BIN/kubeadm" config images list --kubernetes-version "$KUBERNETES_VERSION" 2>/dev/null); do
    name=${ref%:*}; ver=${ref##*:}
    case ${name##*/} in
      kube-apiserver|kube-controller-manager|kube-scheduler)
        static_image "$ref" "$BIN/${name##*/}" "/usr/local/bin/${name##*/}" ;;
      kube-proxy)
        debian_image "$ref" "$IMAGES_DIR/kube-proxy.Dockerfile" "$BIN/kube-proxy" "$IMAGES_DIR/iptables-wrapper" ;;
      # kubeadm's etcd tag (e.g. 3.6.5-0) names the pinned etcd build (hack/versions.env ETCD_VERSION).
      etcd) static_image "$ref" "$BIN/etcd" /usr/local/bin/etcd ;;
      coredns)
        [ "$ver" = "$COREDNS_VERSION" ] || die "kubeadm wants coredns $ver: set COREDNS_VERSION=$ver (hack/versions.env)"
        # Root, not upstream's nonroot + file capability: the classic builder's layers do not keep the
        # security.capability xattr. kubeadm's Deployment still drops every capability but NET_BIND_SERVICE.
        static_image "$ref" "$BIN/coredns" /coredns ;;
      pause) static_image "$ref" "$(pause_binary "$ver")" /pause 65535:65535 ;;
      *) die "kubeadm lists an image this script does not know how to build: $ref" ;;
    esac
    echo "$ref"
  done
  # kind's default storage: local-path-provisioner from its Go module under the name kind's manifest uses; the
  # helper pod only runs sh/mkdir/rm scripts, which the Debian base has.
  python3 "$IMAGES_DIR/kind_storage_manifest.py" "$(kind_dir)" images >"$STATE/storage-images"
  mapfile -t storage <"$STATE/storage-images"
  static_image "${storage[0]}" "$BIN/local-path-provisioner" /usr/local/bin/local-path-provisioner
  tag "$CHANSCALE_DEBIAN_IMAGE" "${storage[1]}"
  printf '%s\n' "${storage[@]}"
  # kind's containerd config pins its own sandbox (pause) tag.
  sandbox=$(sed -n 's/^ *sandbox_image = "\(.*\)"/\1/p' "$(kind_dir)/images/base/files/etc/containerd/config.toml")
  tag "$CHANSCALE_WORKER_IMAGE" "$sandbox"
  echo "$sandbox"
}


kind_base() {
  local d; d=$(ctx "$CHANSCALE_KIND_BASE_IMAGE")
  cp "$IMAGES_DIR/kind-base.Dockerfile" "$d/Dockerfile"
  cp -r "$(kind_dir)/images/base/files" "$d/files" && chmod -R u+w "$d/files"
  put "$BIN/crictl" "$d/crictl"
  build "$CHANSCALE_KIND_BASE_IMAGE" "$d" --build-arg "BASE_IMAGE=$CHANSCALE_DEBIAN_IMAGE" \
    --build-arg "BASE_ID=$(image_id "$CHANSCALE_DEBIAN_IMAGE")"
}

kind_node() {  # kind_node IMAGE...: the node image with those images preloaded into its containerd
  local stage=$CHANSCALE_KIND_NODE_IMAGE-stage d f hash cid t ids=() ref
  d=$(ctx "$stage")
  cp "$IMAGES_DIR/kind-node.Dockerfile" "$d/Dockerfile"
  for f in kubeadm kubelet kubectl; do put "$BIN/$f" "$d/$f"; done
  for f in default-cni.yaml 10-chanscale-ptp.conflist chanscale-service-guard.service; do
    cp "$IMAGES_DIR/$f" "$d/"
  done
  python3 "$IMAGES_DIR/kind_storage_manifest.py" "$(kind_dir)" manifest >"$d/default-storage.yaml"
  echo "$KUBERNETES_VERSION" >"$d/version"
  build "$stage" "$d" --build-arg "BASE_IMAGE=$CHANSCALE_KIND_BASE_IMAGE" \
    --build-arg "BASE_ID=$(image_id "$CHANSCALE_KIND_BASE_IMAGE")"
  for ref in "$@"; do ids+=("$ref=$(image_id "$ref")"); done
  hash=$(printf '%s\n' "$(image_id "$stage")" "${ids[@]}" | sha256sum | cut -c1-16)
  if fresh "$CHANSCALE_KIND_NODE_IMAGE" "$hash"; then log "$CHANSCALE_KIND_NODE_IMAGE: cached ($hash)"; return; fi
  t=$(date +%s)
  log "$CHANSCALE_KIND_NODE_IMAGE: preloading $# images into the node's containerd"
  # containerd runs unprivileged here: only its content and image stores are used (--no-unpack); the node unpacks
  # on first use. This replaces `kind build node-image`, which fetches images from registries.
  cid=$(docker run -d --entrypoint /usr/local/bin/containerd "$stage")
  for _ in $(seq 1 30); do docker exec "$cid" ctr version >/dev/null 2>&1 && break; sleep 1; done
  docker save "$@" | docker exec -i "$cid" ctr -n k8s.io images import --all-platforms --no-unpack --digests - \
    >"$STATE/logs/preload.log" 2>&1 || { tail -20 "$STATE/logs/preload.log" >&2; die "preloading images failed"; }
  local have; have=$(docker exec "$cid" ctr -n k8s.io images ls -q)
  for ref in "$@"; do grep -qxF "$ref" <<<"$have" || die "the node lacks $ref after the import"; done
  docker kill -s TERM "$cid" >/dev/null && docker wait "$cid" >/dev/null
  docker commit --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change "LABEL $LABEL=$hash" "$cid" "$CHANSCALE_KIND_NODE_IMAGE" >/dev/null
  docker rm -f "$cid" >/dev/null
  stamp "$CHANSCALE_KIND_NODE_IMAGE" "$hash"
  log "$CHANSCALE_KIND_NODE_IMAGE: preloaded and committed in $(( $(date +%s) - t ))s"
}

stage() {  # stage NAME: run one stage, timed
  local t; t=$(date +%s)
  case $1 in
    tools) CHANSCALE_BIN=$BIN "$ROOT/hack/tools.sh" node ;;
    debian) debian ;;
    apps)
      static_image "$CHANSCALE_OPA_IMAGE" "$BIN/opa" /opa 1000:1000
      operator
      debian_image "$CHANSCALE_PROMETHEUS_IMAGE" "$IMAGES_DIR/prometheus.Dockerfile"
      static_image "$CHANSCALE_NATS_IMAGE" "$BIN/nats-server" /nats-server 65532:65532
      nats_worker ;;
    components) components >"$STATE/refs"; mapfile -t REFS <"$STATE/refs" ;;
    kind-base) kind_base ;;
    kind-node)
      if [ ${#REFS[@]} -eq 0 ]; then components >"$STATE/refs"; mapfile -t REFS <"$STATE/refs"; fi
      kind_node "${REFS[@]}" ;;
    *) die "unknown stage '$1' (tools debian apps components kind-base kind-node)" ;;
  esac
  log "stage $1: $(( $(date +%s) - t ))s"
}

# One build at a time per cache (CI, a developer and the benchmark may overlap): a second run waits, then finds
# the images cached. CHANSCALE_IMAGES_LOCKED=1 says a parent process (bench/kind_build.py) holds the lock already.
lock() {
  [ "${CHANSCALE_IMAGES_LOCKED:-}" = 1 ] && return
  exec 9>"$CACHE/images.lock"
  flock -n 9 || { log "waiting for another image build ($CACHE/images.lock)"; flock 9; }
}

main() {
  local t0 s stages=("$@")
  t0=$(date +%s)
  mkdir -p "$STATE/logs"
  lock
  docker info >/dev/null 2>&1 || die "no Docker engine: run hack/docker.sh"
  [ "${OPA_VERSION#v}-static" = "${CHANSCALE_OPA_IMAGE##*:}" ] || die "CHANSCALE_OPA_IMAGE does not carry OPA_VERSION"
  [ ${#stages[@]} -gt 0 ] || stages=(tools debian apps components kind-base kind-node)
  REFS=()
  for s in "${stages[@]}"; do stage "$s"; done
  # Images this script built that lost their tag to a newer build; nothing else is touched.
  docker image prune -f --filter "label=$LABEL" >/dev/null
  rm -rf "$STATE/ctx"  # the build contexts (copies of the binaries) are made afresh on every run
  log "images ready in $(( $(date +%s) - t0 ))s (cache: $STATE)"
}
if [ "${1:-}" = rootfs ]; then  # rootfs SUITE TAR: debootstrap SUITE into TAR unless it exists
  [ $# = 3 ] || die "usage: hack/images.sh rootfs SUITE TAR"
  [ -f "$3" ] || debootstrap_tar "$2" "$3"
  exit
fi
main "$@"

#!/usr/bin/env bash
# The kind cluster the e2e suite runs on, built offline (docs/testing.md):
#
#   hack/e2e-cluster.sh up     # Docker (hack/docker.sh) -> images (hack/images.sh, cached) -> kind cluster from
#                              # kind-config.yaml with the locally built node image (an existing healthy cluster on
#                              # the same node image is reused) -> app images loaded -> node Ready, CoreDNS Ready
#                              # and answering for cluster names only (no forward out of the cluster)
#   hack/e2e-cluster.sh load   # rebuild what changed among the app images and load them into the cluster
#   hack/e2e-cluster.sh down   # delete the cluster
#
# Writes .cache/e2e/kubeconfig (the API server on 127.0.0.1) and .cache/e2e/images.env (resolved image names);
# CHANSCALE_E2E_DIR moves that folder, CHANSCALE_E2E_CLUSTER names another cluster.
# Prints the time of each stage. kind-config.yaml keeps its pinned kindest/node image for ordinary Docker hosts;
# set CHANSCALE_KIND_NODE_IMAGE= (empty) to use it instead of the local build.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
node_image_override=${CHANSCALE_KIND_NODE_IMAGE-unset}
# shellcheck source=hack/images.env
source "$ROOT/hack/images.env"
if [ "$node_image_override" != unset ]; then CHANSCALE_KIND_NODE_IMAGE=$node_image_override; fi
export CHANSCALE_BIN=${CHANSCALE_BIN:-$ROOT/bin}
KIND=$CHANSCALE_BIN/kind
KUBECTL=$CHANSCALE_BIN/kubectl
CLUSTER=${CHANSCALE_E2E_CLUSTER:-$(sed -n 's/^name: *//p' "$ROOT/kind-config.yaml")}
OUT=${CHANSCALE_E2E_DIR:-$ROOT/.cache/e2e}
KUBECONFIG_OUT=$OUT/kubeconfig

log() { printf '[e2e-cluster] %s\n' "$*" >&2; }
die() { printf '[e2e-cluster] ERROR: %s\n' "$*" >&2; exit 1; }
timed() {  # timed STAGE COMMAND...: run and print how long it took
  local t=$SECONDS
  log "stage $1"
  "${@:2}"
  log "stage $1: $(( SECONDS - t ))s"
}

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_OUT" "$@"; }

cluster_exists() { "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; }

# started_once: the node container has run since its creation, without a restart (a kind node restarted with
# dockerd, e.g. on a machine handed back, may come up with another address; recreate it instead of trusting it).
started_once() {
  local created started running
  read -r created started running < <(docker inspect -f '{{.Created}} {{.State.StartedAt}} {{.State.Running}}' \
    "$CLUSTER-control-plane" 2>/dev/null) || return 1
  [ "$running" = true ] && [ $(( $(date -d "$started" +%s) - $(date -d "$created" +%s) )) -lt 120 ]
}

# healthy: the cluster answers, runs the wanted node image, and its node is Ready.
healthy() {
  local want have
  cluster_exists || return 1
  if ! started_once; then log "cluster $CLUSTER's node is stopped or was restarted"; return 1; fi
  if [ -n "$CHANSCALE_KIND_NODE_IMAGE" ]; then
    want=$(docker image inspect -f '{{.Id}}' "$CHANSCALE_KIND_NODE_IMAGE" 2>/dev/null || true)
    have=$(docker inspect -f '{{.Image}}' "$CLUSTER-control-plane" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then log "cluster $CLUSTER runs an older node image"; return 1; fi
  fi
  "$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_OUT" >/dev/null 2>&1 || return 1
  k wait node --all --for=condition=Ready --timeout=20s >/dev/null 2>&1
}

create() {
  if healthy; then log "reusing the healthy cluster $CLUSTER"; return; fi
  if cluster_exists; then log "deleting the unhealthy cluster $CLUSTER"; "$KIND" delete cluster --name "$CLUSTER"; fi
  local image=()
  if [ -n "$CHANSCALE_KIND_NODE_IMAGE" ]; then image=(--image "$CHANSCALE_KIND_NODE_IMAGE"); fi
  "$KIND" create cluster --name "$CLUSTER" --config "$ROOT/kind-config.yaml" "${image[@]}" \
    --kubeconfig "$KUBECONFIG_OUT" --retain=false
}

load() {
  local img
  # kind skips an image whose ID the node already has.
  for img in $("$ROOT/hack/images.sh" apps); do "$KIND" load docker-image "$img" --name "$CLUSTER"; done
}

# CoreDNS answers for the cluster's own zones only: kubeadm's Corefile forwards every other name to the node's
# resolver (Docker's, then the host's), which would send queries out of the cluster. Nothing in the cluster
# needs an outside name (no image is pulled), so the forward block goes.
isolate_dns() {
  local corefile
  corefile=$(k -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')
  grep -q 'forward \. /etc/resolv.conf' <<<"$corefile" || return 0
  log "CoreDNS: dropping the forward to the node's resolver (cluster names only)"
  corefile=$(sed '/forward \. \/etc\/resolv.conf {/,/}/d' <<<"$corefile")
  k -n kube-system patch configmap coredns --type merge \
    -p "$(python3 -c 'import json,sys; print(json.dumps({"data": {"Corefile": sys.stdin.read()}}))' <<<"$corefile")"
  k -n kube-system rollout restart deployment/coredns
}

ready() {
  k wait node --all --for=condition=Ready --timeout=300s
  isolate_dns
  # rollout status returns once every new replica is available and the old ones are gone. A pod-level wait on the
  # label after it could still list an old pod being deleted and wait for it until the timeout.
  k -n kube-system rollout status deployment/coredns --timeout=300s
}

write_env() {
  { "$ROOT/hack/images.sh" env; echo "CHANSCALE_E2E_CLUSTER=$CLUSTER"; } >"$OUT/images.env"
}

up() {
  local t0=$SECONDS
  mkdir -p "$OUT"
  timed docker "$ROOT/hack/docker.sh"
  timed images "$ROOT/hack/images.sh" build
  timed cluster create
  timed load load
  timed ready ready
  write_env
  log "cluster $CLUSTER up in $(( SECONDS - t0 ))s; KUBECONFIG=$KUBECONFIG_OUT"
}

case ${1:-} in
  up) up ;;
  load) mkdir -p "$OUT"; timed images "$ROOT/hack/images.sh" build apps; timed load load; write_env ;;
  down) if cluster_exists; then timed delete "$KIND" delete cluster --name "$CLUSTER"; fi; rm -f "$KUBECONFIG_OUT" ;;
  *) die "usage: hack/e2e-cluster.sh up|load|down" ;;
esac

#!/usr/bin/env bash
# Bring up grpclab's kind cluster, step by step, each step skipped when already done:
# create the cluster (cluster/kind.yaml) unless it exists, build the demo image, load it
# into the nodes, and wait until every node is Ready. `make kind-up` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=grpclab
CONTEXT="kind-${CLUSTER}"
IMAGE="${GRPCLAB_IMAGE:-grpclab/demo-server:0.1.0}"  # the image cluster/manifests/ names
KIND_VERSION=v0.27.0  # the release whose node image cluster/kind.yaml pins

fail() { echo "kind-up: $*" >&2; exit 1; }
need() {
  command -v "$1" >/dev/null 2>&1 || fail "'$1' is not installed. $2"
}

need docker "Install Docker Engine (Linux) or Docker Desktop: https://docs.docker.com/get-docker/"
need kind "Install kind ${KIND_VERSION}: 'go install sigs.k8s.io/kind@${KIND_VERSION}', or a binary from https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
docker info >/dev/null 2>&1 \
  || fail "Docker is installed but its daemon does not answer ('docker info' failed). Start Docker (and check that your user may use it), then run this again."

if ! kind version | grep -q "${KIND_VERSION} "; then
  echo "kind-up: warning: $(kind version) is not kind ${KIND_VERSION}; the node image in cluster/kind.yaml was built for ${KIND_VERSION}" >&2
fi

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  echo "kind-up: cluster ${CLUSTER} exists"
else
  kind create cluster --config cluster/kind.yaml --wait 120s
fi

k() { kubectl --context "${CONTEXT}" "$@"; }
step() { echo "kind-up: [$((SECONDS))s] $*"; }

# A cluster made from an older cluster/kind.yaml lacks the zone-b node the xDS notebook needs.
if [ -z "$(k get nodes -l topology.kubernetes.io/zone=zone-b -o name 2>/dev/null)" ]; then
  fail "cluster ${CLUSTER} has no node in zone-b: it was made from an older cluster/kind.yaml. Recreate it: make kind-down && make kind-up"
fi

step "building ${IMAGE}"
# Docker's layer cache makes a rebuild without changes take a second or two.
docker build --file cluster/Dockerfile --tag "${IMAGE}" .
step "loading ${IMAGE} into the nodes (kind skips nodes that have this exact image)"
kind load docker-image "${IMAGE}" --name "${CLUSTER}"

step "waiting for every node to be Ready"
k wait --for=condition=Ready nodes --all --timeout=180s

# CoreDNS must answer for cluster.local from its live view, not from a 30 s cache (see
# cluster/coredns-no-cluster-cache.sh). Restarted only when the Corefile changed.
corefile="$(k -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')"
patched="$(bash cluster/coredns-no-cluster-cache.sh <<<"${corefile}")"
if [ "${patched}" != "${corefile}" ]; then
  step "CoreDNS: no cache for cluster.local"
  k -n kube-system create configmap coredns --from-file=Corefile=/dev/stdin \
    --dry-run=client -o yaml <<<"${patched}" \
    | k apply --server-side --force-conflicts --field-manager=grpclab -f -
  k -n kube-system rollout restart deployment/coredns
fi
k -n kube-system rollout status deployment/coredns --timeout=120s
step "ready. Context ${CONTEXT}; use it with GRPCLAB_BACKEND=kind."

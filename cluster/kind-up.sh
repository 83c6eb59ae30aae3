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

# Docker's layer cache makes a rebuild without changes take a second or two.
docker build --file cluster/Dockerfile --tag "${IMAGE}" .
# kind skips nodes that already have this exact image.
kind load docker-image "${IMAGE}" --name "${CLUSTER}"

kubectl --context "${CONTEXT}" wait --for=condition=Ready nodes --all --timeout=180s
echo "kind-up: ready. Context ${CONTEXT}; use it with GRPCLAB_BACKEND=kind."

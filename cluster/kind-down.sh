#!/usr/bin/env bash
# Remove grpclab's kind cluster and everything in it. `make kind-down` runs this; it is a
# no-op when the cluster does not exist.
set -euo pipefail

CLUSTER=grpclab
if ! command -v kind >/dev/null 2>&1; then
  echo "kind-down: kind is not installed, so there is no kind cluster to remove"
  exit 0
fi
if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  kind delete cluster --name "${CLUSTER}"
else
  echo "kind-down: no cluster ${CLUSTER}"
fi

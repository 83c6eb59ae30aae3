#!/usr/bin/env bash
# Gateway API CRDs (Gateway, HTTPRoute, GRPCRoute, ...). Linkerd needs them installed first;
# Envoy Gateway and Istio read them. The experimental channel is a superset of standard and
# is what Linkerd's and Envoy Gateway's docs install.
# Source: https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api
# v1.2.1 is inside the ranges of Linkerd 2.18 (1.1.1-1.2.1, https://linkerd.io/2.18/features/gateway-api/)
# and Envoy Gateway v1.3 (its compatibility matrix).
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=v1.2.1
CHANNEL=experimental
URL="https://github.com/kubernetes-sigs/gateway-api/releases/download/${VERSION}/${CHANNEL}-install.yaml"

# Version and channel both: Traefik's chart, for one, brings the standard channel of the same
# version, which lacks the experimental kinds.
crd_annotation() {
  kube get crd httproutes.gateway.networking.k8s.io \
    -o jsonpath="{.metadata.annotations.gateway\\.networking\\.k8s\\.io/$1}" 2>/dev/null || true
}
installed="$(crd_annotation bundle-version)"
channel="$(crd_annotation channel)"
if [ "${installed}" = "${VERSION}" ] && [ "${channel}" = "${CHANNEL}" ]; then
  say "Gateway API ${VERSION} (${CHANNEL} channel) is already installed"
  exit 0
fi
if [ -n "${installed}" ] && [ "${installed}" != "${VERSION}" ]; then
  say "Gateway API ${installed} (${channel:-unknown} channel) is installed; grpclab pins ${VERSION}. Leaving it as it is."
  exit 0
fi
if [ -n "${installed}" ]; then
  say "Gateway API ${VERSION} is installed from its ${channel:-unknown} channel; adding the ${CHANNEL} channel (a superset)"
else
  say "installing Gateway API CRDs ${VERSION} (${CHANNEL} channel)"
fi
# Server-side: some of these CRDs are too large for client-side apply's annotation; taking
# over fields another installer (Helm) set is what an upgrade to a superset means.
kube apply --server-side --force-conflicts -f "${URL}"
kube wait --for=condition=Established crd --all --timeout=120s >/dev/null
say "installed"

#!/usr/bin/env bash
# Gateway API CRDs (Gateway, HTTPRoute, GRPCRoute, ...). Linkerd needs them installed first;
# Envoy Gateway and Istio read them. The experimental channel is a superset of standard and
# is what Linkerd's and Envoy Gateway's docs install.
# Source: https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api
# v1.2.1 is inside the ranges of Linkerd 2.18 (1.1.1-1.2.1, https://linkerd.io/2/features/gateway-api/)
# and Envoy Gateway v1.3 (its compatibility matrix).
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=v1.2.1
URL="https://github.com/kubernetes-sigs/gateway-api/releases/download/${VERSION}/experimental-install.yaml"

installed="$(kube get crd httproutes.gateway.networking.k8s.io \
  -o jsonpath='{.metadata.annotations.gateway\.networking\.k8s\.io/bundle-version}' 2>/dev/null || true)"
if [ "${installed}" = "${VERSION}" ]; then
  say "Gateway API ${VERSION} is already installed"
  exit 0
fi
if [ -n "${installed}" ]; then
  say "Gateway API ${installed} is installed; grpclab pins ${VERSION}. Leaving it as it is."
  exit 0
fi
say "installing Gateway API CRDs ${VERSION}"
# Server-side: some of these CRDs are too large for client-side apply's annotation.
kube apply --server-side --force-conflicts -f "${URL}"
kube wait --for=condition=Established crd --all --timeout=120s >/dev/null
say "installed"

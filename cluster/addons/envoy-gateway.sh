#!/usr/bin/env bash
# Envoy Gateway, the Gateway API implementation built on Envoy, from its OCI Helm chart. The
# chart also brings the Gateway API CRDs when they are missing (Helm skips existing CRDs).
# v1.3 supports Gateway API v1.2.1 and Kubernetes 1.29-1.32.
# Source: https://gateway.envoyproxy.io/v1.3/install/install-helm/
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=v1.3.2
need helm "Install Helm 3 (3.8 or later, for OCI charts): https://helm.sh/docs/intro/install/"

installed="$(deployment_tag envoy-gateway-system envoy-gateway envoy-gateway)"
if [ "${installed}" = "${VERSION}" ]; then
  say "Envoy Gateway ${VERSION} is already installed"
  exit 0
fi
if [ -n "${installed}" ]; then
  say "Envoy Gateway ${installed} is installed; grpclab pins ${VERSION}. Leaving it as it is."
  exit 0
fi
say "installing Envoy Gateway ${VERSION}"
helm_ install eg oci://docker.io/envoyproxy/gateway-helm --version "${VERSION}" \
  --namespace envoy-gateway-system --create-namespace
kube -n envoy-gateway-system wait --timeout=5m deployment/envoy-gateway --for=condition=Available
say "installed"

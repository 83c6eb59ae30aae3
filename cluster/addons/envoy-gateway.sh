#!/usr/bin/env bash
# Envoy Gateway, the Gateway API implementation built on Envoy, from its OCI Helm chart, and
# the GatewayClass "envoy" that grpclab's Gateway names (envoy-gateway-class.yaml). The chart
# also brings the Gateway API CRDs when they are missing (Helm skips existing CRDs).
# v1.3 supports Gateway API v1.2.1 and Kubernetes 1.29-1.32 (its compatibility matrix).
# Install steps (v1.3 docs): helm install, wait for the Deployment to be Available, then a
# GatewayClass as the quickstart's; https://gateway.envoyproxy.io/v1.3/install/install-helm/
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=v1.3.3
NAMESPACE=envoy-gateway-system
CLASS_MANIFEST="$(dirname "$0")/envoy-gateway-class.yaml"
need helm "Install Helm 3 (3.8 or later, for OCI charts): https://helm.sh/docs/intro/install/"

installed="$(deployment_tag "${NAMESPACE}" envoy-gateway envoy-gateway)"
if [ "${installed}" = "${VERSION}" ]; then
  say "Envoy Gateway ${VERSION} is already installed"
elif [ -n "${installed}" ]; then
  say "Envoy Gateway ${installed} is installed; grpclab pins ${VERSION}. Leaving it as it is."
else
  say "installing Envoy Gateway ${VERSION}"
  helm_ install eg oci://docker.io/envoyproxy/gateway-helm --version "${VERSION}" \
    --namespace "${NAMESPACE}" --create-namespace
fi
say "waiting for deployment/envoy-gateway to be Available"
kube -n "${NAMESPACE}" wait --timeout=5m deployment/envoy-gateway --for=condition=Available
# Every run (also when Envoy Gateway was already there): the class is what makes a Gateway
# work, and applying it again changes nothing.
say "applying GatewayClass envoy"
kube apply --server-side --field-manager=grpclab -f "${CLASS_MANIFEST}"
say "waiting for GatewayClass envoy to be Accepted by the controller"
kube wait --timeout=2m gatewayclass/envoy --for=condition=Accepted
say "installed"

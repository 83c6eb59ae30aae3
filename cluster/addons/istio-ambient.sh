#!/usr/bin/env bash
# Istio in ambient mode: istiod, istio-cni and the ztunnel DaemonSet (profile "ambient").
# Notebook 15 labels its namespace istio.io/dataplane-mode=ambient and deploys a waypoint
# with a Gateway of class istio-waypoint, which needs the Gateway API CRDs: this script
# installs them first (gateway-api.sh). Same version as istio.sh. Istio can move a sidecar
# install to the ambient profile (istioctl upgrade, https://istio.io/latest/docs/ambient/migrate/install-ambient-components/),
# but grpclab does not switch a cluster's profile: CI runs notebook 15 on a kind cluster of
# its own, and this script refuses a cluster whose istiod has no ztunnel.
# Install commands: https://istio.io/latest/docs/ambient/install/istioctl/
# Istio 1.25 supports Kubernetes 1.29-1.32 (https://istio.io/latest/docs/releases/supported-releases/).
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=1.25.2
need istioctl "Get istioctl ${VERSION}: curl -sL https://istio.io/downloadIstio | ISTIO_VERSION=${VERSION} sh - && export PATH=\"\$PWD/istio-${VERSION}/bin:\$PATH\""

"$(dirname "$0")/gateway-api.sh"

# ztunnel's tag may carry a variant (1.25.2-distroless): the version is before the dash.
ztunnel="$(workload_tag daemonset istio-system ztunnel)"
stop_if_installed "Istio ambient (ztunnel)" "${ztunnel%%-*}" "${VERSION}"
if [ -n "$(deployment_tag istio-system istiod discovery)" ]; then
  fail "istiod is installed without ztunnel (a sidecar profile, e.g. by istio.sh). grpclab does not switch a cluster's Istio profile; use a cluster of its own for ambient (make kind-down && make kind-up)"
fi
istioctl version --remote=false 2>/dev/null | grep -q "${VERSION}" \
  || fail "istioctl is not ${VERSION} ($(istioctl version --remote=false 2>&1 | head -1)). Get it: curl -sL https://istio.io/downloadIstio | ISTIO_VERSION=${VERSION} sh -"

context_flag=()
[ -n "${CONTEXT}" ] && context_flag=(--context "${CONTEXT}")
say "installing Istio ${VERSION} (profile ambient)"
istioctl install "${context_flag[@]}" -y --set profile=ambient
kube -n istio-system rollout status deployment/istiod --timeout=300s
kube -n istio-system rollout status daemonset/ztunnel --timeout=300s
kube -n istio-system rollout status daemonset/istio-cni-node --timeout=300s
say "installed"

#!/usr/bin/env bash
# Istio's control plane (istiod only: profile "minimal"); notebooks label their namespace
# istio-injection=enabled to get sidecars. Istio 1.25 supports Kubernetes 1.29-1.32
# (https://istio.io/latest/docs/releases/supported-releases/).
# Install commands: https://istio.io/latest/docs/setup/install/istioctl/
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=1.25.2
need istioctl "Get istioctl ${VERSION}: curl -sL https://istio.io/downloadIstio | ISTIO_VERSION=${VERSION} sh - && export PATH=\"\$PWD/istio-${VERSION}/bin:\$PATH\""

stop_if_installed istiod "$(deployment_tag istio-system istiod discovery)" "${VERSION}"
istioctl version --remote=false 2>/dev/null | grep -q "${VERSION}" \
  || fail "istioctl is not ${VERSION} ($(istioctl version --remote=false 2>&1 | head -1)). Get it: curl -sL https://istio.io/downloadIstio | ISTIO_VERSION=${VERSION} sh -"

context_flag=()
[ -n "${CONTEXT}" ] && context_flag=(--context "${CONTEXT}")
say "installing Istio ${VERSION} (profile minimal)"
# Native sidecars (Kubernetes >= 1.29) let a Job's pod finish when its main container does,
# instead of waiting forever for istio-proxy.
istioctl install "${context_flag[@]}" -y --set profile=minimal \
  --set values.pilot.env.ENABLE_NATIVE_SIDECARS=true
kube -n istio-system rollout status deployment/istiod --timeout=300s
say "installed"

#!/usr/bin/env bash
# Linkerd's control plane. The Linkerd project ships edge releases; edge-25.4.4 is Linkerd
# 2.18 (https://linkerd.io/releases/). It needs the Gateway API CRDs first, which
# gateway-api.sh installs (https://linkerd.io/2/features/gateway-api/).
# Install commands: https://linkerd.io/2/tasks/install/
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=edge-25.4.4
need linkerd "Get the linkerd CLI ${VERSION}: curl --proto '=https' --tlsv1.2 -sSfL https://run.linkerd.io/install-edge | LINKERD2_VERSION=${VERSION} sh && export PATH=\"\$HOME/.linkerd2/bin:\$PATH\""

stop_if_installed Linkerd "$(deployment_tag linkerd linkerd-destination destination)" "${VERSION}"
linkerd version --client 2>/dev/null | grep -q "${VERSION}" \
  || fail "the linkerd CLI is not ${VERSION} ($(linkerd version --client 2>&1 | head -1)). Get it: curl --proto '=https' --tlsv1.2 -sSfL https://run.linkerd.io/install-edge | LINKERD2_VERSION=${VERSION} sh"

bash "$(dirname "$0")/gateway-api.sh"
context_flag=()
[ -n "${CONTEXT}" ] && context_flag=(--context "${CONTEXT}")
say "installing Linkerd ${VERSION}"
linkerd "${context_flag[@]}" check --pre
linkerd "${context_flag[@]}" install --crds | kube apply -f -
linkerd "${context_flag[@]}" install | kube apply -f -
linkerd "${context_flag[@]}" check --wait 5m
say "installed"

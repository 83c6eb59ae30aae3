#!/usr/bin/env bash
# Traefik Proxy v3 from its Helm chart, with the Kubernetes Ingress and CRD providers (the
# chart's defaults). A ClusterIP Service: reached from inside the cluster, like the others.
# Source: https://doc.traefik.io/traefik/getting-started/install-traefik/#use-the-helm-chart
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

CHART_VERSION=35.4.0
need helm "Install Helm 3: https://helm.sh/docs/intro/install/"

stop_if_installed "Traefik chart" "$(helm_chart traefik traefik)" "traefik-${CHART_VERSION}"
say "installing Traefik chart ${CHART_VERSION}"
helm repo add traefik https://traefik.github.io/charts --force-update >/dev/null
helm_ install traefik traefik/traefik --version "${CHART_VERSION}" \
  --namespace traefik --create-namespace \
  --set service.type=ClusterIP \
  --wait --timeout 5m
say "installed"

#!/usr/bin/env bash
# A small Prometheus of our own (cluster/addons/prometheus.yaml) that scrapes the demo pods'
# container port named "metrics". Server-side apply makes a second run change nothing.
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

MANIFEST="$(dirname "$0")/prometheus.yaml"
NAMESPACE=grpclab-monitoring
say "applying $(grep -m1 -o 'prom/prometheus:v[0-9.]*' "${MANIFEST}")"
kube apply --server-side --field-manager=grpclab -f "${MANIFEST}"
# Prometheus reads its ConfigMap once: a changed manifest (a new scrape scope) must roll the
# pod. The manifest's hash in the pod template does that, and only when it changed.
hash="$(sha256sum "${MANIFEST}" | cut -c1-16)"
kube -n "${NAMESPACE}" patch deployment prometheus --type merge \
  -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"grpclab/manifest-sha256\":\"${hash}\"}}}}}" >/dev/null
say "waiting for deployment/prometheus to roll out"
kube -n "${NAMESPACE}" rollout status deployment/prometheus --timeout=300s
say "installed; in the cluster at http://prometheus.${NAMESPACE}.svc.cluster.local:9090"

#!/usr/bin/env bash
# A small Prometheus of our own (cluster/addons/prometheus.yaml) that scrapes every pod's
# container port named "metrics". Server-side apply makes a second run change nothing.
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

MANIFEST="$(dirname "$0")/prometheus.yaml"
say "applying $(grep -m1 -o 'prom/prometheus:v[0-9.]*' "${MANIFEST}")"
kube apply --server-side --field-manager=grpclab -f "${MANIFEST}"
kube -n grpclab-monitoring rollout status deployment/prometheus --timeout=300s
say "installed; in the cluster at http://prometheus.grpclab-monitoring.svc.cluster.local:9090"

#!/usr/bin/env bash
# Collect what explains a failure on the kind cluster into DIR (default artifacts/kind):
# objects, events, `kubectl describe` of the pods that are not well (and of all pods), the
# logs of every pod (and of its previous container: ztunnel's and the waypoints' among them),
# CoreDNS's Corefile, namespaces' mesh labels, Services and EndpointSlices (zone hints), the
# Gateway API objects' status (waypoints too), the mesh rules, what istiod pushed (istioctl
# proxy-status and ztunnel-config, when Istio is installed), and kind's own node logs. CI
# uploads DIR when a job fails, times out or is cancelled. Never fails itself: a diagnostic
# that errors is recorded and skipped.
set -uo pipefail

DIR="${1:-artifacts/kind}"
CONTEXT="${GRPCLAB_KUBE_CONTEXT:-kind-grpclab}"
mkdir -p "${DIR}/logs"
k() { kubectl --context "${CONTEXT}" "$@"; }

k get nodes -o wide --show-labels >"${DIR}/nodes.txt" 2>&1
k describe nodes >"${DIR}/describe-nodes.txt" 2>&1
k get all,endpointslices,jobs,ingresses -A -o wide >"${DIR}/objects.txt" 2>&1
# Which namespaces are meshed, and how (istio-injection, istio.io/dataplane-mode: ambient).
k get namespaces --show-labels >"${DIR}/namespaces.txt" 2>&1
# Services (trafficDistribution, the istio.io/use-waypoint label) and EndpointSlices with
# their zone hints: the -o wide listing shows neither.
k get services,endpointslices -A -o yaml >"${DIR}/services-endpointslices.yaml" 2>&1
# Routes and mesh rules, one kind at a time: a kind whose CRD is not installed on this
# cluster fails alone instead of emptying the whole listing. A waypoint is a Gateway.
: >"${DIR}/gateway-api.yaml"
: >"${DIR}/mesh-rules.yaml"
for kind in gatewayclasses gateways grpcroutes httproutes; do
  k get "${kind}" -A -o yaml >>"${DIR}/gateway-api.yaml" 2>&1
done
for kind in destinationrules.networking.istio.io virtualservices.networking.istio.io \
  serviceprofiles.linkerd.io ingressroutes.traefik.io; do
  k get "${kind}" -A -o yaml >>"${DIR}/mesh-rules.yaml" 2>&1
done
# What istiod pushed: each sidecar's and waypoint's sync state, and (ambient) the workloads
# and Services ztunnel knows, with the waypoint it sends each to.
if command -v istioctl >/dev/null 2>&1 && k get namespace istio-system >/dev/null 2>&1; then
  for view in "proxy-status" "ztunnel-config workloads" "ztunnel-config services"; do
    # shellcheck disable=SC2086  # the view is two words on purpose
    istioctl --context "${CONTEXT}" ${view} >"${DIR}/istioctl-${view// /-}.txt" 2>&1
  done
fi
k get events -A --sort-by=.lastTimestamp >"${DIR}/events.txt" 2>&1
k -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}' >"${DIR}/coredns-Corefile.txt" 2>&1
k describe pods -A >"${DIR}/describe-pods.txt" 2>&1
k describe deployments -A >"${DIR}/describe-deployments.txt" 2>&1

# One line per pod: namespace, name, phase, ready flags of its containers, restart counts.
k get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name} {.status.phase} {.status.containerStatuses[*].ready} {.status.containerStatuses[*].restartCount}{"\n"}{end}' \
  >"${DIR}/pods.txt" 2>/dev/null
: >"${DIR}/describe-failing-pods.txt"
while read -r namespace pod phase rest; do
  [ -n "${pod}" ] || continue
  k logs -n "${namespace}" "${pod}" --all-containers --prefix >"${DIR}/logs/${namespace}_${pod}.log" 2>&1
  # The previous container's log tells why a restarted container died.
  k logs -n "${namespace}" "${pod}" --all-containers --prefix --previous \
    >"${DIR}/logs/${namespace}_${pod}.previous.log" 2>/dev/null || rm -f "${DIR}/logs/${namespace}_${pod}.previous.log"
  # Failing: not Running/Succeeded, a container not ready, or a restart.
  if [ "${phase}" != "Succeeded" ] && { [ "${phase}" != "Running" ] || [[ " ${rest} " == *" false "* ]] || [[ " ${rest} " =~ \ [1-9][0-9]*\  ]]; }; then
    k describe pod -n "${namespace}" "${pod}" >>"${DIR}/describe-failing-pods.txt" 2>&1
  fi
done <"${DIR}/pods.txt"

if command -v kind >/dev/null 2>&1; then
  kind export logs "${DIR}/kind-export" --name grpclab >/dev/null 2>&1 || echo "kind export logs failed" >"${DIR}/kind-export.txt"
fi
echo "kind-diagnostics: wrote ${DIR}"
exit 0

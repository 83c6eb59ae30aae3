#!/usr/bin/env bash
# Collect what explains a failure on the kind cluster into DIR (default artifacts/kind):
# objects, events, describe output and logs of every pod, and kind's node logs. CI uploads
# DIR when a job fails. Never fails itself: a diagnostic that errors is recorded and skipped.
set -uo pipefail

DIR="${1:-artifacts/kind}"
CONTEXT="${GRPCLAB_KUBE_CONTEXT:-kind-grpclab}"
mkdir -p "${DIR}/logs"
k() { kubectl --context "${CONTEXT}" "$@"; }

k get nodes -o wide >"${DIR}/nodes.txt" 2>&1
k get all,endpointslices,jobs -A -o wide >"${DIR}/objects.txt" 2>&1
k get events -A --sort-by=.lastTimestamp >"${DIR}/events.txt" 2>&1
k describe pods -A >"${DIR}/describe-pods.txt" 2>&1
k describe deployments -A >"${DIR}/describe-deployments.txt" 2>&1

k get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}' 2>/dev/null |
  while read -r namespace pod; do
    [ -n "${pod}" ] || continue
    k logs -n "${namespace}" "${pod}" --all-containers --prefix >"${DIR}/logs/${namespace}_${pod}.log" 2>&1
    # The previous container's log tells why a restarted container died.
    k logs -n "${namespace}" "${pod}" --all-containers --prefix --previous \
      >"${DIR}/logs/${namespace}_${pod}.previous.log" 2>/dev/null || rm -f "${DIR}/logs/${namespace}_${pod}.previous.log"
  done

if command -v kind >/dev/null 2>&1; then
  kind export logs "${DIR}/kind-export" --name grpclab >/dev/null 2>&1 || echo "kind export logs failed" >"${DIR}/kind-export.txt"
fi
echo "kind-diagnostics: wrote ${DIR}"
exit 0

# shellcheck shell=bash
# Shared by the add-on installers (sourced, not run). Each installer pins one version, says
# how to get a missing CLI, and does nothing when that version is already installed.
# GRPCLAB_KUBE_CONTEXT picks the kubeconfig context (default: the current one).
set -euo pipefail

ADDON="$(basename "$0" .sh)"
CONTEXT="${GRPCLAB_KUBE_CONTEXT:-}"

say() { echo "[${ADDON}] $*"; }
fail() { echo "[${ADDON}] $*" >&2; exit 1; }
need() {
  # need CLI HOW-TO-GET-IT
  command -v "$1" >/dev/null 2>&1 || fail "'$1' is not installed. $2"
}
kube() {
  if [ -n "${CONTEXT}" ]; then kubectl --context "${CONTEXT}" "$@"; else kubectl "$@"; fi
}
helm_() {
  if [ -n "${CONTEXT}" ]; then helm --kube-context "${CONTEXT}" "$@"; else helm "$@"; fi
}
# The version tag of the image of a Deployment's container named $3 (digest dropped), or
# nothing when the Deployment is absent.
deployment_tag() {
  local image
  image="$(kube -n "$1" get deployment "$2" \
    -o jsonpath="{.spec.template.spec.containers[?(@.name=='$3')].image}" 2>/dev/null || true)"
  image="${image%%@*}"
  [ -n "${image}" ] && echo "${image##*:}"
  return 0
}
# The "chart-version" string of a Helm release, or nothing when it is not installed.
helm_chart() {
  helm_ -n "$1" list --filter "^$2\$" --output json 2>/dev/null \
    | sed -n 's/.*"chart":"\([^"]*\)".*/\1/p'
}

need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
kube version >/dev/null 2>&1 \
  || fail "cannot reach the cluster of context '${CONTEXT:-$(kubectl config current-context 2>/dev/null)}'. For kind: make kind-up"

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
# workload_tag KIND NAMESPACE NAME [CONTAINER]: the version tag of the image of the
# workload's container named CONTAINER (the first one without it), digest dropped; nothing
# when the workload is absent.
workload_tag() {
  local image container='[0]'
  [ -n "${4:-}" ] && container="[?(@.name=='$4')]"
  image="$(kube -n "$2" get "$1" "$3" \
    -o jsonpath="{.spec.template.spec.containers${container}.image}" 2>/dev/null || true)"
  image="${image%%@*}"
  [ -n "${image}" ] && echo "${image##*:}"
  return 0
}
deployment_tag() { workload_tag deployment "$@"; }
# stop_if_installed WHAT INSTALLED PINNED: end the installer (exit 0) when some version of
# WHAT is installed, saying whether it is the pinned one; an installed version other than the
# pinned one is left as it is. Nothing happens when INSTALLED is empty.
stop_if_installed() {
  [ -z "$2" ] && return 0
  if [ "$2" = "$3" ]; then
    say "$1 $3 is already installed"
  else
    say "$1 $2 is installed; grpclab pins $3. Leaving it as it is."
  fi
  exit 0
}
# The "chart-version" string of a Helm release, or nothing when it is not installed.
helm_chart() {
  helm_ -n "$1" list --filter "^$2\$" --output json 2>/dev/null \
    | sed -n 's/.*"chart":"\([^"]*\)".*/\1/p'
}

need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
kube version >/dev/null 2>&1 \
  || fail "cannot reach the cluster of context '${CONTEXT:-$(kubectl config current-context 2>/dev/null)}'. For kind: make kind-up"

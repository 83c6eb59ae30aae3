#!/usr/bin/env bash
# A filter: a CoreDNS Corefile on stdin, the same Corefile on stdout with its `cache` plugin
# told not to cache the cluster's own zone. kind-up.sh runs it on kube-system/coredns.
#
# Why: kubeadm up to 1.31 writes `cache 30` into the server block that also holds the
# kubernetes plugin (with `ttl 30`), so a headless Service's answer can be 30 s old while
# the kubernetes plugin (fed by a watch) already knows the new pods. Notebook 03 and lab 02
# measure how fast a client picks up new pods. kubeadm 1.32 writes the same two lines
# (kubernetes/kubernetes#128359), with the cache plugin's `disable` option that CoreDNS
# gained in 2022 (coredns/coredns#5540). Input that has them already passes through unchanged.
set -euo pipefail

corefile="$(cat)"
if grep -q 'disable success cluster.local' <<<"${corefile}"; then
  printf '%s\n' "${corefile}"
  exit 0
fi
grep -Eq '^[[:space:]]*cache [0-9]+[[:space:]]*$' <<<"${corefile}" || {
  echo "coredns-no-cluster-cache: no plain 'cache N' line in this Corefile; change it by hand" >&2
  exit 1
}
awk '
  /^[[:space:]]*cache [0-9]+[[:space:]]*$/ {
    indent = $0; sub(/cache.*/, "", indent)
    print indent $1 " " $2 " {"
    print indent "   disable success cluster.local"
    print indent "   disable denial cluster.local"
    print indent "}"
    next
  }
  { print }
' <<<"${corefile}"

#!/usr/bin/env bash
# The NGINX Ingress controller, from its pinned upstream manifest. The "cloud" flavour needs no
# node labels or host ports: on kind its LoadBalancer Service stays <pending>, and the
# notebooks reach it from inside the cluster through its cluster IP, as the load Job does.
# Source: https://kubernetes.github.io/ingress-nginx/deploy/
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=v1.12.1
URL="https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-${VERSION}/deploy/static/provider/cloud/deploy.yaml"

installed="$(deployment_tag ingress-nginx ingress-nginx-controller controller)"
if [ "${installed}" = "${VERSION}" ]; then
  say "ingress-nginx ${VERSION} is already installed"
  exit 0
fi
if [ -n "${installed}" ]; then
  say "ingress-nginx ${installed} is installed; grpclab pins ${VERSION}. Leaving it as it is."
  exit 0
fi
say "installing ingress-nginx ${VERSION}"
kube apply -f "${URL}"
kube -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=300s
# The admission webhook answers only once its certificate Job has run.
kube -n ingress-nginx wait --for=condition=Complete job --all --timeout=120s
say "installed"

#!/usr/bin/env bash
# The NGINX Ingress controller, from its pinned upstream manifest. The "cloud" flavour needs no
# node labels or host ports: on kind its LoadBalancer Service stays <pending>, and the
# notebooks reach it from inside the cluster through its cluster IP, as the load Job does.
# Source: https://kubernetes.github.io/ingress-nginx/deploy/
# shellcheck source=cluster/addons/common.sh
source "$(dirname "$0")/common.sh"

VERSION=v1.12.1
URL="https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-${VERSION}/deploy/static/provider/cloud/deploy.yaml"

stop_if_installed ingress-nginx \
  "$(deployment_tag ingress-nginx ingress-nginx-controller controller)" "${VERSION}"
say "installing ingress-nginx ${VERSION}"
kube apply -f "${URL}"
say "waiting for the controller pod to be Ready"
# The docs' own wait (https://kubernetes.github.io/ingress-nginx/deploy/#local-testing).
kube -n ingress-nginx rollout status deployment/ingress-nginx-controller --timeout=300s
kube -n ingress-nginx wait --for=condition=ready pod \
  --selector=app.kubernetes.io/component=controller --timeout=120s
# An Ingress is refused (x509) until the admission-patch Job has written the webhook's CA.
# Waiting for that, rather than for the Jobs, still works once a TTL has removed the Jobs.
say "waiting for the admission webhook's CA bundle"
for _ in $(seq 60); do
  bundle="$(kube get validatingwebhookconfiguration ingress-nginx-admission \
    -o jsonpath='{.webhooks[0].clientConfig.caBundle}' 2>/dev/null || true)"
  [ -n "${bundle}" ] && break
  sleep 2
done
[ -n "${bundle}" ] || fail "the admission webhook got no CA bundle in 120 s: kubectl -n ingress-nginx get jobs,pods"
say "installed"

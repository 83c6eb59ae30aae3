"""In-cluster gRPC targets: what `KubeCluster.target(via=...)` returns, and how each is found.

A target names a Service by cluster DNS, its ready pod IPs, or the controller (ingress-nginx,
Traefik, Envoy Gateway) whose routes reach it; KubeTarget carries the `via` into the load Job.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

from grpclab.load import PROXY_COUNTERS

CLUSTER_DOMAIN = "svc.cluster.local"
# Where the add-on installers (cluster/addons/) put the Services that front the pods.
INGRESS_NGINX_SERVICE = ("ingress-nginx", "ingress-nginx-controller")
INGRESS_NGINX_CLASS = "nginx"
TRAEFIK_SERVICE = ("traefik", "traefik")
# The Traefik chart's entry points and the ports its Service gives them.
TRAEFIK_ENTRYPOINT_PORTS = {"websecure": 443, "web": 80}
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"


def ready_addresses(slices: list[dict[str, Any]], service: Any, number: int) -> str:
    """`ipv4:ip:port,...`: the ready pods of one Service port, from EndpointSlices (as dicts)."""
    port_name = next(p.name or "" for p in service.spec.ports if int(p.port) == number)
    found = []
    for item in slices:
        labels = item["metadata"].get("labels") or {}
        if labels.get("kubernetes.io/service-name") != service.metadata.name:
            continue
        if item.get("addressType") != "IPv4":
            continue
        ports = [p["port"] for p in item.get("ports") or [] if (p.get("name") or "") == port_name]
        for endpoint in item.get("endpoints") or []:
            # A missing `ready` condition means ready (the EndpointSlice API's rule).
            if ports and (endpoint.get("conditions") or {}).get("ready") is not False:
                found += [f"{address}:{ports[0]}" for address in endpoint["addresses"]]
    if not found:
        meta = service.metadata
        raise ValueError(f"service {meta.namespace}/{meta.name} has no ready endpoints")
    return "ipv4:" + ",".join(sorted(set(found)))


def service_target(
    service: str, namespace: str, port: int, via: Literal["dns", "clusterip"] = "dns"
) -> str:
    """The in-cluster gRPC target: `dns:///name.ns.svc.cluster.local:port` or `name...:port`.

    Both resolve through cluster DNS; "dns" says so explicitly so that a headless
    Service's pod IPs reach the client's balancer, and "clusterip" is the plain name
    that resolves to the one cluster IP, as most applications write it.
    """
    host = f"{service}.{namespace}.{CLUSTER_DOMAIN}:{port}"
    if via == "dns":
        return f"dns:///{host}"
    if via == "clusterip":
        return host
    raise ValueError(f'via must be "dns" or "clusterip", not {via!r}')


VIAS = (
    "dns",
    "clusterip",
    "mesh",
    "ambient",
    "linkerd",
    "xds",
    "ingress",
    "traefik",
    "gateway",
    "addresses",
)


def check_via(via: str) -> str:
    """`via` itself when it is one of VIAS; ValueError naming the known ones otherwise."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {', '.join(VIAS)}, not {via!r}")
    return via


class KubeTarget(str):
    """A target string that remembers which `via` made it.

    The load Job's pod must be set up for the way it reaches the Service: an Istio sidecar
    for "mesh", Istio's gRPC agent (an xDS bootstrap) for "xds", a Linkerd proxy for
    "linkerd", and no proxy at all otherwise. A plain str target gets no proxy.
    """

    via: str

    def __new__(cls, value: str, via: str) -> KubeTarget:
        made = super().__new__(cls, value)
        made.via = check_via(via)
        return made


def client_pod_metadata(via: str) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that put the load Job's pod in, or out of, a mesh for `via`.

    Every pod opts in or out explicitly: a namespace labelled for injection or for ambient
    (notebooks 04, 05 and 15 label `production`) would otherwise give every client a proxy,
    and a "ClusterIP" run would silently be balanced per request by the client's proxy.
    """
    check_via(via)
    labels = {
        "sidecar.istio.io/inject": "true" if via in ("mesh", "xds") else "false",
        # Istio ambient: a pod label enrolls one pod in ztunnel, or keeps it out of an ambient
        # namespace (https://istio.io/latest/docs/reference/config/labels/).
        "istio.io/dataplane-mode": "ambient" if via == "ambient" else "none",
    }
    annotations = {"linkerd.io/inject": "enabled" if via == "linkerd" else "disabled"}
    if via in ("mesh", "xds"):
        # The client's first call must wait for the proxy (or the agent's bootstrap file),
        # and Istio keeps only a few Envoy stats unless told which others to keep.
        annotations["proxy.istio.io/config"] = json.dumps(
            {
                "holdApplicationUntilProxyStarts": True,
                "proxyStatsMatcher": {"inclusionRegexps": list(PROXY_COUNTERS.values())},
            }
        )
    if via == "xds":
        # Istio's proxyless gRPC: the agent writes an xDS bootstrap and sets
        # GRPC_XDS_BOOTSTRAP in the pod's containers; there is no Envoy in the path.
        annotations["inject.istio.io/templates"] = "grpc-agent"
    if via == "linkerd":
        # A proxy that exits with the Job's container, so the Job can complete.
        annotations["config.alpha.linkerd.io/proxy-enable-native-sidecar"] = "true"
    return labels, annotations


def _routes_to(backend_refs: Iterable[Mapping[str, Any]], service: str) -> bool:
    return any(ref.get("name") == service for ref in backend_refs)


def ingress_port(ingresses: Iterable[Mapping[str, Any]], service: str, namespace: str) -> int:
    """The ingress-nginx Service port that reaches `service`: 443 when its host has TLS."""
    for ingress in ingresses:
        spec = ingress.get("spec") or {}
        if spec.get("ingressClassName") != INGRESS_NGINX_CLASS:
            continue
        tls_hosts = {host for item in spec.get("tls") or [] for host in item.get("hosts") or []}
        for rule in spec.get("rules") or []:
            paths = (rule.get("http") or {}).get("paths") or []
            backends = [(p.get("backend") or {}).get("service") or {} for p in paths]
            if _routes_to(backends, service):
                # ssl-redirect sends a TLS host's plain-text calls away: use HTTPS for it.
                return 443 if rule.get("host") in tls_hosts else 80
    raise ValueError(
        f"no Ingress of class {INGRESS_NGINX_CLASS} in namespace {namespace} sends traffic to "
        f"Service {service} (apply one, e.g. cluster/manifests/ingress/ingress-nginx.yaml)"
    )


def traefik_port(routes: Iterable[Mapping[str, Any]], service: str, namespace: str) -> int:
    """The Traefik Service port of the entry point whose IngressRoute reaches `service`."""
    for route in routes:
        spec = route.get("spec") or {}
        if not any(_routes_to(r.get("services") or [], service) for r in spec.get("routes") or []):
            continue
        for entry_point in spec.get("entryPoints") or ["web"]:
            if entry_point in TRAEFIK_ENTRYPOINT_PORTS:
                return TRAEFIK_ENTRYPOINT_PORTS[entry_point]
        raise ValueError(
            f"IngressRoute {namespace}/{route['metadata']['name']}: spec.entryPoints "
            f"{spec.get('entryPoints')} names none that the Traefik chart serves "
            f"({', '.join(TRAEFIK_ENTRYPOINT_PORTS)})"
        )
    raise ValueError(
        f"no IngressRoute in namespace {namespace} sends traffic to Service {service} "
        "(apply one, e.g. cluster/manifests/ingress/traefik-ingressroute.yaml)"
    )


def gateway_listener(
    routes: Iterable[Mapping[str, Any]],
    gateways: Iterable[Mapping[str, Any]],
    service: str,
    namespace: str,
) -> tuple[str, int]:
    """(Gateway name, listener port) of the first route whose backendRefs reach `service`."""
    by_name = {g["metadata"]["name"]: g for g in gateways}
    for route in routes:
        spec = route.get("spec") or {}
        if not any(
            _routes_to(r.get("backendRefs") or [], service) for r in spec.get("rules") or []
        ):
            continue
        for parent in spec.get("parentRefs") or []:
            if parent.get("namespace", namespace) != namespace:
                continue  # grpclab's Gateways live in the attendee's namespace
            gateway = by_name.get(parent.get("name"))
            if gateway is None:
                continue
            listeners = gateway.get("spec", {}).get("listeners") or []
            wanted = parent.get("sectionName")
            for listener in listeners:
                if wanted in (None, listener.get("name")):
                    return gateway["metadata"]["name"], int(listener["port"])
        raise ValueError(
            f"{route['kind']} {namespace}/{route['metadata']['name']} reaches Service {service}, "
            f"but none of its parentRefs names a Gateway in namespace {namespace} with a "
            "matching listener"
        )
    raise ValueError(
        f"no GRPCRoute or HTTPRoute in namespace {namespace} sends traffic to Service {service} "
        "(apply one, e.g. cluster/manifests/ingress/grpcroute.yaml)"
    )


def service_of_target(target: str) -> tuple[str, str, int]:
    """(namespace, Service, port) of an in-cluster DNS target such as `target()` returns."""
    host = target.removeprefix("dns:///")
    name, _, port = host.rpartition(":")
    suffix = f".{CLUSTER_DOMAIN}"
    parts = name.removesuffix(suffix).split(".")
    if "://" in host or not name.endswith(suffix) or len(parts) != 2 or not port.isdigit():
        raise ValueError(
            f"{target!r} does not name a Service (service.namespace.{CLUSTER_DOMAIN}:port); "
            "only such targets can be forwarded to this machine"
        )
    return parts[1], parts[0], int(port)


def envoy_gateway_service(core: Any, gateway: str, namespace: str) -> str:
    """The Service Envoy Gateway made for a Gateway (its name has a generated suffix)."""
    selector = (
        f"gateway.envoyproxy.io/owning-gateway-name={gateway},"
        f"gateway.envoyproxy.io/owning-gateway-namespace={namespace}"
    )
    found = core.list_namespaced_service(ENVOY_GATEWAY_NAMESPACE, label_selector=selector).items
    if not found:
        raise ValueError(
            f"Envoy Gateway has no Service for Gateway {namespace}/{gateway} in "
            f"{ENVOY_GATEWAY_NAMESPACE}: is the envoy-gateway add-on installed, and is the "
            "Gateway Programmed (kubectl get gateway)?"
        )
    return found[0].metadata.name


def front_target(
    via: str,
    service: str,
    namespace: str,
    objects: Callable[[str, str], list[dict[str, Any]]],
    core: Any,
) -> KubeTarget:
    """The target of the controller's Service ("ingress", "traefik" or "gateway") whose
    routes reach `service`; `objects(apiVersion, kind)` lists the namespace's objects."""
    if via == "ingress":
        front_namespace, front_name = INGRESS_NGINX_SERVICE
        front_port = ingress_port(objects("networking.k8s.io/v1", "Ingress"), service, namespace)
    elif via == "traefik":
        front_namespace, front_name = TRAEFIK_SERVICE
        routes = objects("traefik.io/v1alpha1", "IngressRoute")
        front_port = traefik_port(routes, service, namespace)
    else:
        routes = [
            *objects("gateway.networking.k8s.io/v1", "GRPCRoute"),
            *objects("gateway.networking.k8s.io/v1", "HTTPRoute"),
        ]
        gateways = objects("gateway.networking.k8s.io/v1", "Gateway")
        gateway, front_port = gateway_listener(routes, gateways, service, namespace)
        front_namespace = ENVOY_GATEWAY_NAMESPACE
        front_name = envoy_gateway_service(core, gateway, namespace)
    return KubeTarget(service_target(front_name, front_namespace, front_port, "dns"), via)

"""Gateway API (Gateway, GRPCRoute, HTTPRoute) and Traefik's IngressRoute as Envoy config.

Envoy Gateway turns a Gateway into an Envoy listener and each attached route into Envoy
routes; grpclab does the same for the sandbox, cut down to the fields it supports, and
serves the result through its ADS server. Traefik is not Envoy: its IngressRoute is
translated the same way so that the sandbox can stand in for it, and every place that
shows it says it is an emulation. Pure functions: objects in, protobuf messages out.

Defaults follow the implementations: Envoy Gateway balances with least request (its
default when no BackendTrafficPolicy says otherwise), Traefik with weighted round robin.
A GRPCRoute always speaks HTTP/2 to its backends; an HTTPRoute does so only for Service
ports with `appProtocol: kubernetes.io/h2c` (Gateway API's backend protocol rule), and a
Traefik service only with `scheme: h2c`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import any_pb2, wrappers_pb2
from google.protobuf.message import Message

from grpclab.xds.ambient import AmbientConfigError, check_waypoint, is_waypoint
from grpclab.xds.istio import destination_rule_cluster, http_connection_manager, service_host
from grpclab.xds.kube_proxy import load_assignment, socket_address
from grpclab.xds.server import CLUSTER, ENDPOINT, LISTENER, ROUTE
from grpclab.xds.translation import (
    TranslationError,
    as_duration,
    go_duration_seconds,
    object_label,
)

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_GROUP}/v1"
ENVOY_GATEWAY_API_VERSION = "gateway.envoyproxy.io/v1alpha1"
# BackendTrafficPolicy's loadBalancer.type -> Envoy; LeastRequest is Envoy Gateway's default.
LB_TYPES = {
    "RoundRobin": cluster_pb2.Cluster.ROUND_ROBIN,
    "Random": cluster_pb2.Cluster.RANDOM,
    "LeastRequest": cluster_pb2.Cluster.LEAST_REQUEST,
}
DEFAULT_LB_TYPE = "LeastRequest"
TRAEFIK_API_VERSION = "traefik.io/v1alpha1"
H2C_APP_PROTOCOL = "kubernetes.io/h2c"
HTTP2_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
# The Traefik Helm chart's entry points, as the Service exposes them.
TRAEFIK_ENTRY_POINTS = {"web": 80, "websecure": 443}
_TRAEFIK_MATCHER = re.compile(r"\s*(Host|PathPrefix|Path)\(`([^`]*)`\)\s*")


class GatewayConfigError(TranslationError):
    """A Gateway API or Traefik object grpclab cannot translate; names the object and field."""


@dataclass(frozen=True)
class Backend:
    """One port of a Service and its ready endpoints (pod IP, container port)."""

    namespace: str
    service: str
    port: int
    app_protocol: str | None
    endpoints: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


# (namespace, Service name, port number or name) -> the Backend, None if there is none.
Resolve = Callable[[str, str, "int | str"], "Backend | None"]
# (namespace, Secret name) -> (certificate PEM, key PEM), None if there is no such Secret.
SecretLookup = Callable[[str, str], "tuple[bytes, bytes] | None"]


@dataclass(frozen=True)
class Attachment:
    """A route that a listener serves: where clients connect, and the Services behind it."""

    route: str  # "GRPCRoute production/grpc-server-route"
    parent: str  # "Gateway production/grpc-gateway, listener grpc"
    address: str  # ip:port the listener binds
    hostnames: tuple[str, ...]
    services: tuple[tuple[str, str], ...]  # (namespace, name)


@dataclass
class _Chain:
    name: str
    server_names: tuple[str, ...]
    tls: tuple[bytes, bytes] | None
    route_name: str
    virtual_hosts: dict[tuple[str, ...], list[tuple[tuple, route_components_pb2.Route]]] = field(
        default_factory=dict
    )


@dataclass
class _Snapshot:
    listeners: dict[tuple[str, int], list[_Chain]] = field(default_factory=dict)
    clusters: dict[str, cluster_pb2.Cluster] = field(default_factory=dict)
    assignments: dict[str, Message] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)

    def chain(
        self,
        ip: str,
        port: int,
        name: str,
        server_names: tuple[str, ...],
        tls: tuple[bytes, bytes] | None,
    ) -> _Chain:
        """The filter chain for these SNI names on ip:port, made on first use. Plain HTTP
        has no SNI: one chain per port, with one virtual host per name."""
        server_names = server_names if tls is not None else ()
        chains = self.listeners.setdefault((ip, port), [])
        for chain in chains:
            if (chain.server_names, chain.tls) == (server_names, tls):
                return chain
        if tls is not None and any(c.tls is None for c in chains):
            raise ValueError(f"{ip}:{port} would serve both HTTP and HTTPS")
        chain = _Chain(f"{name}/{len(chains)}", server_names, tls, f"{name}/{len(chains)}")
        chains.append(chain)
        return chain

    def resources(self) -> dict[str, dict[str, Message]]:
        listeners, routes = {}, {}
        for (ip, port), chains in sorted(self.listeners.items()):
            name = f"{ip}:{port}"
            listeners[name] = _listener(name, ip, port, chains)
            for chain in chains:
                routes[chain.route_name] = _route_configuration(chain)
        return {
            CLUSTER: dict(self.clusters),
            ENDPOINT: dict(self.assignments),
            LISTENER: listeners,
            ROUTE: routes,
        }


# --- names and small values ---------------------------------------------------------------------


def _namespace(obj: Mapping[str, Any]) -> str:
    return obj["metadata"].get("namespace") or "default"


def parse_duration(text: Any, label: str, where: str) -> float:
    """A Go duration ("5s", "300ms", "1m30s") in seconds; a bare number means seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text >= 0:
        return float(text)
    seconds = go_duration_seconds(text)
    if seconds is None:
        raise GatewayConfigError(label, where, f"{text!r} is not a duration like 5s or 300ms")
    return seconds


# --- Envoy building blocks ----------------------------------------------------------------------


def upstream_cluster(
    name: str,
    backend: Backend,
    http2: bool,
    lb_policy: int = cluster_pb2.Cluster.LEAST_REQUEST,
    connect_timeout_s: float | None = None,
    idle_timeout_s: float | None = None,
) -> cluster_pb2.Cluster:
    """An EDS cluster for one Service port: HTTP/2 (h2c) to the pods, or HTTP/1.1."""
    cluster = destination_rule_cluster(
        service_host(backend.service, backend.namespace), backend.port
    )
    cluster.name = name
    cluster.eds_cluster_config.service_name = name
    cluster.lb_policy = lb_policy
    if connect_timeout_s is not None:
        cluster.connect_timeout.CopyFrom(as_duration(connect_timeout_s))
    if not http2:
        # Without explicit protocol options Envoy speaks HTTP/1.1 upstream.
        del cluster.typed_extension_protocol_options[HTTP2_OPTIONS]
    elif idle_timeout_s is not None:
        from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

        options = http_protocol_options_pb2.HttpProtocolOptions()
        cluster.typed_extension_protocol_options[HTTP2_OPTIONS].Unpack(options)
        options.common_http_protocol_options.idle_timeout.CopyFrom(as_duration(idle_timeout_s))
        cluster.typed_extension_protocol_options[HTTP2_OPTIONS].Pack(options)
    return cluster


def tls_transport_socket(cert_pem: bytes, key_pem: bytes) -> base_pb2.TransportSocket:
    """Terminate TLS with this certificate; offer h2 first, as gRPC clients ask for it."""
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_certificates=[
                common_pb2.TlsCertificate(
                    certificate_chain=base_pb2.DataSource(inline_bytes=cert_pem),
                    private_key=base_pb2.DataSource(inline_bytes=key_pem),
                )
            ],
            alpn_protocols=["h2", "http/1.1"],
        )
    )
    packed = any_pb2.Any()
    packed.Pack(context)
    return base_pb2.TransportSocket(name="envoy.transport_sockets.tls", typed_config=packed)


def _listener(name: str, ip: str, port: int, chains: Sequence[_Chain]) -> listener_pb2.Listener:
    filter_chains = []
    for chain in chains:
        manager = any_pb2.Any()
        manager.Pack(http_connection_manager(chain.name, route_name=chain.route_name))
        filter_chain = listener_components_pb2.FilterChain(
            name=chain.name,
            filters=[
                listener_components_pb2.Filter(
                    name="envoy.filters.network.http_connection_manager", typed_config=manager
                )
            ],
        )
        if chain.server_names:
            filter_chain.filter_chain_match.server_names.extend(chain.server_names)
        if chain.tls is not None:
            filter_chain.transport_socket.CopyFrom(tls_transport_socket(*chain.tls))
        filter_chains.append(filter_chain)
    listener = listener_pb2.Listener(
        name=name, address=socket_address(ip, port), filter_chains=filter_chains
    )
    if any(chain.tls is not None for chain in chains):
        # SNI is read from the ClientHello before a filter chain is chosen.
        listener.listener_filters.append(
            listener_components_pb2.ListenerFilter(
                name="envoy.filters.listener.tls_inspector", typed_config=_tls_inspector()
            )
        )
    return listener


def _tls_inspector() -> any_pb2.Any:
    from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2

    packed = any_pb2.Any()
    packed.Pack(tls_inspector_pb2.TlsInspector())
    return packed


def _route_configuration(chain: _Chain) -> route_pb2.RouteConfiguration:
    hosts = []
    for domains, routes in sorted(chain.virtual_hosts.items()):
        ordered = [route for _, route in sorted(routes, key=lambda item: item[0])]
        hosts.append(
            route_components_pb2.VirtualHost(
                name=",".join(domains), domains=_domains(domains), routes=ordered
            )
        )
    return route_pb2.RouteConfiguration(
        name=chain.route_name,
        virtual_hosts=hosts,
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def _domains(hostnames: Sequence[str]) -> list[str]:
    if not hostnames or "*" in hostnames:
        return ["*"]
    # gRPC clients send the authority without a port; others may add one.
    return [d for host in hostnames for d in (host, f"{host}:*")]


def _action(clusters: Sequence[tuple[str, int]]) -> route_components_pb2.RouteAction:
    if len(clusters) == 1:
        return route_components_pb2.RouteAction(cluster=clusters[0][0])
    weighted = route_components_pb2.WeightedCluster(
        clusters=[
            route_components_pb2.WeightedCluster.ClusterWeight(
                name=name, weight=wrappers_pb2.UInt32Value(value=weight)
            )
            for name, weight in clusters
        ]
    )
    return route_components_pb2.RouteAction(weighted_clusters=weighted)


def _no_backend_route(name: str, match: route_components_pb2.RouteMatch):
    # Gateway API: a rule whose backends are all invalid answers 500 (gRPC: INTERNAL).
    return route_components_pb2.Route(
        name=name,
        match=match,
        direct_response=route_components_pb2.DirectResponseAction(status=500),
    )


def _header_matchers(
    headers: Iterable[Mapping[str, Any]],
) -> list[route_components_pb2.HeaderMatcher]:
    return [
        route_components_pb2.HeaderMatcher(
            name=h["name"].lower(), string_match=string_pb2.StringMatcher(exact=h["value"])
        )
        for h in headers
    ]


# --- Gateway API: checks ------------------------------------------------------------------------


def check_gateway(gateway: Mapping[str, Any]) -> None:
    """Raise GatewayConfigError for the first value the sandbox cannot serve."""
    label = object_label(gateway)
    if is_waypoint(gateway):  # Istio's waypoint: ambient mode's rules, not a gateway's
        try:
            check_waypoint(gateway)
        except AmbientConfigError as error:
            raise GatewayConfigError(error.object, error.field, error.reason) from None
        return
    ports: dict[int, str] = {}
    for index, listener in enumerate((gateway.get("spec") or {}).get("listeners") or []):
        where = f"spec.listeners[{index}]"
        protocol = listener.get("protocol")
        if protocol not in ("HTTP", "HTTPS"):
            raise GatewayConfigError(
                label,
                f"{where}.protocol",
                f"the sandbox serves HTTP and HTTPS listeners, not {protocol}",
            )
        port = listener.get("port")
        if ports.setdefault(port, protocol) != protocol:
            raise GatewayConfigError(
                label, f"{where}.port", f"port {port} is used with both HTTP and HTTPS"
            )
        tls = listener.get("tls") or {}
        if protocol == "HTTP" and tls:
            raise GatewayConfigError(label, f"{where}.tls", "an HTTP listener takes no tls")
        if protocol == "HTTPS":
            if tls.get("mode", "Terminate") != "Terminate":
                raise GatewayConfigError(
                    label,
                    f"{where}.tls.mode",
                    "the sandbox terminates TLS (mode Terminate); Passthrough needs a TLSRoute",
                )
            refs = tls.get("certificateRefs") or []
            if not refs:
                raise GatewayConfigError(
                    label, f"{where}.tls.certificateRefs", "an HTTPS listener needs a certificate"
                )
            for r_index, ref in enumerate(refs):
                _check_core_ref(
                    ref,
                    "Secret",
                    label,
                    f"{where}.tls.certificateRefs[{r_index}]",
                    "the sandbox reads certificates from Secrets (group core, kind Secret)",
                )


def check_route(route: Mapping[str, Any]) -> None:
    """Raise GatewayConfigError for the first GRPCRoute/HTTPRoute value the sandbox refuses."""
    label = object_label(route)
    spec = route.get("spec") or {}
    for index, ref in enumerate(spec.get("parentRefs") or []):
        kind = ref.get("kind", "Gateway")
        if kind not in ("Gateway", "Service"):
            raise GatewayConfigError(
                label,
                f"spec.parentRefs[{index}].kind",
                f"a route attaches to a Gateway (ingress) or a Service (mesh), not a {kind}",
            )
    for r_index, rule in enumerate(spec.get("rules") or []):
        where = f"spec.rules[{r_index}]"
        for b_index, ref in enumerate(rule.get("backendRefs") or []):
            _check_core_ref(
                ref,
                "Service",
                label,
                f"{where}.backendRefs[{b_index}]",
                "the sandbox sends traffic to Services only",
            )
            if "port" not in ref:
                raise GatewayConfigError(
                    label,
                    f"{where}.backendRefs[{b_index}].port",
                    "required when the backend is a Service",
                )
        for m_index, match in enumerate(rule.get("matches") or []):
            method = match.get("method")
            if method is not None:
                _check_method_match(method, label, f"{where}.matches[{m_index}].method")


def _check_core_ref(ref: Mapping[str, Any], kind: str, label: str, where: str, why: str) -> None:
    """A reference to an object of the core group: its group empty, its kind `kind`."""
    if (ref.get("group") or "", ref.get("kind", kind)) != ("", kind):
        raise GatewayConfigError(label, f"{where}.kind", why)


def _check_method_match(method: Mapping[str, Any], label: str, where: str) -> None:
    if not method.get("service") and not method.get("method"):
        raise GatewayConfigError(label, where, "name a service, a method, or both")
    if method.get("type", "Exact") == "RegularExpression":
        for key in ("service", "method"):
            try:
                re.compile(method.get(key) or "")
            except re.error as error:
                raise GatewayConfigError(
                    label, f"{where}.{key}", f"not a regular expression: {error}"
                ) from None


# --- Gateway API: translation -------------------------------------------------------------------


def _hostnames(listener_host: str | None, route_hosts: Sequence[str]) -> tuple[str, ...] | None:
    """The hostnames a route gets on a listener; None when they do not intersect."""
    if not route_hosts:
        return (listener_host,) if listener_host else ()
    if not listener_host:
        return tuple(route_hosts)
    matched = tuple(h for h in route_hosts if _host_matches(h, listener_host))
    return matched or None


def _host_matches(route_host: str, listener_host: str) -> bool:
    if route_host == listener_host:
        return True
    for wildcard, name in ((listener_host, route_host), (route_host, listener_host)):
        if wildcard.startswith("*.") and name.endswith(wildcard[1:]):
            return True
    return False


def grpc_route_match(
    match: Mapping[str, Any] | None,
) -> tuple[tuple, route_components_pb2.RouteMatch]:
    """An Envoy match for one GRPCRoute match, and its precedence key (lower sorts first)."""
    method = (match or {}).get("method") or {}
    service, name = method.get("service"), method.get("method")
    out = route_components_pb2.RouteMatch(
        grpc=route_components_pb2.RouteMatch.GrpcRouteMatchOptions()
    )
    if method.get("type", "Exact") == "RegularExpression":
        regex = f"/{service or '[^/]+'}/{name or '[^/]+'}"
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=regex))
    elif service and name:
        out.path = f"/{service}/{name}"
    elif service:
        out.prefix = f"/{service}/"
    elif name:
        out.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex=f"/[^/]+/{re.escape(name)}"))
    else:
        out.prefix = "/"
    headers = (match or {}).get("headers") or []
    out.headers.extend(_header_matchers(headers))
    # Gateway API precedence: longer service, then longer method, then more header matches.
    return (-len(service or ""), -len(name or ""), -len(headers)), out


def _http_match(match: Mapping[str, Any] | None) -> tuple[tuple, route_components_pb2.RouteMatch]:
    path = (match or {}).get("path") or {"type": "PathPrefix", "value": "/"}
    out = route_components_pb2.RouteMatch()
    if path.get("type") == "Exact":
        out.path = path["value"]
    else:
        out.path_separated_prefix = path["value"].rstrip("/")
        if not out.path_separated_prefix:
            out.ClearField("path_separated_prefix")
            out.prefix = "/"
    headers = (match or {}).get("headers") or []
    out.headers.extend(_header_matchers(headers))
    exact = 0 if path.get("type") == "Exact" else 1
    return (exact, -len(path["value"]), -len(headers)), out


def gateway_resources(
    gateways: Sequence[Mapping[str, Any]],
    routes: Sequence[Mapping[str, Any]],
    ip_of: Mapping[tuple[str, str], str],
    port_of: Callable[[str, int], int],
    resolve: Resolve,
    secret: SecretLookup,
    policies: Sequence[Mapping[str, Any]] = (),
) -> tuple[dict[str, dict[str, Message]], list[Attachment]]:
    """Envoy config that serves `gateways` with the GRPCRoutes and HTTPRoutes attached to them.

    policies are Envoy Gateway BackendTrafficPolicies; their loadBalancer.type applies to
    the routes they target, or to every route of the Gateways they target.

    ip_of gives each Gateway (namespace, name) its address; port_of(ip, port) maps a
    listener port to the one the sandbox binds (443 stays 443 where it may, else 8443).
    """
    snapshot = _Snapshot()
    listeners: dict[tuple[str, str, str], tuple[Mapping[str, Any], _Chain, str]] = {}
    for gateway in sorted(gateways, key=lambda g: (_namespace(g), g["metadata"]["name"])):
        key = (_namespace(gateway), gateway["metadata"]["name"])
        ip = ip_of[key]
        for listener in gateway["spec"].get("listeners") or []:
            port = port_of(ip, listener["port"])
            hostname = listener.get("hostname")
            tls = None
            if listener["protocol"] == "HTTPS":
                ref = listener["tls"]["certificateRefs"][0]
                tls = secret(ref.get("namespace") or key[0], ref["name"])
                if tls is None:
                    continue  # Envoy Gateway leaves the listener unprogrammed (ResolvedRefs=False)
            chain = snapshot.chain(
                ip,
                port,
                f"{key[0]}/{key[1]}/{listener['name']}",
                (hostname,) if hostname else (),
                tls,
            )
            listeners[(*key, listener["name"])] = (listener, chain, f"{ip}:{port}")
    for route in sorted(routes, key=lambda r: (r["kind"], _namespace(r), r["metadata"]["name"])):
        _attach(route, listeners, snapshot, resolve, policies)
    return snapshot.resources(), snapshot.attachments


def lb_type_for(
    route: Mapping[str, Any], gateway: tuple[str, str], policies: Sequence[Mapping[str, Any]]
) -> str:
    """The load balancer a route's backends get: a policy on the route wins over one on its
    Gateway (Envoy Gateway's rule), else least request."""
    namespace = _namespace(route)
    on_gateway = None
    for policy in sorted(policies, key=lambda p: (_namespace(p), p["metadata"]["name"])):
        if _namespace(policy) != namespace:
            continue  # policies attach within their own namespace
        chosen = ((policy.get("spec") or {}).get("loadBalancer") or {}).get("type")
        for ref in (policy.get("spec") or {}).get("targetRefs") or []:
            if (ref.get("kind"), ref.get("name")) == (route["kind"], route["metadata"]["name"]):
                return chosen or DEFAULT_LB_TYPE
            if (ref.get("kind"), ref.get("name")) == ("Gateway", gateway[1]) and gateway[0] == (
                namespace
            ):
                on_gateway = on_gateway or chosen
    return on_gateway or DEFAULT_LB_TYPE


def check_backend_traffic_policy(policy: Mapping[str, Any]) -> None:
    """Raise GatewayConfigError for the first BackendTrafficPolicy value the sandbox refuses."""
    label = object_label(policy)
    spec = policy.get("spec") or {}
    if not spec.get("targetRefs"):
        raise GatewayConfigError(label, "spec.targetRefs", "name the Gateway or route to shape")
    for index, ref in enumerate(spec["targetRefs"]):
        if ref.get("kind") not in ("Gateway", "GRPCRoute", "HTTPRoute"):
            raise GatewayConfigError(
                label,
                f"spec.targetRefs[{index}].kind",
                "the sandbox applies policies to a Gateway, GRPCRoute or HTTPRoute",
            )


def _attach(route, listeners, snapshot: _Snapshot, resolve: Resolve, policies=()) -> None:
    namespace = _namespace(route)
    label = object_label(route)
    spec = route.get("spec") or {}
    for ref in spec.get("parentRefs") or []:
        if ref.get("kind", "Gateway") != "Gateway":
            continue  # a mesh route (parent: a Service) is the mesh's business, not a gateway's
        parent_ns = ref.get("namespace") or namespace
        for (gw_ns, gw_name, listener_name), (listener, chain, address) in listeners.items():
            if (gw_ns, gw_name) != (parent_ns, ref["name"]):
                continue
            if ref.get("sectionName") not in (None, listener_name):
                continue
            if ref.get("port") not in (None, listener["port"]):
                continue
            allowed = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get(
                "from", "Same"
            )
            if allowed == "Same" and gw_ns != namespace:
                continue
            hostnames = _hostnames(listener.get("hostname"), spec.get("hostnames") or [])
            if hostnames is None:
                continue
            lb_type = lb_type_for(route, (gw_ns, gw_name), policies)
            services = _add_rules(route, chain, hostnames, snapshot, resolve, LB_TYPES[lb_type])
            snapshot.attachments.append(
                Attachment(
                    route=label,
                    parent=f"Gateway {gw_ns}/{gw_name}, listener {listener_name}",
                    address=address,
                    hostnames=hostnames,
                    services=services,
                )
            )


def _add_rules(route, chain: _Chain, hostnames, snapshot: _Snapshot, resolve: Resolve, lb: int):
    namespace, name = _namespace(route), route["metadata"]["name"]
    grpc = route["kind"] == "GRPCRoute"
    routes = chain.virtual_hosts.setdefault(tuple(sorted(hostnames)), [])
    services: list[tuple[str, str]] = []
    for r_index, rule in enumerate(route["spec"].get("rules") or []):
        clusters = []
        for b_index, ref in enumerate(rule.get("backendRefs") or []):
            ref_ns = ref.get("namespace") or namespace
            services.append((ref_ns, ref["name"]))
            backend = resolve(ref_ns, ref["name"], ref["port"])
            if backend is None:
                continue
            http2 = grpc or backend.app_protocol == H2C_APP_PROTOCOL
            # One cluster per rule and backend, named as Envoy Gateway names them.
            cluster_name = f"{route['kind'].lower()}/{namespace}/{name}/rule/{r_index}/{b_index}"
            snapshot.clusters[cluster_name] = upstream_cluster(cluster_name, backend, http2, lb)
            snapshot.assignments[cluster_name] = load_assignment(cluster_name, backend.endpoints)
            clusters.append((cluster_name, ref.get("weight", 1)))
        clusters = [(c, w) for c, w in clusters if w > 0]
        for m_index, match in enumerate(rule.get("matches") or [None]):
            precedence, envoy_match = grpc_route_match(match) if grpc else _http_match(match)
            route_name = (
                f"{route['kind'].lower()}/{namespace}/{name}/rule/{r_index}/match/{m_index}"
            )
            key = (0 if grpc else 1, *precedence, namespace, name, r_index, m_index)
            if clusters:
                envoy_route = route_components_pb2.Route(
                    name=route_name, match=envoy_match, route=_action(clusters)
                )
            else:
                envoy_route = _no_backend_route(route_name, envoy_match)
            routes.append((key, envoy_route))
    return tuple(dict.fromkeys(services))


# --- Traefik IngressRoute (emulation) -----------------------------------------------------------


def parse_traefik_match(text: Any, label: str, where: str) -> dict[str, str]:
    """`Host(`a`) && PathPrefix(`/b`)` as {"Host": "a", "PathPrefix": "/b"}; others refused."""
    if not isinstance(text, str) or not text.strip():
        raise GatewayConfigError(label, where, "a rule like Host(`grpc.example.com`)")
    found: dict[str, str] = {}
    for part in text.split("&&"):
        matched = _TRAEFIK_MATCHER.fullmatch(part)
        if matched is None:
            raise GatewayConfigError(
                label,
                where,
                f"{part.strip()!r}: the sandbox understands Host(`...`), PathPrefix(`...`) and "
                "Path(`...`) joined by &&",
            )
        matcher, value = matched.groups()
        if matcher in found:
            raise GatewayConfigError(label, where, f"{matcher} appears twice")
        found[matcher] = value
    if "PathPrefix" in found and "Path" in found:
        raise GatewayConfigError(label, where, "use Path or PathPrefix, not both")
    return found


def check_ingress_route(route: Mapping[str, Any]) -> None:
    """Raise GatewayConfigError for the first IngressRoute value the sandbox refuses."""
    label = object_label(route)
    spec = route.get("spec") or {}
    for index, entry in enumerate(spec.get("entryPoints") or []):
        if entry not in TRAEFIK_ENTRY_POINTS:
            raise GatewayConfigError(
                label,
                f"spec.entryPoints[{index}]",
                f"{entry!r} is not an entry point of the Traefik chart "
                f"({', '.join(TRAEFIK_ENTRY_POINTS)})",
            )
    for r_index, item in enumerate(spec.get("routes") or []):
        where = f"spec.routes[{r_index}]"
        parse_traefik_match(item.get("match"), label, f"{where}.match")
        for s_index, service in enumerate(item.get("services") or []):
            if service.get("scheme", "http") == "https":
                raise GatewayConfigError(
                    label,
                    f"{where}.services[{s_index}].scheme",
                    "the sandbox's pods serve plaintext: use h2c (or http)",
                )


def check_servers_transport(transport: Mapping[str, Any]) -> None:
    """Raise GatewayConfigError for the first ServersTransport value the sandbox refuses."""
    label = object_label(transport)
    timeouts = (transport.get("spec") or {}).get("forwardingTimeouts") or {}
    for key in ("dialTimeout", "idleConnTimeout"):
        if key in timeouts:
            parse_duration(timeouts[key], label, f"spec.forwardingTimeouts.{key}")


def traefik_resources(
    ingress_routes: Sequence[Mapping[str, Any]],
    transports: Sequence[Mapping[str, Any]],
    ip: str,
    port_of: Callable[[str, int], int],
    resolve: Resolve,
    secret: SecretLookup,
) -> tuple[dict[str, dict[str, Message]], list[Attachment]]:
    """Envoy config that acts as Traefik would for these IngressRoutes (an emulation)."""
    snapshot = _Snapshot()
    by_name = {(_namespace(t), t["metadata"]["name"]): t for t in transports}
    ordered = sorted(ingress_routes, key=lambda r: (_namespace(r), r["metadata"]["name"]))
    for route in ordered:
        namespace, name = _namespace(route), route["metadata"]["name"]
        label = object_label(route)
        spec = route.get("spec") or {}
        tls = None
        if spec.get("tls"):
            tls = secret(namespace, spec["tls"]["secretName"])
            if tls is None:
                continue  # Traefik would serve its default certificate; the sandbox serves none
        for entry in spec.get("entryPoints") or ["websecure" if tls else "web"]:
            port = port_of(ip, TRAEFIK_ENTRY_POINTS[entry])
            for r_index, item in enumerate(spec.get("routes") or []):
                rule = parse_traefik_match(item["match"], label, f"spec.routes[{r_index}].match")
                hostnames = (rule["Host"],) if "Host" in rule else ()
                chain = snapshot.chain(ip, port, f"traefik/{entry}", hostnames, tls)
                clusters, services = [], []
                for service in item.get("services") or []:
                    services.append((namespace, service["name"]))
                    backend = resolve(namespace, service["name"], service["port"])
                    if backend is None:
                        continue
                    http2 = service.get("scheme", "http") == "h2c"
                    transport = by_name.get((namespace, service.get("serversTransport", "")))
                    timeouts = ((transport or {}).get("spec") or {}).get("forwardingTimeouts") or {}
                    cluster_name = f"traefik/{'h2c' if http2 else 'http'}/{backend.name}"
                    snapshot.clusters[cluster_name] = upstream_cluster(
                        cluster_name,
                        backend,
                        http2,
                        # Traefik's default strategy: weighted round robin, per request.
                        cluster_pb2.Cluster.ROUND_ROBIN,
                        connect_timeout_s=_optional_duration(timeouts, "dialTimeout", label),
                        idle_timeout_s=_optional_duration(timeouts, "idleConnTimeout", label),
                    )
                    snapshot.assignments[cluster_name] = load_assignment(
                        cluster_name, backend.endpoints
                    )
                    clusters.append((cluster_name, service.get("weight", 1)))
                match = route_components_pb2.RouteMatch(prefix="/")
                if "Path" in rule:
                    match = route_components_pb2.RouteMatch(path=rule["Path"])
                elif "PathPrefix" in rule:
                    match = route_components_pb2.RouteMatch(prefix=rule["PathPrefix"])
                route_name = f"ingressroute/{namespace}/{name}/{r_index}"
                # Traefik ranks rules by length by default: the longer rule is more specific.
                key = (-len(item["match"]), namespace, name, r_index)
                envoy_route = (
                    route_components_pb2.Route(
                        name=route_name, match=match, route=_action(clusters)
                    )
                    if clusters
                    else _no_backend_route(route_name, match)
                )
                chain.virtual_hosts.setdefault(hostnames, []).append((key, envoy_route))
                snapshot.attachments.append(
                    Attachment(
                        route=label,
                        parent=f"Traefik entry point {entry} (emulated by Envoy)",
                        address=f"{ip}:{port}",
                        hostnames=hostnames,
                        services=tuple(dict.fromkeys(services)),
                    )
                )
    return snapshot.resources(), snapshot.attachments


def _optional_duration(values: Mapping[str, Any], key: str, label: str) -> float | None:
    if key not in values:
        return None
    return parse_duration(values[key], label, f"spec.forwardingTimeouts.{key}")

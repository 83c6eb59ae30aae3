"""Istio's DestinationRule and VirtualService as the Envoy config istiod would send.

What istiod does for a sidecar's outbound traffic, cut down to the fields grpclab
supports: a DestinationRule becomes an EDS cluster (load balancer, outlier
detection, connection pool), a VirtualService becomes the routes of the port it
matches (retries, timeout). Istio's own defaults apply where a field is unset:
LEAST_REQUEST when no rule names a load balancer, and two retries on
connect-failure, refused-stream, unavailable and cancelled when no VirtualService
sets retries. Pure functions: objects in, protobuf messages out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from grpclab.xds.kube_proxy import ads_source, socket_address
from grpclab.xds.server import CLUSTER, ENDPOINT, LISTENER, ROUTE
from grpclab.xds.translation import (
    TranslationError,
    as_duration,
    go_duration_seconds,
    object_label,
)

CLUSTER_DOMAIN = "svc.cluster.local"
NETWORKING_GROUP = "networking.istio.io"
API_VERSIONS = (f"{NETWORKING_GROUP}/v1", f"{NETWORKING_GROUP}/v1beta1")
LB_POLICIES = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
}
# istiod's choice when no DestinationRule names a load balancer.
DEFAULT_LB = "LEAST_REQUEST"
# MeshConfig.connectTimeout's default.
DEFAULT_CONNECT_TIMEOUT_S = 10
# What istiod sets when nothing else does; Envoy's own default of 3 parallel retries
# turns into client-facing errors while several pods are replaced at once.
UNLIMITED = 2**32 - 1
# Retry conditions a VirtualService's retryOn may name: Envoy's HTTP ones and its gRPC
# status ones (https://istio.io/latest/docs/reference/config/networking/virtual-service/).
HTTP_RETRY_ON = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
)
GRPC_RETRY_ON = ("cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable")
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
DEFAULT_RETRIES = 2
HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5


class IstioConfigError(TranslationError):
    """An Istio object grpclab cannot translate; names the object and the field."""


@dataclass(frozen=True)
class Endpoint:
    """One ready pod behind a Service port, with the zone it runs in."""

    ip: str
    port: int
    region: str
    zone: str

    @property
    def locality(self) -> tuple[str, str]:
        return (self.region, self.zone)


@dataclass(frozen=True)
class ServicePort:
    """One port of a Service as the mesh sees it: its host name and ready endpoints."""

    namespace: str
    service: str
    port: int
    endpoints: tuple[Endpoint, ...]

    @property
    def host(self) -> str:
        return service_host(self.service, self.namespace)

    @property
    def cluster_name(self) -> str:
        return cluster_name(self.host, self.port)

    @property
    def route_name(self) -> str:
        return f"{self.host}:{self.port}"


# --- names --------------------------------------------------------------------------------------


def service_host(service: str, namespace: str) -> str:
    return f"{service}.{namespace}.{CLUSTER_DOMAIN}"


def resolve_host(host: str, namespace: str) -> str:
    """A host as istiod reads it: a short name is relative to the object's namespace."""
    parts = host.split(".")
    if len(parts) == 1:
        return service_host(host, namespace)
    if len(parts) == 2:
        return service_host(parts[0], parts[1])
    return host


def cluster_name(host: str, port: int) -> str:
    """istiod's name for an outbound cluster, as `istioctl proxy-config clusters` shows it."""
    return f"outbound|{port}||{host}"


def rule_for_host(
    objects: Iterable[Mapping[str, Any]], host: str, field: str = "host"
) -> Mapping[str, Any] | None:
    """The first object (by namespace, name) whose spec.host (or spec.hosts) names `host`."""
    ordered = sorted(objects, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))
    for obj in ordered:
        spec = obj.get("spec") or {}
        names = spec.get(field) if field == "hosts" else [spec.get(field)]
        namespace = obj["metadata"]["namespace"]
        if any(isinstance(n, str) and resolve_host(n, namespace) == host for n in names or []):
            return obj
    return None


# --- values -------------------------------------------------------------------------------------


def parse_duration(text: Any, label: str, field: str) -> duration_pb2.Duration:
    """A Go-style duration ("2s", "100ms", "1m30s") as Istio's API accepts it; >= 1 ms."""
    seconds = go_duration_seconds(text)
    if seconds is None:
        raise IstioConfigError(
            label, field, f"{text!r} is not a duration; write it like 2s, 500ms or 1m30s"
        )
    if seconds < 0.001:
        raise IstioConfigError(label, field, f"{text!r} is shorter than Istio's minimum of 1ms")
    return as_duration(seconds)


def _count(value: Any, label: str, field: str, low: int = 0, high: int = UNLIMITED) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        upper = "" if high == UNLIMITED else f" and <= {high}"
        raise IstioConfigError(label, field, f"{value!r} must be a whole number >= {low}{upper}")
    return value


def parse_retry_on(text: Any, label: str, field: str) -> tuple[str, list[int]]:
    """retryOn as istiod splits it: condition names for Envoy, numbers as HTTP status codes."""
    if not isinstance(text, str):
        raise IstioConfigError(label, field, f"{text!r} must be a comma-separated string")
    names, codes = [], []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit() and 100 <= int(part) <= 599:
            codes.append(int(part))
        elif part in HTTP_RETRY_ON or part in GRPC_RETRY_ON:
            names.append(part)
        else:
            known = ", ".join(GRPC_RETRY_ON + HTTP_RETRY_ON)
            raise IstioConfigError(
                label, field, f"{part!r} is not a retry condition (known: {known}, or a status)"
            )
    if codes and "retriable-status-codes" not in names:
        names.append("retriable-status-codes")
    return ",".join(names), codes


# --- DestinationRule -> Cluster -----------------------------------------------------------------


def check_destination_rule(rule: Mapping[str, Any]) -> None:
    """Raise IstioConfigError for the first value grpclab cannot translate."""
    destination_rule_cluster("check.invalid", 1, rule)
    distribute_weights(rule)


def destination_rule_cluster(
    host: str, port: int, rule: Mapping[str, Any] | None = None
) -> cluster_pb2.Cluster:
    """The outbound cluster istiod builds for host:port, shaped by `rule` (None: defaults)."""
    label = object_label(rule) if rule else "(no DestinationRule)"
    policy = ((rule or {}).get("spec") or {}).get("trafficPolicy") or {}
    name = cluster_name(host, port)
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=name
        ),
        connect_timeout=duration_pb2.Duration(seconds=DEFAULT_CONNECT_TIMEOUT_S),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(),
    )
    simple = (policy.get("loadBalancer") or {}).get("simple", DEFAULT_LB)
    if simple not in LB_POLICIES:
        raise IstioConfigError(
            label,
            "spec.trafficPolicy.loadBalancer.simple",
            f"{simple!r} is not one of {', '.join(LB_POLICIES)}",
        )
    cluster.lb_policy = LB_POLICIES[simple]
    options = _connection_pool(cluster, policy.get("connectionPool") or {}, label)
    _outlier_detection(cluster, policy.get("outlierDetection"), label)
    if distribute_weights(rule):
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()
    # The port is gRPC (named grpc or appProtocol: grpc), so istiod speaks HTTP/2 upstream.
    options.explicit_http_config.http2_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Pack(options)
    return cluster


def _connection_pool(
    cluster: cluster_pb2.Cluster, pool: Mapping[str, Any], label: str
) -> http_protocol_options_pb2.HttpProtocolOptions:
    where = "spec.trafficPolicy.connectionPool"
    limits = circuit_breaker_pb2.CircuitBreakers.Thresholds(
        max_connections=wrappers_pb2.UInt32Value(value=UNLIMITED),
        max_pending_requests=wrappers_pb2.UInt32Value(value=UNLIMITED),
        max_requests=wrappers_pb2.UInt32Value(value=UNLIMITED),
        max_retries=wrappers_pb2.UInt32Value(value=UNLIMITED),
        track_remaining=True,
    )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    tcp, http = pool.get("tcp") or {}, pool.get("http") or {}
    if "maxConnections" in tcp:
        value = _count(tcp["maxConnections"], label, f"{where}.tcp.maxConnections", low=1)
        limits.max_connections.value = value
    if "http2MaxRequests" in http:
        value = _count(http["http2MaxRequests"], label, f"{where}.http.http2MaxRequests", low=1)
        limits.max_requests.value = value
    if "maxRequestsPerConnection" in http:
        field = f"{where}.http.maxRequestsPerConnection"
        value = _count(http["maxRequestsPerConnection"], label, field)
        if value:  # 0 means unlimited, as in Istio
            options.common_http_protocol_options.max_requests_per_connection.value = value
    upgrade = http.get("h2UpgradePolicy", "DEFAULT")
    if upgrade not in ("DEFAULT", "UPGRADE", "DO_NOT_UPGRADE"):
        raise IstioConfigError(
            label,
            f"{where}.http.h2UpgradePolicy",
            f"{upgrade!r} is not one of DEFAULT, UPGRADE, DO_NOT_UPGRADE",
        )
    # A gRPC port is HTTP/2 whatever h2UpgradePolicy says: the policy only upgrades HTTP/1.1.
    cluster.circuit_breakers.thresholds.append(limits)
    return options


def _outlier_detection(
    cluster: cluster_pb2.Cluster, settings: Mapping[str, Any] | None, label: str
) -> None:
    if settings is None:
        return
    where = "spec.trafficPolicy.outlierDetection"
    # istiod turns success-rate ejection off: it misfires on services with few pods.
    out = outlier_detection_pb2.OutlierDetection(
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0)
    )
    if "consecutive5xxErrors" in settings:
        value = _count(settings["consecutive5xxErrors"], label, f"{where}.consecutive5xxErrors")
        out.consecutive_5xx.value = value
        out.enforcing_consecutive_5xx.value = 100 if value else 0
    if "consecutiveGatewayErrors" in settings:
        field = f"{where}.consecutiveGatewayErrors"
        value = _count(settings["consecutiveGatewayErrors"], label, field)
        out.consecutive_gateway_failure.value = value
        out.enforcing_consecutive_gateway_failure.value = 100 if value else 0
    if "interval" in settings:
        out.interval.CopyFrom(parse_duration(settings["interval"], label, f"{where}.interval"))
    if "baseEjectionTime" in settings:
        field = f"{where}.baseEjectionTime"
        out.base_ejection_time.CopyFrom(parse_duration(settings["baseEjectionTime"], label, field))
    if "maxEjectionPercent" in settings:
        field = f"{where}.maxEjectionPercent"
        value = _count(settings["maxEjectionPercent"], label, field, high=100)
        if value:
            out.max_ejection_percent.value = value
    cluster.outlier_detection.CopyFrom(out)
    # Envoy would otherwise ignore ejections once half the pods are out ("panic mode"); with
    # three pods that is one ejection. istiod sets the threshold to minHealthPercent, 0.
    cluster.common_lb_config.healthy_panic_threshold.CopyFrom(percent_pb2.Percent(value=0))


# --- locality weights ---------------------------------------------------------------------------


def distribute_weights(rule: Mapping[str, Any] | None) -> list[tuple[str, dict[str, int]]]:
    """localityLbSetting.distribute as (from, {to: weight}) pairs, checked."""
    if not rule:
        return []
    label = object_label(rule)
    policy = (rule.get("spec") or {}).get("trafficPolicy") or {}
    setting = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    if setting.get("enabled") is False:
        return []
    pairs = []
    for index, item in enumerate(setting.get("distribute") or []):
        where = f"spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[{index}]"
        source = item.get("from")
        targets = item.get("to") or {}
        if not isinstance(source, str) or not source:
            raise IstioConfigError(label, f"{where}.from", "needs a locality like region/zone/*")
        if not targets:
            raise IstioConfigError(label, f"{where}.to", "needs at least one locality: weight")
        for target, weight in targets.items():
            _count(weight, label, f"{where}.to[{target!r}]", low=1, high=100)
        if sum(targets.values()) != 100:
            raise IstioConfigError(
                label, f"{where}.to", f"weights must add up to 100, not {sum(targets.values())}"
            )
        pairs.append((source, dict(targets)))
    return pairs


def locality_matches(locality: tuple[str, str], pattern: str) -> bool:
    """Istio's locality match: "region/zone/subzone", where "*" matches the rest."""
    parts = (*locality, "")
    for index, segment in enumerate(pattern.split("/")):
        if segment == "*":
            return True
        if index >= len(parts) or segment != parts[index]:
            return False
    return True


def failover_priorities(
    localities: Iterable[tuple[str, str]],
    rule: Mapping[str, Any] | None,
    client_locality: tuple[str, str] | None,
) -> dict[tuple[str, str], int]:
    """istiod's default locality failover: Envoy priorities by how much of the client's
    locality each one shares (same zone 0, same region next, then the rest, renumbered
    without gaps). Only with outlierDetection in the rule: without it Envoy could never
    tell that a priority is unhealthy, so istiod leaves every locality at priority 0
    (pilot/pkg/networking/core/loadbalancer, ApplyLocalityLoadBalancer). Not with
    `distribute`, which sets weights instead, nor with locality LB disabled."""
    policy = ((rule or {}).get("spec") or {}).get("trafficPolicy") or {}
    setting = (policy.get("loadBalancer") or {}).get("localityLbSetting") or {}
    if (
        client_locality is None
        or policy.get("outlierDetection") is None
        or setting.get("enabled") is False
        or setting.get("distribute")
    ):
        return {}
    region, zone = client_locality

    def shared(locality: tuple[str, str]) -> int:
        # istio's util.LbPriority: region, zone and subzone 0; region and zone 1; region 2.
        # Kubernetes has no subzone, so a zone match is a full match here.
        if locality == (region, zone):
            return 0
        return 2 if locality[0] == region else 3

    raw = {locality: shared(locality) for locality in localities}
    ranks = {value: index for index, value in enumerate(sorted(set(raw.values())))}
    return {locality: ranks[value] for locality, value in raw.items()}


def load_assignment(
    name: str,
    endpoints: Sequence[Endpoint],
    rule: Mapping[str, Any] | None = None,
    client_locality: tuple[str, str] | None = None,
) -> endpoint_pb2.ClusterLoadAssignment:
    """Endpoints grouped by locality; each locality weighs its pod count, or what
    the rule's localityLbSetting.distribute gives it for a client in `client_locality`."""
    groups: dict[tuple[str, str], list[Endpoint]] = {}
    for item in sorted(endpoints, key=lambda e: (e.locality, e.ip, e.port)):
        groups.setdefault(item.locality, []).append(item)
    weights = {locality: len(members) for locality, members in groups.items()}
    for source, targets in distribute_weights(rule):
        if client_locality is None or not locality_matches(client_locality, source):
            continue
        weights = {}
        unmatched = set(groups)
        for target, weight in targets.items():
            matched = [
                loc for loc in sorted(groups) if loc in unmatched and locality_matches(loc, target)
            ]
            total = sum(len(groups[loc]) for loc in matched)
            for loc in matched:
                unmatched.discard(loc)
                weights[loc] = math.ceil(len(groups[loc]) * weight / total)
        break
    priorities = failover_priorities(groups, rule, client_locality)
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    for (region, zone), members in groups.items():
        if not weights.get((region, zone)):
            continue  # istiod drops localities that distribute gives nothing
        assignment.endpoints.append(
            endpoint_components_pb2.LocalityLbEndpoints(
                locality=base_pb2.Locality(region=region, zone=zone),
                priority=priorities.get((region, zone), 0),
                # gRPC ignores a locality without a weight, so every locality gets one.
                load_balancing_weight=wrappers_pb2.UInt32Value(value=weights[(region, zone)]),
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(
                            address=socket_address(e.ip, e.port)
                        ),
                        health_status=health_check_pb2.HEALTHY,
                    )
                    for e in members
                ],
            )
        )
    return assignment


# --- VirtualService -> routes -------------------------------------------------------------------


def check_virtual_service(service: Mapping[str, Any]) -> None:
    """Raise IstioConfigError for the first value grpclab cannot translate."""
    namespace = service["metadata"].get("namespace", "default")
    for index, item in enumerate((service.get("spec") or {}).get("http") or []):
        _http_route(service, index, item, namespace, lambda host, port: port or 0)


def route_configuration(
    target: ServicePort,
    virtual_service: Mapping[str, Any] | None = None,
    ports_of: Mapping[str, Sequence[int]] | None = None,
) -> route_pb2.RouteConfiguration:
    """The routes for one Service port: the VirtualService's http entries that match the
    port, in order, or istiod's default route when none does."""
    ports_of = ports_of or {target.host: [target.port]}

    def port_for(host: str, port: int | None) -> int:
        if port:
            return port
        known = ports_of.get(host) or []
        return known[0] if len(known) == 1 else target.port

    routes = []
    if virtual_service is not None:
        namespace = virtual_service["metadata"].get("namespace", "default")
        for index, item in enumerate((virtual_service.get("spec") or {}).get("http") or []):
            matched_ports = [m.get("port") for m in item.get("match") or [] if m]
            if matched_ports and target.port not in matched_ports:
                continue
            routes.append(_http_route(virtual_service, index, item, namespace, port_for))
    if not routes:
        routes.append(_default_route(target.cluster_name))
    return route_pb2.RouteConfiguration(
        name=target.route_name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=target.route_name,
                # Each Service port has a listener of its own here, so the listener already
                # chose the Service; istiod lists the Service's names and VIP instead.
                domains=["*"],
                routes=routes,
            )
        ],
        validate_clusters=wrappers_pb2.BoolValue(value=False),
    )


def _default_route(cluster: str) -> route_components_pb2.Route:
    action = route_components_pb2.RouteAction(cluster=cluster, retry_policy=_retry_policy(None))
    _set_timeout(action, duration_pb2.Duration())
    return route_components_pb2.Route(
        name="default", match=route_components_pb2.RouteMatch(prefix="/"), route=action
    )


def _http_route(
    service: Mapping[str, Any], index: int, item: Mapping[str, Any], namespace: str, port_for
) -> route_components_pb2.Route:
    label = object_label(service)
    where = f"spec.http[{index}]"
    destinations = item.get("route") or []
    if len(destinations) != 1:
        raise IstioConfigError(
            label,
            f"{where}.route",
            f"grpclab translates exactly one destination per route, not {len(destinations)}",
        )
    destination = destinations[0].get("destination") or {}
    host = destination.get("host")
    if not isinstance(host, str) or not host:
        raise IstioConfigError(label, f"{where}.route[0].destination.host", "required")
    port = (destination.get("port") or {}).get("number")
    if port is not None:
        _count(port, label, f"{where}.route[0].destination.port.number", low=1, high=65535)
    for m_index, match in enumerate(item.get("match") or []):
        if "port" in (match or {}):
            _count(match["port"], label, f"{where}.match[{m_index}].port", low=1, high=65535)
    fqdn = resolve_host(host, namespace)
    action = route_components_pb2.RouteAction(cluster=cluster_name(fqdn, port_for(fqdn, port)))
    timeout = duration_pb2.Duration()
    if "timeout" in item:
        timeout = parse_duration(item["timeout"], label, f"{where}.timeout")
    _set_timeout(action, timeout)
    policy = _retry_policy(item.get("retries", None), label, f"{where}.retries")
    if policy is not None:
        action.retry_policy.CopyFrom(policy)
    return route_components_pb2.Route(
        name=str(item.get("name") or f"{service['metadata']['name']}.{index}"),
        match=route_components_pb2.RouteMatch(prefix="/"),
        route=action,
    )


def _set_timeout(action: route_components_pb2.RouteAction, timeout: duration_pb2.Duration) -> None:
    # As istiod does: 0s means no route timeout, and a client's grpc-timeout is honoured
    # up to the route timeout (up to anything when 0s).
    action.timeout.CopyFrom(timeout)
    action.max_stream_duration.max_stream_duration.CopyFrom(timeout)
    action.max_stream_duration.grpc_timeout_header_max.CopyFrom(timeout)


def _retry_policy(
    retries: Mapping[str, Any] | None, label: str = "", where: str = ""
) -> route_components_pb2.RetryPolicy | None:
    previous_hosts = any_pb2.Any()
    previous_hosts.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    policy = route_components_pb2.RetryPolicy(
        retry_on=DEFAULT_RETRY_ON,
        num_retries=wrappers_pb2.UInt32Value(value=DEFAULT_RETRIES),
        retriable_status_codes=[503],
        # A retry goes to another pod when there is one: retrying the pod that just
        # failed is rarely what anyone wants.
        retry_host_predicate=[
            route_components_pb2.RetryPolicy.RetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts", typed_config=previous_hosts
            )
        ],
        host_selection_retry_max_attempts=HOST_SELECTION_RETRY_MAX_ATTEMPTS,
    )
    if retries is None:
        return policy
    attempts = _count(retries.get("attempts", 0), label, f"{where}.attempts")
    if attempts == 0:
        return None  # Istio: attempts 0 turns retries off
    policy.num_retries.value = attempts
    if "retryOn" in retries:
        names, codes = parse_retry_on(retries["retryOn"], label, f"{where}.retryOn")
        policy.retry_on = names
        del policy.retriable_status_codes[:]
        policy.retriable_status_codes.extend(codes)
    if "perTryTimeout" in retries:
        field = f"{where}.perTryTimeout"
        policy.per_try_timeout.CopyFrom(parse_duration(retries["perTryTimeout"], label, field))
    return policy


# --- the sidecar's outbound listener ------------------------------------------------------------


def http_connection_manager(
    stat_prefix: str,
    route_name: str | None = None,
    route_config: route_pb2.RouteConfiguration | None = None,
) -> hcm_pb2.HttpConnectionManager:
    """An HCM with the router filter, its routes from RDS (over ADS) or inline."""
    router = any_pb2.Any()
    router.Pack(router_pb2.Router())
    manager = hcm_pb2.HttpConnectionManager(
        stat_prefix=stat_prefix,
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)],
    )
    if route_config is not None:
        manager.route_config.CopyFrom(route_config)
    else:
        manager.rds.CopyFrom(
            hcm_pb2.Rds(
                config_source=config_source_pb2.ConfigSource(
                    ads=config_source_pb2.AggregatedConfigSource(),
                    resource_api_version=config_source_pb2.ApiVersion.V3,
                ),
                route_config_name=route_name,
            )
        )
    return manager


def outbound_listener(target: ServicePort, ip: str) -> listener_pb2.Listener:
    """The sidecar's listener for one Service port, on the address the client dials."""
    manager = any_pb2.Any()
    manager.Pack(
        http_connection_manager(f"outbound_{target.route_name}", route_name=target.route_name)
    )
    return listener_pb2.Listener(
        name=f"outbound|{target.route_name}",
        address=socket_address(ip, target.port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=manager,
                    )
                ]
            )
        ],
    )


def sidecar_resources(
    ports: Sequence[ServicePort],
    listen_ips: Mapping[tuple[str, str, int], str],
    destination_rules: Sequence[Mapping[str, Any]] = (),
    virtual_services: Sequence[Mapping[str, Any]] = (),
    client_locality: tuple[str, str] | None = None,
) -> dict[str, dict[str, Message]]:
    """Everything one sidecar needs to reach `ports`: clusters, endpoints, listeners, routes.

    listen_ips maps (namespace, service, port) to the address of that port's listener.
    """
    clusters, assignments, listeners, routes = {}, {}, {}, {}
    ports_of: dict[str, list[int]] = {}
    for target in ports:
        ports_of.setdefault(target.host, []).append(target.port)
    for target in ports:
        rule = rule_for_host(destination_rules, target.host)
        cluster = destination_rule_cluster(target.host, target.port, rule)
        clusters[cluster.name] = cluster
        assignments[cluster.name] = load_assignment(
            cluster.name, target.endpoints, rule, client_locality
        )
        ip = listen_ips.get((target.namespace, target.service, target.port))
        if ip is None:
            continue
        listener = outbound_listener(target, ip)
        listeners[listener.name] = listener
        service = rule_for_host(virtual_services, target.host, field="hosts")
        routes[target.route_name] = route_configuration(target, service, ports_of)
    return {CLUSTER: clusters, ENDPOINT: assignments, LISTENER: listeners, ROUTE: routes}


# --- showing it ---------------------------------------------------------------------------------


def to_dict(resource: Message) -> dict[str, Any]:
    """A resource as the JSON-shaped dict Envoy's config_dump would show."""
    data = _plain(MessageToDict(resource, preserving_proto_field_name=True))
    if isinstance(resource, cluster_pb2.Cluster) and "lb_policy" not in data:
        # ROUND_ROBIN is lb_policy's default value, which proto JSON leaves out; the one
        # field a reader looks for should not be the one missing.
        items = list(data.items())
        at = next((i + 1 for i, (key, _) in enumerate(items) if key == "connect_timeout"), 1)
        items.insert(at, ("lb_policy", "ROUND_ROBIN"))
        data = dict(items)
    return data


def _plain(value: Any) -> Any:
    # MessageToDict returns OrderedDicts inside unpacked Any fields; YAML wants plain dicts.
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def to_yaml(resource: Message | Mapping[str, Any]) -> str:
    """A resource (or a dict of them) as readable YAML, Any fields unpacked with their @type."""
    data = resource if isinstance(resource, Mapping) else to_dict(resource)
    if isinstance(resource, Mapping):
        data = {k: to_dict(v) if isinstance(v, Message) else v for k, v in resource.items()}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)

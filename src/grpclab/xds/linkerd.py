"""Linkerd's outbound proxy, emulated with Envoy: balancing, ServiceProfile routes and retries.

Linkerd is not Envoy. Its proxy (linkerd2-proxy) balances each request over the Service's
pods with power-of-two-choices on a peak-EWMA latency score; it retries routes that a
ServiceProfile marks `isRetryable` within a retry budget, or (Linkerd 2.16 and later) as
many times as `retry.linkerd.io/limit` says on a GRPCRoute, HTTPRoute or Service. This
module builds the Envoy config that comes closest, and `mapping` says, row by row, what
maps to what and where the two differ. Pure functions: objects in, protobuf messages out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message

from grpclab.xds.gateway import Backend, Resolve, grpc_route_match, upstream_cluster
from grpclab.xds.istio import CLUSTER_DOMAIN, Endpoint, ServicePort, outbound_listener
from grpclab.xds.kube_proxy import load_assignment
from grpclab.xds.server import CLUSTER, ENDPOINT, LISTENER, ROUTE
from grpclab.xds.translation import (
    TranslationError,
    as_duration,
    go_duration_seconds,
    object_label,
)

PROFILE_API_VERSION = "linkerd.io/v1alpha2"
INJECT_ANNOTATION = "linkerd.io/inject"
RETRY_GRPC = "retry.linkerd.io/grpc"
RETRY_HTTP = "retry.linkerd.io/http"
RETRY_LIMIT = "retry.linkerd.io/limit"
RETRY_TIMEOUT = "retry.linkerd.io/timeout"
RETRY_ANNOTATIONS = (RETRY_GRPC, RETRY_HTTP, RETRY_LIMIT, RETRY_TIMEOUT)
GRPC_RETRY_CODES = (
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)
# Linkerd's documented defaults.
DEFAULT_RETRY_LIMIT = 1  # retry.linkerd.io/limit
DEFAULT_ROUTE_TIMEOUT_S = 10.0  # a ServiceProfile route's timeout
DEFAULT_BUDGET = {"retryRatio": 0.2, "minRetriesPerSecond": 10, "ttl": "10s"}
# Budgeted retries have no per-request count in Linkerd; Envoy needs one.
BUDGETED_MAX_RETRIES = 3
# Envoy budgets retries in flight, Linkerd retries per second (over its ttl window). A retry
# that takes under a second holds its slot for under a second, so N slots allow at least N
# retries per second: minRetriesPerSecond N becomes min_retry_concurrency N, a floor at
# least as generous as Linkerd's. It also absorbs bursts, which Linkerd's window allows and
# Envoy's instantaneous budget alone would refuse.
# Envoy's names for the failures Linkerd retries: any failed gRPC status it can name, resets
# and HTTP 5xx (what a proxy answers when no pod does).
BUDGET_RETRY_ON = "5xx,reset,connect-failure,refused-stream," + ",".join(GRPC_RETRY_CODES)


class LinkerdConfigError(TranslationError):
    """A Linkerd object or annotation grpclab cannot translate; names the object and field."""


def profile_name(service: str, namespace: str) -> str:
    """The name Linkerd looks a ServiceProfile up by: the Service's fully qualified name."""
    return f"{service}.{namespace}.{CLUSTER_DOMAIN}"


def parse_duration(text: Any, label: str, field: str) -> float:
    seconds = go_duration_seconds(text)
    if seconds is None:
        raise LinkerdConfigError(label, field, f"{text!r} is not a duration like 10s or 300ms")
    return seconds


# --- checks -------------------------------------------------------------------------------------


def check_service_profile(profile: Mapping[str, Any]) -> None:
    """Raise LinkerdConfigError for the first value Linkerd (or the emulation) would refuse."""
    label = object_label(profile)
    namespace = profile["metadata"].get("namespace") or "default"
    name = profile["metadata"]["name"]
    suffix = f".{namespace}.{CLUSTER_DOMAIN}"
    if not name.endswith(suffix) or "." in name[: -len(suffix)]:
        raise LinkerdConfigError(
            label,
            "metadata.name",
            f"Linkerd finds a ServiceProfile by the Service's full name: <service>{suffix}",
        )
    spec = profile.get("spec") or {}
    for index, route in enumerate(spec.get("routes") or []):
        where = f"spec.routes[{index}]"
        condition = route.get("condition") or {}
        if "pathRegex" not in condition and "method" not in condition:
            raise LinkerdConfigError(
                label, f"{where}.condition", "give a method, a pathRegex or both"
            )
        if "pathRegex" in condition:
            try:
                re.compile(condition["pathRegex"])
            except re.error as error:
                raise LinkerdConfigError(
                    label, f"{where}.condition.pathRegex", f"not a regular expression: {error}"
                ) from None
        for c_index, response_class in enumerate(route.get("responseClasses") or []):
            status = (response_class.get("condition") or {}).get("status") or {}
            low, high = status.get("min", 100), status.get("max", 599)
            if low > high:
                raise LinkerdConfigError(
                    label,
                    f"{where}.responseClasses[{c_index}].condition.status",
                    f"min {low} is above max {high}",
                )
        if "timeout" in route:
            parse_duration(route["timeout"], label, f"{where}.timeout")
    budget = spec.get("retryBudget") or {}
    if "ttl" in budget:
        parse_duration(budget["ttl"], label, "spec.retryBudget.ttl")


def check_retry_annotations(obj: Mapping[str, Any]) -> None:
    """Raise LinkerdConfigError for a retry annotation Linkerd would not accept on `obj`."""
    label = object_label(obj)
    annotations = obj["metadata"].get("annotations") or {}
    kind = obj.get("kind")
    if RETRY_HTTP in annotations and kind == "GRPCRoute":
        raise LinkerdConfigError(
            label,
            f"metadata.annotations[{RETRY_HTTP!r}]",
            f"not valid on a GRPCRoute (Linkerd ignores it there): use {RETRY_GRPC}",
        )
    if RETRY_GRPC in annotations and kind == "HTTPRoute":
        raise LinkerdConfigError(
            label,
            f"metadata.annotations[{RETRY_GRPC!r}]",
            f"not valid on an HTTPRoute: use {RETRY_HTTP}",
        )
    _retry_settings(annotations, label)


def _retry_settings(annotations: Mapping[str, str], label: str) -> tuple[str, int, float | None]:
    """(Envoy retry_on, num_retries, per-try timeout) from Linkerd's retry annotations."""
    where = "metadata.annotations"
    conditions: list[str] = []
    for code in (annotations.get(RETRY_GRPC) or "").split(","):
        code = code.strip()
        if not code:
            continue
        if code not in GRPC_RETRY_CODES:
            raise LinkerdConfigError(
                label,
                f"{where}[{RETRY_GRPC!r}]",
                f"{code!r} is not one of {', '.join(GRPC_RETRY_CODES)}",
            )
        conditions.append(code)
    for item in (annotations.get(RETRY_HTTP) or "").split(","):
        item = item.strip()
        if not item:
            continue
        # HTTP status lists cannot single out gRPC errors (they all travel as HTTP 200).
        if item not in ("5xx", "gateway-error"):
            raise LinkerdConfigError(
                label,
                f"{where}[{RETRY_HTTP!r}]",
                f"the emulation maps 5xx and gateway-error, not {item!r}",
            )
        conditions.append(item)
    limit_text = annotations.get(RETRY_LIMIT, str(DEFAULT_RETRY_LIMIT))
    if not str(limit_text).isdigit():
        raise LinkerdConfigError(
            label, f"{where}[{RETRY_LIMIT!r}]", f"{limit_text!r} must be a whole number, as text"
        )
    timeout = None
    if RETRY_TIMEOUT in annotations:
        timeout = parse_duration(annotations[RETRY_TIMEOUT], label, f"{where}[{RETRY_TIMEOUT!r}]")
    return ",".join(conditions), int(limit_text), timeout


# --- translation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeshedPort:
    """One port of a meshed Service: where the client's proxy listens, and the pods behind it."""

    backend: Backend
    listen_ip: str

    @property
    def service_port(self) -> ServicePort:
        b = self.backend
        return ServicePort(
            b.namespace,
            b.service,
            b.port,
            tuple(Endpoint(ip, port, "", "") for ip, port in b.endpoints),
        )


def _retry_budget(
    budget: Mapping[str, Any],
) -> circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget:
    ratio = float(budget.get("retryRatio", DEFAULT_BUDGET["retryRatio"]))
    per_second = float(budget.get("minRetriesPerSecond", DEFAULT_BUDGET["minRetriesPerSecond"]))
    return circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
        budget_percent=percent_pb2.Percent(value=ratio * 100),
        min_retry_concurrency=wrappers_pb2.UInt32Value(value=max(1, math.ceil(per_second))),
    )


def linkerd_cluster(
    name: str, backend: Backend, budget: Mapping[str, Any] | None
) -> cluster_pb2.Cluster:
    """HTTP/2 to the pods, P2C least request, and the retry budget when there is one."""
    cluster = upstream_cluster(name, backend, http2=True)
    cluster.lb_policy = cluster_pb2.Cluster.LEAST_REQUEST
    cluster.least_request_lb_config.choice_count.value = 2
    if budget is not None:
        if not cluster.circuit_breakers.thresholds:
            cluster.circuit_breakers.thresholds.add()
        cluster.circuit_breakers.thresholds[0].retry_budget.CopyFrom(_retry_budget(budget))
    return cluster


def _retry_policy(retry_on: str, retries: int, per_try_s: float | None):
    policy = route_components_pb2.RetryPolicy(
        retry_on=retry_on, num_retries=wrappers_pb2.UInt32Value(value=retries)
    )
    if per_try_s is not None:
        policy.per_try_timeout.CopyFrom(as_duration(per_try_s))
    return policy


def _profile_routes(profile: Mapping[str, Any], cluster: str) -> list[route_components_pb2.Route]:
    label = object_label(profile)
    routes = []
    for index, item in enumerate((profile.get("spec") or {}).get("routes") or []):
        condition = item.get("condition") or {}
        match = route_components_pb2.RouteMatch(prefix="/")
        if "pathRegex" in condition:
            # Linkerd matches pathRegex against the whole path, as Envoy's safe_regex does.
            match = route_components_pb2.RouteMatch(
                safe_regex=regex_pb2.RegexMatcher(regex=condition["pathRegex"])
            )
        if "method" in condition:
            match.headers.append(
                route_components_pb2.HeaderMatcher(
                    name=":method", string_match=string_pb2.StringMatcher(exact=condition["method"])
                )
            )
        timeout = DEFAULT_ROUTE_TIMEOUT_S
        if "timeout" in item:
            timeout = parse_duration(item["timeout"], label, f"spec.routes[{index}].timeout")
        action = route_components_pb2.RouteAction(cluster=cluster, timeout=as_duration(timeout))
        if item.get("isRetryable"):
            action.retry_policy.CopyFrom(_retry_policy(BUDGET_RETRY_ON, BUDGETED_MAX_RETRIES, None))
        routes.append(route_components_pb2.Route(name=item["name"], match=match, route=action))
    return routes


def _annotated_routes(
    service: Mapping[str, Any] | None,
    grpc_routes: Sequence[Mapping[str, Any]],
    default_cluster: str,
    clusters_for,
) -> list[route_components_pb2.Route]:
    service_annotations = ((service or {}).get("metadata") or {}).get("annotations") or {}
    routes: list[tuple[tuple, route_components_pb2.Route]] = []
    for route in grpc_routes:
        annotations = route["metadata"].get("annotations") or {}
        label = object_label(route)
        # A route's retry annotations replace all of the Service's (Linkerd's rule).
        if not any(key in annotations for key in RETRY_ANNOTATIONS):
            annotations, label = service_annotations, object_label(service or {})
        retry_on, limit, per_try = _retry_settings(annotations, label)
        name = route["metadata"]["name"]
        for r_index, rule in enumerate(route["spec"].get("rules") or []):
            clusters = clusters_for(route, rule) or [default_cluster]
            for m_index, match in enumerate(rule.get("matches") or [None]):
                precedence, envoy_match = grpc_route_match(match)
                action = route_components_pb2.RouteAction(cluster=clusters[0])
                if retry_on and limit:
                    action.retry_policy.CopyFrom(_retry_policy(retry_on, limit, per_try))
                routes.append(
                    (
                        (*precedence, name, r_index, m_index),
                        route_components_pb2.Route(
                            name=f"{name}/rule/{r_index}/match/{m_index}",
                            match=envoy_match,
                            route=action,
                        ),
                    )
                )
    return [route for _, route in sorted(routes, key=lambda item: item[0])]


def _default_route(cluster: str, service: Mapping[str, Any] | None) -> route_components_pb2.Route:
    action = route_components_pb2.RouteAction(cluster=cluster)
    annotations = ((service or {}).get("metadata") or {}).get("annotations") or {}
    if any(key in annotations for key in RETRY_ANNOTATIONS):
        retry_on, limit, per_try = _retry_settings(annotations, object_label(service or {}))
        if retry_on and limit:
            action.retry_policy.CopyFrom(_retry_policy(retry_on, limit, per_try))
    return route_components_pb2.Route(
        name="default", match=route_components_pb2.RouteMatch(prefix="/"), route=action
    )


def proxy_resources(
    ports: Sequence[MeshedPort],
    services: Mapping[tuple[str, str], Mapping[str, Any]],
    profiles: Sequence[Mapping[str, Any]],
    grpc_routes: Sequence[Mapping[str, Any]],
    resolve: Resolve,
) -> dict[str, dict[str, Message]]:
    """Everything the client's proxy needs to reach `ports`, as Linkerd would behave.

    A ServiceProfile for the Service wins over GRPCRoute retry annotations, as in Linkerd.
    """
    clusters: dict[str, Message] = {}
    assignments: dict[str, Message] = {}
    listeners: dict[str, Message] = {}
    route_configs: dict[str, Message] = {}
    by_profile = {(p["metadata"].get("namespace"), p["metadata"]["name"]): p for p in profiles}

    def cluster_for(backend: Backend, budget) -> str:
        name = f"linkerd/{backend.name}"
        clusters[name] = linkerd_cluster(name, backend, budget)
        assignments[name] = load_assignment(name, backend.endpoints)
        return name

    for port in ports:
        backend = port.backend
        service = services.get((backend.namespace, backend.service))
        profile = by_profile.get(
            (backend.namespace, profile_name(backend.service, backend.namespace))
        )
        budget = None
        if profile is not None and any(
            r.get("isRetryable") for r in profile["spec"].get("routes") or []
        ):
            budget = {**DEFAULT_BUDGET, **(profile["spec"].get("retryBudget") or {})}
        default_cluster = cluster_for(backend, budget)
        if profile is not None:
            routes = _profile_routes(profile, default_cluster)
        else:
            attached = [
                r
                for r in grpc_routes
                if _parents_service(r, backend.namespace, backend.service, backend.port)
            ]

            def clusters_for(route, rule):
                names = []
                for ref in rule.get("backendRefs") or []:
                    ref_ns = ref.get("namespace") or route["metadata"].get("namespace")
                    target = resolve(ref_ns, ref["name"], ref["port"])
                    if target is not None:
                        names.append(cluster_for(target, None))
                return names

            routes = _annotated_routes(service, attached, default_cluster, clusters_for)
        routes.append(_default_route(default_cluster, service if profile is None else None))
        target = port.service_port
        listener = outbound_listener(target, port.listen_ip)
        listeners[listener.name] = listener
        route_configs[target.route_name] = route_pb2.RouteConfiguration(
            name=target.route_name,
            virtual_hosts=[
                route_components_pb2.VirtualHost(
                    name=target.route_name, domains=["*"], routes=routes
                )
            ],
            validate_clusters=wrappers_pb2.BoolValue(value=False),
        )
    return {CLUSTER: clusters, ENDPOINT: assignments, LISTENER: listeners, ROUTE: route_configs}


def _parents_service(route: Mapping[str, Any], namespace: str, service: str, port: int) -> bool:
    route_ns = route["metadata"].get("namespace")
    for ref in (route.get("spec") or {}).get("parentRefs") or []:
        if ref.get("kind") != "Service" or (ref.get("group") or "core") not in ("", "core"):
            continue
        if (ref.get("namespace") or route_ns, ref["name"]) != (namespace, service):
            continue
        if ref.get("port") in (None, port):
            return True
    return False


# --- the mapping, for people --------------------------------------------------------------------


def mapping(
    profile: Mapping[str, Any] | None, grpc_routes: Sequence[Mapping[str, Any]] = ()
) -> list[tuple[str, str, str]]:
    """(Linkerd setting, Envoy setting of the emulation, how close) for what is in force."""
    rows = [
        (
            "balancer: power of two choices, peak-EWMA latency x in-flight",
            "lb_policy LEAST_REQUEST, choice_count 2",
            "same P2C; Envoy compares in-flight requests only, so a slow pod loses traffic "
            "later than in Linkerd",
        )
    ]
    if profile is not None:
        spec = profile.get("spec") or {}
        for route in spec.get("routes") or []:
            condition = route.get("condition") or {}
            shown = " ".join(f"{k}={v}" for k, v in condition.items())
            rows.append(
                (
                    f"route {route['name']}: {shown}",
                    "route match: :method header + safe_regex on the whole path",
                    "exact",
                )
            )
            if route.get("isRetryable"):
                rows.append(
                    (
                        f"route {route['name']}: isRetryable: true",
                        f"retry_policy retry_on {BUDGET_RETRY_ON}, num_retries "
                        f"{BUDGETED_MAX_RETRIES}",
                        "Linkerd retries with no count, only the budget; Envoy needs a count",
                    )
                )
        if any(r.get("isRetryable") for r in spec.get("routes") or []):
            budget = {**DEFAULT_BUDGET, **(spec.get("retryBudget") or {})}
            envoy = _retry_budget(budget)
            rows += [
                (
                    f"retryBudget.retryRatio {budget['retryRatio']}",
                    f"retry_budget.budget_percent {envoy.budget_percent.value:g}",
                    "approximate: Linkerd counts retries against requests over ttl, Envoy "
                    "retries in flight against requests in flight",
                ),
                (
                    f"retryBudget.minRetriesPerSecond {budget['minRetriesPerSecond']}",
                    f"retry_budget.min_retry_concurrency {envoy.min_retry_concurrency.value}",
                    "approximate: a rate becomes a count in flight; N in flight allow at "
                    "least N per second when calls take under a second",
                ),
                (f"retryBudget.ttl {budget['ttl']}", "(none)", "Envoy's budget has no window"),
            ]
        rows.append(
            (
                "responseClasses (HTTP status ranges)",
                "(not mapped)",
                "a gRPC reply is HTTP 200 whatever its status; the emulation classifies "
                "by grpc-status",
            )
        )
    for route in grpc_routes:
        annotations = route["metadata"].get("annotations") or {}
        for key in RETRY_ANNOTATIONS:
            if key in annotations:
                envoy = {
                    RETRY_GRPC: "retry_on",
                    RETRY_HTTP: "retry_on",
                    RETRY_LIMIT: "num_retries",
                    RETRY_TIMEOUT: "per_try_timeout",
                }[key]
                rows.append((f"{key}: {annotations[key]}", f"{envoy} {annotations[key]}", "exact"))
        if any(key in annotations for key in RETRY_ANNOTATIONS):
            rows.append(
                (
                    "counted retries (no budget)",
                    "max_retries circuit breaker unlimited",
                    "exact",
                )
            )
    return rows


def format_mapping(rows: Sequence[tuple[str, str, str]]) -> str:
    """The mapping as text: each Linkerd setting, then its Envoy setting and how close it is."""
    lines = []
    for linkerd, envoy, how in rows:
        lines += [f"Linkerd  {linkerd}", f"  Envoy  {envoy}", f"  how close: {how}"]
    return "\n".join(lines)

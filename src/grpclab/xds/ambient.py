"""Istio's ambient mode as Envoy config: ztunnel's L4 path and a waypoint's L7 one.

ztunnel (a Rust proxy on each node) carries a meshed pod's connections: it picks one
endpoint of the Service when a connection opens and keeps it for that connection
(istio/ztunnel src/state.rs, `find_upstream_from_service`: "Randomly pick an upstream"). So the
stand-in's config is kube-proxy's shape: a tcp_proxy listener and a RANDOM cluster per
Service port. A Service enrolled in a waypoint (`istio.io/use-waypoint`) gets the
waypoint as its one endpoint instead, and the waypoint, an Envoy that istiod configures
like a sidecar, balances each request with the DestinationRule and VirtualService.
Not emulated: HBONE (mTLS over HTTP CONNECT on 15008) between the hops. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message

from grpclab.xds.istio import sidecar_resources
from grpclab.xds.kube_proxy import ServicePortEndpoints, kube_proxy_resources
from grpclab.xds.translation import TranslationError, object_label

# The names Istio reads (istio/istio pkg/config/constants/constants.go and
# https://istio.io/latest/docs/reference/config/labels/).
DATAPLANE_MODE_LABEL = "istio.io/dataplane-mode"
AMBIENT = "ambient"
USE_WAYPOINT_LABEL = "istio.io/use-waypoint"
USE_WAYPOINT_NAMESPACE_LABEL = "istio.io/use-waypoint-namespace"
WAYPOINT_FOR_LABEL = "istio.io/waypoint-for"
WAYPOINT_CLASS = "istio-waypoint"
HBONE_PORT = 15008
NO_WAYPOINT = "none"  # a Service's use-waypoint value that opts out of its namespace's


class AmbientConfigError(TranslationError):
    """An ambient-mode object the sandbox cannot emulate; names the object and the field."""


@dataclass(frozen=True)
class ZtunnelPort:
    """One Service port as ztunnel carries it: where the client dials, where it goes."""

    namespace: str
    service: str
    port: int
    listen_ip: str
    endpoints: tuple[tuple[str, int], ...]  # ready pods, or the waypoint's one address


def ztunnel_resources(ports: Sequence[ZtunnelPort]) -> dict[str, dict[str, Message]]:
    """tcp_proxy listeners with one endpoint picked per connection, as ztunnel does."""
    return kube_proxy_resources(
        [
            ServicePortEndpoints(p.namespace, p.service, p.listen_ip, p.port, p.endpoints)
            for p in ports
        ]
    )


# A waypoint's listeners, routes and clusters: istiod builds them as for a sidecar, with the
# waypoint's own locality (its pod's zone) as the client's.
waypoint_resources = sidecar_resources


def is_waypoint(gateway: Mapping[str, Any]) -> bool:
    return (gateway.get("spec") or {}).get("gatewayClassName") == WAYPOINT_CLASS


def labels_of(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def check_waypoint(gateway: Mapping[str, Any]) -> None:
    """Raise AmbientConfigError for a waypoint Gateway the sandbox cannot emulate."""
    label = object_label(gateway)
    waypoint_for = labels_of(gateway).get(WAYPOINT_FOR_LABEL, "service")
    if waypoint_for != "service":
        raise AmbientConfigError(
            label,
            "metadata.labels",
            f"{WAYPOINT_FOR_LABEL}: the sandbox's waypoint carries traffic addressed to "
            f"Services only, not {waypoint_for!r}: its ztunnel stand-in knows Service "
            "ports, not pod IPs (use the kind backend, or leave the label out: its default "
            "is service)",
        )
    for index, listener in enumerate((gateway.get("spec") or {}).get("listeners") or []):
        where = f"spec.listeners[{index}]"
        if listener.get("protocol") != "HBONE" or listener.get("port") != HBONE_PORT:
            raise AmbientConfigError(
                label,
                f"{where}.protocol",
                f"a waypoint listens for HBONE on port {HBONE_PORT} (what `istioctl waypoint "
                f"generate` writes), not {listener.get('protocol')} on {listener.get('port')}",
            )


def check_enrollment_labels(obj: Mapping[str, Any]) -> str | None:
    """Why a Service's or Namespace's ambient labels cannot be emulated, or None."""
    if USE_WAYPOINT_NAMESPACE_LABEL in labels_of(obj):
        return (
            f"{USE_WAYPOINT_NAMESPACE_LABEL} (a waypoint in another namespace) is not "
            "emulated by the sandbox: put the waypoint Gateway in this namespace"
        )
    return None


def waypoint_for_service(
    service: Mapping[str, Any], namespace: Mapping[str, Any] | None
) -> str | None:
    """The waypoint a Service is bound to: its own label, else its namespace's; None if none."""
    name = labels_of(service).get(USE_WAYPOINT_LABEL)
    if name is None and namespace is not None:
        name = labels_of(namespace).get(USE_WAYPOINT_LABEL)
    return None if name in (None, "", NO_WAYPOINT) else name


def in_ambient(namespace: Mapping[str, Any] | None) -> bool:
    return namespace is not None and labels_of(namespace).get(DATAPLANE_MODE_LABEL) == AMBIENT

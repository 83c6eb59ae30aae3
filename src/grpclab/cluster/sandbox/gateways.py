"""The sandbox's Envoy Gateway and its Traefik stand-in: Envoys fed through grpclab's ADS.

Envoy Gateway is Envoy on kind too; here grpclab plays its controller, turning Gateways and
routes into Envoy config (grpclab.xds.gateway). Traefik is not Envoy: the sandbox emulates
it with one, and says so wherever it shows it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.frontends import EnvoyFrontend, listen_port, service_backend
from grpclab.tls import certificate_from_secret
from grpclab.xds.ambient import is_waypoint
from grpclab.xds.gateway import (
    ENVOY_GATEWAY_API_VERSION,
    GATEWAY_API_VERSION,
    TRAEFIK_API_VERSION,
    Attachment,
    gateway_resources,
    traefik_resources,
)

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox


def _lookups(view: ClusterView):
    def resolve(namespace: str, service: str, port: int | str):
        return service_backend(view, namespace, service, port)

    def secret(namespace: str, name: str) -> tuple[bytes, bytes] | None:
        obj = view.objects.get(("Secret", namespace, name))
        return None if obj is None else certificate_from_secret(obj)

    return resolve, secret


def _of_version(view: ClusterView, kind: str, api_version: str) -> list[Mapping[str, Any]]:
    return [obj for obj in view.of_kind(kind) if obj.get("apiVersion") == api_version]


# The Envoy resources by type URL and name, and which route serves what where.
_Served = tuple[dict[str, dict[str, Any]], list[Attachment]]


class _RoutedFrontend:
    """What both share: an Envoy, the ports it binds, and the routes it last served."""

    name = ""
    via = ""
    label = ""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self.envoy = EnvoyFrontend(sandbox, self.name)
        self.attachments: list[Attachment] = []
        self._ports: dict[tuple[str, int], int] = {}

    def port_of(self, ip: str, port: int) -> int:
        """The port bound for `port` at `ip`, chosen once and kept (443, else 8443)."""
        if (ip, port) not in self._ports:
            self._ports[(ip, port)] = listen_port(ip, port)
        return self._ports[(ip, port)]

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        if via != self.via:
            return None
        for attachment in self.attachments:
            if (namespace, service) in attachment.services:
                return attachment.address
        raise ValueError(
            f"no route of {self.label} sends traffic to Service {namespace}/{service} "
            "(is the route applied, and does its parent exist?)"
        )

    def sync(self, view: ClusterView) -> None:
        """Serve what `view` holds now: its objects as Envoy config, pushed to the Envoy."""
        with self._lock:
            resources, attachments = self._resources(view, *_lookups(view))
            self.envoy.push(resources)
            self.attachments = attachments

    def _resources(self, view: ClusterView, resolve, secret) -> _Served:
        """The Envoy resources and route attachments for `view` (called under the lock)."""
        raise NotImplementedError

    def stop(self) -> None:
        self.envoy.stop()

    def describe(self) -> str:
        lines = [self.label]
        for a in self.attachments:
            hosts = ", ".join(a.hostnames) or "any host"
            services = ", ".join(f"{ns}/{name}" for ns, name in a.services)
            lines.append(f"  {a.route} on {a.parent}: {a.address}, {hosts} -> {services}")
        if not self.attachments:
            lines.append("  no routes attached yet")
        return "\n".join(lines)


class EnvoyGateway(_RoutedFrontend):
    """Gateways (of any class but istio-waypoint) and the GRPCRoutes and HTTPRoutes on them."""

    name = "envoy-gateway"
    via = "gateway"
    label = (
        "Envoy Gateway: a real Envoy; grpclab's control plane turns Gateway, GRPCRoute and "
        "HTTPRoute into its listeners and routes (on kind, Envoy Gateway's controller does)"
    )

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        # Each Gateway is its own Envoy Service on Kubernetes, so each gets its own address.
        self._gateway_ips: dict[tuple[str, str], str] = {}

    def _resources(self, view: ClusterView, resolve, secret) -> _Served:
        # A Gateway of class istio-waypoint is Istio's, not Envoy Gateway's (the ambient add-on's).
        gateways = [
            g for g in _of_version(view, "Gateway", GATEWAY_API_VERSION) if not is_waypoint(g)
        ]
        routes = [
            *_of_version(view, "GRPCRoute", GATEWAY_API_VERSION),
            *_of_version(view, "HTTPRoute", GATEWAY_API_VERSION),
        ]
        for gateway in gateways:
            key = (gateway["metadata"]["namespace"], gateway["metadata"]["name"])
            if key not in self._gateway_ips:
                first = not self._gateway_ips
                self._gateway_ips[key] = (
                    self.envoy.ip if first else self._sandbox.block.take_pod_ip()
                )
        policies = _of_version(view, "BackendTrafficPolicy", ENVOY_GATEWAY_API_VERSION)
        return gateway_resources(
            gateways, routes, self._gateway_ips, self.port_of, resolve, secret, policies
        )


class TraefikEmulation(_RoutedFrontend):
    """Traefik's IngressRoute and ServersTransport, served by an Envoy (an emulation)."""

    name = "traefik"
    via = "traefik"
    label = (
        "Traefik (EMULATED by Envoy in the sandbox: IngressRoute translated to Envoy routes, "
        "round robin per request as Traefik's default; on kind it is real Traefik)"
    )

    def _resources(self, view: ClusterView, resolve, secret) -> _Served:
        routes = _of_version(view, "IngressRoute", TRAEFIK_API_VERSION)
        transports = _of_version(view, "ServersTransport", TRAEFIK_API_VERSION)
        return traefik_resources(routes, transports, self.envoy.ip, self.port_of, resolve, secret)

"""Istio's ambient mode in the sandbox: ztunnel EMULATED by Envoy tcp_proxy, waypoints as Envoys.

When the client's namespace carries `istio.io/dataplane-mode: ambient`, `target(...,
via="ambient")` hands out an address of the ztunnel stand-in for that Service port. ztunnel
is a Rust proxy; here an Envoy does what it does to a connection: pick one endpoint when it
opens and keep it (grpclab.xds.ambient). A Service bound to a waypoint (`istio.io/use-waypoint`
on it or its namespace, and a Gateway of class istio-waypoint) goes to that waypoint instead: a
real Envoy configured, like a sidecar, from the DestinationRules and VirtualServices. Not
emulated: HBONE, the mTLS tunnel on port 15008 between the hops; calls go in plain HTTP/2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.envoy import EnvoyProxy, push_config, start_envoy
from grpclab.cluster.sandbox.mesh import (
    ACK_TIMEOUT_S,
    ClientProxyAddon,
    istio_objects,
    service_port_problem,
    service_ports,
    wait_until_listening,
)
from grpclab.cluster.sandbox.topology import CLIENT_LOCALITY
from grpclab.notes import say
from grpclab.xds.ambient import (
    AMBIENT,
    DATAPLANE_MODE_LABEL,
    USE_WAYPOINT_LABEL,
    ZtunnelPort,
    in_ambient,
    is_waypoint,
    waypoint_for_service,
    waypoint_resources,
    ztunnel_resources,
)
from grpclab.xds.gateway import GATEWAY_API_VERSION

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

EMULATION_NOTE = (
    "Istio ambient: ztunnel is EMULATED here by Envoy tcp_proxy (one endpoint per connection, "
    "as ztunnel picks); waypoints are Envoys configured by grpclab's control plane; no HBONE "
    "or mTLS between them. On kind it is Istio's ztunnel and waypoint."
)

ServiceKey = tuple[str, str, int]  # (namespace, service, port)
WaypointKey = tuple[str, str]  # (namespace, Gateway name)


def _namespace(view: ClusterView, name: str) -> Mapping[str, Any] | None:
    return view.objects.get(("Namespace", "", name))


def waypoints(view: ClusterView) -> dict[WaypointKey, Mapping[str, Any]]:
    """Every Gateway of class istio-waypoint, by (namespace, name)."""
    return {
        (g["metadata"]["namespace"], g["metadata"]["name"]): g
        for g in view.of_kind("Gateway")
        if g.get("apiVersion") == GATEWAY_API_VERSION and is_waypoint(g)
    }


def bound_waypoint(view: ClusterView, namespace: str, service: str) -> str | None:
    obj = view.objects.get(("Service", namespace, service))
    if obj is None:
        return None
    return waypoint_for_service(obj, _namespace(view, namespace))


class AmbientAddon(ClientProxyAddon):
    """One ztunnel stand-in for the notebook's client, and one Envoy per waypoint in use."""

    name = "ambient"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)  # its listen IPs: ztunnel's address per Service port
        self._waypoint_ips: dict[tuple[WaypointKey, ServiceKey], str] = {}
        self.node_id = "ztunnel~" + self.ip + "~ztunnel.istio-system~istio-system.svc.cluster.local"
        self.ztunnel: EnvoyProxy | None = None
        self.waypoints: dict[WaypointKey, EnvoyProxy] = {}
        self._routes: dict[ServiceKey, str] = {}  # where ztunnel sends each: "pods" or a waypoint

    # -- Addon ----------------------------------------------------------------------------------

    def _proxy(self) -> EnvoyProxy | None:
        return self.ztunnel

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        if via != "ambient":
            return None
        with self._lock:
            view = self._check_in_ambient(namespace)
            if (
                view.objects.get(("Service", namespace, service), {})
                .get("spec", {})
                .get("clusterIP")
                == "None"
            ):
                raise ValueError(
                    f"service {namespace}/{service} is headless; ztunnel routes a Service's "
                    "cluster IP (apply cluster/manifests/base/service-clusterip.yaml)"
                )
            key = (namespace, service, port)
            address = (self._listen_ip(key), port)
            self._check_waypoint(view, key)
            if self.ztunnel is None:
                self._push(wait=False)
                self.ztunnel = self._start("ztunnel", self.node_id)
                say(EMULATION_NOTE)
            self._push(wait=True)
            for (waypoint, bound), ip in self._waypoint_ips.items():
                if bound == key and self._routes.get(key) == f"waypoint {waypoint[1]}":
                    wait_until_listening((ip, port), ACK_TIMEOUT_S)
            wait_until_listening(address, ACK_TIMEOUT_S)
            return f"{address[0]}:{port}"

    def stop(self) -> None:
        with self._lock:
            for proxy in [self.ztunnel, *self.waypoints.values()]:
                if proxy is not None:
                    self._sandbox.launcher.stop(proxy.process, grace=1.0)
            self.ztunnel = None
            self.waypoints = {}

    # -- what it serves -------------------------------------------------------------------------

    def _headline(self, admin: str) -> str:
        return (
            f"istio ambient: ztunnel EMULATED by Envoy tcp_proxy{admin}; waypoints are real "
            "Envoys, configured by grpclab's control plane; no HBONE"
        )

    def _path(self, namespace: str, service: str, ip: str, port: int) -> str:
        route = self._routes.get((namespace, service, port), "pods")
        return f"ztunnel {ip}:{port} -> {route}"

    def waypoint_process(self):
        """The first waypoint Envoy's process, or None (for Cluster.component)."""
        with self._lock:
            proxy = next(iter(self.waypoints.values()), None)
            return None if proxy is None else proxy.process

    # -- internals ------------------------------------------------------------------------------

    def _check_in_ambient(self, namespace: str) -> ClusterView:
        view = self._view
        if view is None or not in_ambient(_namespace(view, namespace)):
            raise ValueError(
                f"namespace {namespace} is not in the ambient mesh: label it "
                f"{DATAPLANE_MODE_LABEL}={AMBIENT} (apply cluster/manifests/ambient/"
                "namespace.yaml), as Istio needs before ztunnel carries its pods' traffic"
            )
        return view

    def _check_waypoint(self, view: ClusterView, key: ServiceKey) -> None:
        namespace, service, port = key
        name = bound_waypoint(view, namespace, service)
        if name is None:
            return
        if (namespace, name) not in waypoints(view):
            raise ValueError(
                f"service {namespace}/{service} is bound ({USE_WAYPOINT_LABEL}={name}) to a "
                f"waypoint that does not exist: no Gateway {namespace}/{name} of class "
                "istio-waypoint (apply cluster/manifests/ambient/waypoint.yaml)"
            )
        problem = service_port_problem(view, service, port, namespace)
        if problem:
            raise ValueError(problem.replace("sidecar", "waypoint"))

    def _start(self, name: str, node_id: str) -> EnvoyProxy:
        return start_envoy(
            self._sandbox.launcher,
            self._sandbox.xds,
            name,
            node_id,
            self.ip,
            self._sandbox.work_dir,
        )

    def _push(self, wait: bool) -> None:
        """Waypoints first (ztunnel sends to their listeners), then ztunnel."""
        view = self._view
        if view is None:
            return
        existing = waypoints(view)
        grpc_ports = {(p.namespace, p.service, p.port): p for p in service_ports(view)}
        per_waypoint: dict[WaypointKey, list] = {}
        ztunnel_ports = []
        for key, listen_ip in sorted(self._listen_ips.items()):
            namespace, service, port = key
            name = bound_waypoint(view, namespace, service)
            if name is None:
                endpoints = self._pod_endpoints(view, key)
                self._routes[key] = "pods"
            elif (namespace, name) in existing and key in grpc_ports:
                waypoint = (namespace, name)
                ip = self._waypoint_ips.setdefault(
                    (waypoint, key), self._sandbox.block.take_pod_ip()
                )
                per_waypoint.setdefault(waypoint, []).append((key, ip))
                endpoints = ((ip, port),)
                self._routes[key] = f"waypoint {name}"
            else:  # bound to a waypoint that is not there: nothing to send to
                endpoints = ()
                self._routes[key] = f"waypoint {name} (missing)"
            ztunnel_ports.append(ZtunnelPort(namespace, service, port, listen_ip, endpoints))
        for waypoint, bound in sorted(per_waypoint.items()):
            node_id = f"waypoint~{self.ip}~{waypoint[1]}.{waypoint[0]}~{waypoint[0]}.svc"
            resources = waypoint_resources(
                [grpc_ports[key] for key, _ in bound],
                {key: ip for key, ip in bound},
                istio_objects(view, "DestinationRule"),
                istio_objects(view, "VirtualService"),
                CLIENT_LOCALITY,  # the waypoint runs on the sandbox's one node, as the client
            )
            self._set(node_id, resources, wait and waypoint in self.waypoints)
            if waypoint not in self.waypoints and self.ztunnel is not None:
                self.waypoints[waypoint] = self._start(f"waypoint-{waypoint[1]}", node_id)
                self._set(node_id, resources, True)
        self._set(self.node_id, ztunnel_resources(ztunnel_ports), wait)
        for gone in [key for key in self.waypoints if key not in existing]:
            # Its Gateway was deleted: istiod removes the waypoint's Deployment too.
            self._sandbox.launcher.stop(self.waypoints.pop(gone).process, grace=1.0)

    def _pod_endpoints(self, view: ClusterView, key: ServiceKey) -> tuple[tuple[str, int], ...]:
        namespace, service, port = key
        obj = view.objects.get(("Service", namespace, service))
        if obj is None:
            return ()
        spec_port = next((p for p in obj["spec"]["ports"] if p["port"] == port), None)
        if spec_port is None:
            return ()
        found = []
        for backend in view.endpoints.get((namespace, service), ()):
            target = backend.target_port(spec_port)
            if target is not None:
                found.append((backend.ip, target))
        return tuple(found)

    def _set(self, node_id: str, resources: dict, wait: bool) -> None:
        what = node_id.split("~")[0]  # ztunnel or waypoint
        push_config(self._sandbox.xds, node_id, resources, wait, what, ACK_TIMEOUT_S)

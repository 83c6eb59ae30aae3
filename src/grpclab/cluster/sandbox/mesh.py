"""Istio in the sandbox: the notebook's client gets a sidecar, an Envoy fed by istiod's config.

When the client's namespace carries `istio-injection: enabled`, `target(...,
via="mesh")` hands out an address of the sidecar's outbound listener for that
Service port. The sidecar is a real Envoy whose clusters and routes are what
`grpclab.xds.istio` makes of the DestinationRules and VirtualServices in the
sandbox; applying, changing or deleting one is pushed to it over ADS at once.
What is emulated is istiod and the injection, not the data plane.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.envoy import EnvoyProxy, push_config, start_envoy
from grpclab.cluster.sandbox.topology import CLIENT_LOCALITY, region_of, zone_of
from grpclab.local_http import open_local
from grpclab.notes import say
from grpclab.xds.istio import (
    API_VERSIONS,
    Endpoint,
    ServicePort,
    sidecar_resources,
)

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

INJECTION_LABEL = "istio-injection"
GRPC_APP_PROTOCOLS = ("grpc", "http2", "kubernetes.io/h2c")
ACK_TIMEOUT_S = 10.0
EMULATION_NOTE = (
    "Istio's sidecar is emulated here by Envoy configured from the same DestinationRule "
    "and VirtualService; on kind it is Istio."
)


def in_mesh(view: ClusterView, namespace: str) -> bool:
    """Whether the namespace is labelled for sidecar injection."""
    labels = (view.objects.get(("Namespace", "", namespace), {}).get("metadata") or {}).get(
        "labels"
    ) or {}
    return labels.get(INJECTION_LABEL) == "enabled"


def istio_objects(view: ClusterView, kind: str) -> list[Mapping[str, Any]]:
    return [obj for obj in view.of_kind(kind) if obj.get("apiVersion") in API_VERSIONS]


def is_grpc_port(port: Mapping[str, Any]) -> bool:
    """Istio's protocol selection: appProtocol, else the port name's prefix."""
    if port.get("appProtocol"):
        return port["appProtocol"] in GRPC_APP_PROTOCOLS
    name = port.get("name") or ""
    return name.split("-")[0] in ("grpc", "http2")


def service_ports(view: ClusterView) -> list[ServicePort]:
    """Every gRPC port of every ClusterIP Service, with its ready endpoints and their zones."""
    ports = []
    for service in view.of_kind("Service"):
        if service["spec"].get("clusterIP") == "None":
            continue  # headless: clients reach pods directly, Istio has no VIP to route
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        backends = view.endpoints.get((namespace, name), ())
        for port in service["spec"]["ports"]:
            if not is_grpc_port(port):
                continue
            endpoints = tuple(
                Endpoint(
                    b.ip,
                    b.target_port(port),
                    region_of(b.labels),
                    zone_of(b.labels),
                )
                for b in backends
                if b.target_port(port) is not None
            )
            ports.append(ServicePort(namespace, name, port["port"], endpoints))
    return ports


def service_port_problem(view: ClusterView, service: str, port: int, namespace: str) -> str | None:
    """Why `service:port` cannot be reached through the mesh or xDS, or None."""
    obj = view.objects.get(("Service", namespace, service))
    if obj is None:
        return f'service "{service}" not found in namespace {namespace}'
    if obj["spec"].get("clusterIP") == "None":
        return (
            f"service {namespace}/{service} is headless; meshes and xDS route to a "
            "ClusterIP Service (apply cluster/manifests/base/service-clusterip.yaml)"
        )
    if obj["spec"].get("trafficDistribution"):
        return (
            f"service {namespace}/{service} sets trafficDistribution. Istio reads that field "
            "too (its proxies then prefer the client's zone, outlier detection or not), and "
            "the sandbox's istiod does not model it; route the mesh to a Service without it "
            "(cluster/manifests/base/service-clusterip.yaml), or use the kind backend"
        )
    spec_port = next(p for p in obj["spec"]["ports"] if p["port"] == port)
    if not is_grpc_port(spec_port):
        return (
            f"port {port} of service {namespace}/{service} is not declared gRPC. Istio's "
            "sidecars would detect HTTP/2 on it; the sandbox's sidecar does not detect, so "
            "declare it: name it grpc (or grpc-...) or set appProtocol: grpc"
        )
    return None


def wait_until_listening(address: tuple[str, int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(address, timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the mesh sidecar (Envoy) is not listening on {address[0]}:{address[1]}"
                ) from None
            time.sleep(0.02)


class ClientProxyAddon:
    """What the notebook client's mesh proxies share (Istio's sidecar, ambient's ztunnel):
    the cluster as last synced, their own pod IP, and one listener address per Service
    port they carry. A subclass pushes its config (`_push`) and says if it runs."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._lock = threading.RLock()
        self._view: ClusterView | None = None
        self._listen_ips: dict[tuple[str, str, int], str] = {}  # (namespace, service, port)
        self.ip = sandbox.block.take_pod_ip()

    name = ""  # the add-on's name, and the `via` of its targets

    def sync(self, view: ClusterView) -> None:
        with self._lock:
            self._view = view
            self._push(wait=self._proxy() is not None)

    def describe(self) -> str:
        """What plays the proxy here, and where each Service port reached through it goes."""
        proxy = self._proxy()
        admin = f" (admin {proxy.admin_url('/')})" if proxy else " (not started yet)"
        lines = [self._headline(admin)]
        for (namespace, service, port), ip in sorted(self._listen_ips.items()):
            path = self._path(namespace, service, ip, port)
            lines.append(f"  {service}.{namespace}:{port} -> {path}")
        if not self._listen_ips:
            lines.append(f"  no Service reached through it yet (target(..., via={self.name!r}))")
        return "\n".join(lines)

    def _listen_ip(self, key: tuple[str, str, int]) -> str:
        """The address of the listener for one Service port, taken on first use."""
        if key not in self._listen_ips:
            self._listen_ips[key] = self._sandbox.block.take_pod_ip()
        return self._listen_ips[key]

    def _proxy(self) -> EnvoyProxy | None:
        """The client's own proxy, once it runs."""
        raise NotImplementedError

    def _push(self, wait: bool) -> None:
        raise NotImplementedError

    def _headline(self, admin: str) -> str:
        """What plays the proxy here; `admin` says where its admin API is, or that it is not up."""
        raise NotImplementedError

    def _path(self, namespace: str, service: str, ip: str, port: int) -> str:
        """Where a call to one Service port goes from its listener at `ip`."""
        raise NotImplementedError


class MeshAddon(ClientProxyAddon):
    """The notebook client's sidecar: one Envoy, one listener per Service port it reaches."""

    name = "mesh"

    def __init__(self, sandbox: Sandbox) -> None:
        super().__init__(sandbox)
        # Istio's node id shape: sidecar~<pod IP>~<pod>.<namespace>~<namespace>.svc.cluster.local
        namespace = sandbox.namespace
        self.node_id = f"sidecar~{self.ip}~notebook.{namespace}~{namespace}.svc.cluster.local"
        self.envoy: EnvoyProxy | None = None
        self._versions: dict[str, int] = {}  # latest version pushed, per type

    def _proxy(self) -> EnvoyProxy | None:
        return self.envoy

    def _push(self, wait: bool) -> None:
        view = self._view
        if view is None:
            return
        xds = self._sandbox.xds
        resources = sidecar_resources(
            service_ports(view),
            self._listen_ips,
            istio_objects(view, "DestinationRule"),
            istio_objects(view, "VirtualService"),
            CLIENT_LOCALITY,
        )
        versions = push_config(
            xds, self.node_id, resources, wait, "the mesh sidecar", ACK_TIMEOUT_S
        )
        self._versions.update(versions)

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        if via != "mesh":
            return None
        with self._lock:
            view = self._check_in_mesh(namespace)
            problem = service_port_problem(view, service, port, namespace)
            if problem:
                raise ValueError(problem)
            address = (self._listen_ip((namespace, service, port)), port)
            self._start_with_latest_config()
            # Return only once the listener accepts connections, so the first call cannot
            # race Envoy's listener warm-up.
            wait_until_listening(address, ACK_TIMEOUT_S)
            return f"{address[0]}:{port}"

    def _check_in_mesh(self, namespace: str) -> ClusterView:
        view = self._view
        if view is None or not in_mesh(view, namespace):
            raise ValueError(
                f"namespace {namespace} is not in the mesh: label it "
                f"{INJECTION_LABEL}=enabled (apply cluster/manifests/istio/namespace.yaml), "
                "as Istio needs before it injects a sidecar"
            )
        return view

    def _start_with_latest_config(self) -> None:
        """Start the sidecar Envoy (once), and return when it runs the latest config."""
        if self.envoy is None:
            self._push(wait=False)
            self.envoy = start_envoy(
                self._sandbox.launcher,
                self._sandbox.xds,
                "istio-proxy",
                self.node_id,
                self.ip,
                self._sandbox.work_dir,
            )
            # A note for the learner, not an error: the cell's output, not a red stderr block.
            say(EMULATION_NOTE)
        self._push(wait=True)
        if not self._sandbox.xds.wait_acked(self.node_id, self._versions, ACK_TIMEOUT_S):
            raise RuntimeError("the mesh sidecar (Envoy) did not take its config in time")

    def _headline(self, admin: str) -> str:
        return (
            f"istio: the notebook client's sidecar is a real Envoy{admin}; grpclab's control "
            "plane plays istiod and the injection"
        )

    def _path(self, namespace: str, service: str, ip: str, port: int) -> str:
        return f"outbound listener {ip}:{port}"

    def admin_for(self, target: str) -> str | None:
        """The sidecar's admin URL when `target` is one of its outbound listeners, else None."""
        with self._lock:
            listening = {f"{ip}:{port}" for (_, _, port), ip in self._listen_ips.items()}
            if self.envoy is None or target not in listening:
                return None
            return self.envoy.admin_url("")

    def config_dump(self) -> dict[str, Any]:
        """The sidecar's own view of its config, from Envoy's admin API.

        Like a pod created in a labelled namespace, the client gets its sidecar on first
        use; here that may be this call.
        """
        with self._lock:
            self._check_in_mesh(self._sandbox.namespace)
            self._start_with_latest_config()
        return self._admin("/config_dump")

    def _admin(self, path: str) -> dict[str, Any]:
        if self.envoy is None:
            raise RuntimeError("the sidecar has not started: call target(..., via='mesh') first")
        with open_local(self.envoy.admin_url(path), timeout=5) as reply:
            return json.loads(reply.read())

    def stop(self) -> None:
        with self._lock:
            if self.envoy is not None:
                self._sandbox.launcher.stop(self.envoy.process, grace=1.0)
                self.envoy = None

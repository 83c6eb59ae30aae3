"""What the sandbox's front doors share: ingress controllers, gateways and mesh proxies.

Each one takes a loopback IP of its own, resolves a Service port to the ready pods behind
it (as an EndpointSlice lists them), and, when it is an Envoy, is fed by grpclab's ADS
server under a node id of its own.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.envoy import EnvoyProxy, start_envoy
from grpclab.xds.gateway import Backend
from grpclab.xds.server import NAMED_TYPES

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

# A port below 1024 needs root (or CAP_NET_BIND_SERVICE); the sandbox then listens this much
# higher, as many Helm charts do inside the pod (443 -> 8443).
UNPRIVILEGED_OFFSET = 8000


def service_backend(
    view: ClusterView, namespace: str, service: str, port: int | str
) -> Backend | None:
    """The Service port `port` (number or name) with its ready endpoints; None if either is
    missing (a controller then answers 503, as ingress-nginx does)."""
    obj = view.objects.get(("Service", namespace, service))
    if obj is None:
        return None
    for item in obj["spec"].get("ports") or []:
        if port in (item.get("name"), item["port"]) or str(port) == str(item["port"]):
            endpoints = tuple(
                sorted(
                    (address.ip, address.target_port(item))
                    for address in view.endpoints.get((namespace, service), ())
                    if address.target_port(item) is not None
                )
            )
            return Backend(namespace, service, item["port"], item.get("appProtocol"), endpoints)
    return None


def listen_port(ip: str, port: int) -> int:
    """`port` if this process may listen on it at `ip`, else `port + 8000` (443 -> 8443)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((ip, port))
        return port
    except PermissionError:
        return port + UNPRIVILEGED_OFFSET
    except OSError as error:
        # Something listens on 0.0.0.0:port (a system nginx on :80, say): step aside too.
        if error.errno == errno.EADDRINUSE:
            return port + UNPRIVILEGED_OFFSET
        raise
    finally:
        probe.close()


class EnvoyFrontend:
    """An Envoy of the sandbox on its own loopback IP, fed by ADS under its own node id."""

    def __init__(self, sandbox: Sandbox, name: str) -> None:
        self.name = name
        self.node_id = name
        self._sandbox = sandbox
        self.ip = sandbox.block.take_pod_ip()
        # Started through the sandbox's launcher, so it ends with the sandbox, however it ends.
        self.proxy: EnvoyProxy = start_envoy(
            sandbox.launcher, sandbox.xds, name, name, self.ip, sandbox.work_dir
        )

    def push(self, resources: Mapping[str, Mapping[str, Message]], timeout: float = 10.0) -> None:
        """Send a full snapshot and wait until this Envoy took it; a refusal is an error."""
        xds = self._sandbox.xds
        nacks_before = len(xds.nacks)
        versions = xds.set_resources(self.node_id, resources)
        # Endpoints and routes are asked for by name: once the last cluster or listener is
        # gone, Envoy stops asking, and an empty set is never acknowledged.
        versions = {t: v for t, v in versions.items() if t not in NAMED_TYPES or resources[t]}
        if not versions:
            return
        if not xds.wait_acked(self.node_id, versions, timeout=timeout):
            raise RuntimeError(f"{self.name} (Envoy) did not confirm its new config in {timeout} s")
        refused = [n for n in xds.nacks[nacks_before:] if n.node_id == self.node_id]
        if refused:
            raise RuntimeError(f"{self.name} (Envoy) refused its config: {refused[-1].message}")

    def stop(self) -> None:
        self._sandbox.launcher.stop(self.proxy.process)

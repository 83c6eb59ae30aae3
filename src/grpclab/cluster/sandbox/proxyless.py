"""Proxyless xDS in the sandbox: gRPC channels with `xds:///` targets, fed by grpclab.xds.

Nothing is emulated here: the control plane is grpclab's ADS server, and the
client is grpcio's own xDS resolver and balancer. `target(..., via="xds")`
writes the bootstrap file and points $GRPC_XDS_BOOTSTRAP at it, because grpcio
reads the bootstrap when a channel to an xDS target is created, in the
process that creates it (here the notebook's).
"""

from __future__ import annotations

import json
import os
import threading
from typing import TYPE_CHECKING, Any

from grpclab.cluster.sandbox.addons import ClusterView
from grpclab.cluster.sandbox.mesh import (
    istio_objects,
    service_port_problem,
    service_ports,
)
from grpclab.cluster.sandbox.topology import CLIENT_LOCALITY
from grpclab.notes import say
from grpclab.xds.istio import service_host
from grpclab.xds.proxyless import NODE_ID, bootstrap, proxyless_resources, xds_target

if TYPE_CHECKING:
    from grpclab.cluster.sandbox import Sandbox

BOOTSTRAP_ENV = "GRPC_XDS_BOOTSTRAP"
# grpcio prefers the file; the inline variant would shadow nothing, but a stale one from
# another sandbox must not be read instead of ours when the file variable is unset later.
BOOTSTRAP_CONFIG_ENV = "GRPC_XDS_BOOTSTRAP_CONFIG"
ACK_TIMEOUT_S = 5.0


class ProxylessAddon:
    """Serves `xds:///` channels of this process; every change is pushed to them live."""

    name = "xds"

    def __init__(self, sandbox: Sandbox, node_id: str = NODE_ID) -> None:
        self._sandbox = sandbox
        self._lock = threading.RLock()
        self.node_id = node_id
        self.bootstrap_path = sandbox.work_dir / "xds-bootstrap.json"
        self._announced = False
        self._view: ClusterView | None = None

    def bootstrap(self) -> dict[str, Any]:
        """The bootstrap this sandbox's gRPC clients read."""
        return bootstrap(self._sandbox.xds.address, self.node_id, CLIENT_LOCALITY)

    def sync(self, view: ClusterView) -> None:
        with self._lock:
            self._view = view
            resources = proxyless_resources(
                service_ports(view),
                istio_objects(view, "DestinationRule"),
                istio_objects(view, "VirtualService"),
                CLIENT_LOCALITY,
            )
            xds = self._sandbox.xds
            versions = xds.set_resources(self.node_id, resources)
            # A client that is connected gets the change before apply() returns. A NACK
            # also ends the wait: it is the client's answer, and it is kept in xds.nacks.
            if versions and xds.connected(self.node_id):
                xds.wait_acked(self.node_id, versions, timeout=ACK_TIMEOUT_S)

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        if via != "xds":
            return None
        with self._lock:
            if self._view is None:
                raise RuntimeError("the xDS addon has not seen the cluster yet (add_addon first)")
            problem = service_port_problem(self._view, service, port, namespace)
            if problem:
                raise ValueError(problem)
            self.bootstrap_path.write_text(json.dumps(self.bootstrap(), indent=2) + "\n")
            os.environ[BOOTSTRAP_ENV] = str(self.bootstrap_path)
            os.environ.pop(BOOTSTRAP_CONFIG_ENV, None)
            if not self._announced:
                self._announced = True
                say(
                    f"proxyless xDS: grpclab's control plane at {self._sandbox.xds.address} "
                    f"serves node {self.node_id}; {BOOTSTRAP_ENV}={self.bootstrap_path}",
                )
        return xds_target(service_host(service, namespace), port)

    def stop(self) -> None:
        if os.environ.get(BOOTSTRAP_ENV) == str(self.bootstrap_path):
            del os.environ[BOOTSTRAP_ENV]

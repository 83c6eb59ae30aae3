"""How sandbox features beyond Pods and Services plug in (meshes, gateways, Prometheus).

An addon sees a consistent snapshot of the cluster after every change and
drives its own data plane from it. The sandbox core never needs to know what
a DestinationRule or a scrape target is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class EndpointAddress:
    """One ready pod behind a Service, as an EndpointSlice lists it."""

    pod: str
    ip: str
    ports: Mapping[str, int]  # containerPort name -> number (unnamed ports under str(number))
    labels: Mapping[str, str] = field(default_factory=dict)

    def target_port(self, service_port: Mapping[str, Any]) -> int | None:
        """Where a Service port's traffic goes on this pod, as the EndpointSlice controller
        resolves it: a number as it is (no containerPort need declare it), a name through the
        pod's containerPorts; None when the pod has no port of that name."""
        target = service_port.get("targetPort") or service_port["port"]
        if isinstance(target, int) or str(target).isdigit():
            return int(target)
        return self.ports.get(target)


@dataclass(frozen=True)
class ClusterView:
    """A snapshot of the sandbox: objects, cluster IPs, ready endpoints and pods."""

    objects: Mapping[tuple[str, str, str], Mapping[str, Any]]  # (kind, namespace, name) -> object
    cluster_ips: Mapping[tuple[str, str], str]  # (namespace, service) -> cluster IP
    endpoints: Mapping[
        tuple[str, str], tuple[EndpointAddress, ...]
    ]  # (namespace, service) -> ready
    pods: tuple[EndpointAddress, ...]  # every running pod, ready or not (Prometheus scrapes all)

    def of_kind(self, kind: str, namespace: str | None = None) -> list[Mapping[str, Any]]:
        return [
            obj
            for (k, ns, _), obj in sorted(self.objects.items())
            if k == kind and (namespace is None or ns == namespace)
        ]


class Addon(Protocol):
    """A sandbox feature. `sync` runs outside the sandbox's lock, after every change."""

    name: str

    def sync(self, view: ClusterView) -> None: ...

    def target(self, service: str, port: int, namespace: str, via: str) -> str | None:
        """A target string for `via` values this addon owns (e.g. "mesh"), else None."""
        ...

    def stop(self) -> None: ...

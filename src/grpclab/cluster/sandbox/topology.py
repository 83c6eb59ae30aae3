"""Zones in the sandbox: where a pod runs, where the client runs, and what kube-proxy does
with a Service's `trafficDistribution`.

The sandbox has no nodes. A pod's zone is its own `topology.kubernetes.io/zone` label
(zone-a without one), where a real cluster copies the label from the pod's node into the
EndpointSlice. The client (the notebook, a load run) and the kube-proxy it goes through are
on one node in local/zone-a, as grpclab's kind cluster puts load Jobs on its zone-a workers
(cluster/kind.yaml taints the zone-b node).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from grpclab.cluster.manifests.sandbox_rules import TRAFFIC_DISTRIBUTIONS
from grpclab.cluster.sandbox.addons import EndpointAddress

ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
SANDBOX_REGION = "local"
SANDBOX_ZONE = "zone-a"
CLIENT_LOCALITY = (SANDBOX_REGION, SANDBOX_ZONE)
CLIENT_ZONE = SANDBOX_ZONE


def zone_of(labels: Mapping[str, str]) -> str:
    return labels.get(ZONE_LABEL, SANDBOX_ZONE)


def region_of(labels: Mapping[str, str]) -> str:
    return labels.get(REGION_LABEL, SANDBOX_REGION)


def zone_hints(
    service: Mapping[str, Any], ready: Sequence[EndpointAddress]
) -> dict[str, tuple[str, ...]]:
    """The EndpointSlice controller's hints, pod IP -> forZones: with trafficDistribution
    PreferClose each ready endpoint is hinted for its own zone; without it, none."""
    if (service.get("spec") or {}).get("trafficDistribution") not in TRAFFIC_DISTRIBUTIONS:
        return {}
    return {b.ip: (zone_of(b.labels),) for b in ready}


def kube_proxy_endpoints(
    service: Mapping[str, Any], ready: Sequence[EndpointAddress], node_zone: str = CLIENT_ZONE
) -> tuple[EndpointAddress, ...]:
    """The ready endpoints kube-proxy on a node in `node_zone` sends the Service's traffic
    to: those hinted for its zone when every endpoint has a hint and one is for its zone,
    else all of them (kubernetes pkg/proxy/topology.go, topologyModeFromHints)."""
    hints = zone_hints(service, ready)
    if not ready or any(b.ip not in hints for b in ready):
        return tuple(ready)
    close = tuple(b for b in ready if node_zone in hints[b.ip])
    return close or tuple(ready)

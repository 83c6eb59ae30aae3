"""kube-proxy as Envoy config: one tcp_proxy listener per ClusterIP Service port.

iptables-mode kube-proxy picks a backend at random when a connection opens
and never again for that connection. Envoy's tcp_proxy with a RANDOM cluster
does exactly that, which is the behaviour the L4 notebook needs to show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import any_pb2, duration_pb2

from grpclab.xds.server import CLUSTER, ENDPOINT, LISTENER

NODE_ID = "kube-proxy"


@dataclass(frozen=True)
class ServicePortEndpoints:
    """One port of a ClusterIP Service and the ready endpoints behind it."""

    namespace: str
    service: str
    cluster_ip: str
    port: int
    endpoints: tuple[tuple[str, int], ...]  # (pod IP, target port), ready pods only

    @property
    def name(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port}"


def ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def socket_address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def load_assignment(cluster_name: str, endpoints: Sequence[tuple[str, int]]):
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=cluster_name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(ip, port))
                    )
                    for ip, port in endpoints
                ]
            )
        ],
    )


def kube_proxy_resources(ports: Sequence[ServicePortEndpoints]) -> dict[str, dict]:
    """Listeners, clusters and endpoints that make Envoy act as kube-proxy."""
    listeners, clusters, assignments = {}, {}, {}
    for item in ports:
        clusters[item.name] = cluster_pb2.Cluster(
            name=item.name,
            type=cluster_pb2.Cluster.EDS,
            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(eds_config=ads_source()),
            lb_policy=cluster_pb2.Cluster.RANDOM,
            connect_timeout=duration_pb2.Duration(seconds=1),
        )
        assignments[item.name] = load_assignment(item.name, item.endpoints)
        proxy = any_pb2.Any()
        proxy.Pack(tcp_proxy_pb2.TcpProxy(stat_prefix=item.name, cluster=item.name))
        listeners[item.name] = listener_pb2.Listener(
            name=item.name,
            address=socket_address(item.cluster_ip, item.port),
            filter_chains=[
                listener_components_pb2.FilterChain(
                    filters=[listener_components_pb2.Filter(name="tcp_proxy", typed_config=proxy)]
                )
            ],
        )
    return {CLUSTER: clusters, ENDPOINT: assignments, LISTENER: listeners}

"""Config for proxyless gRPC: what an `xds:///host:port` channel asks the control plane for.

A gRPC client with an xDS target subscribes to a Listener named after the target.
Its api_listener carries an HttpConnectionManager whose routes (RDS, or inline)
pick a cluster; the Cluster says "endpoints come from EDS", and the
ClusterLoadAssignment lists them by locality, each locality with a weight.
There is no proxy: the channel balances calls itself, with the policy the
Cluster names. The Cluster is built as istiod builds it for gRPC (a bare EDS
cluster). A DestinationRule's load balancer is passed on as written, as istiod
does since Istio 1.29 (before, it dropped LEAST_REQUEST with a warning in its
log), so a policy gRPC cannot run is refused by the client for all to see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from grpclab.xds.istio import (
    LB_POLICIES,
    IstioConfigError,
    ServicePort,
    http_connection_manager,
    load_assignment,
    object_label,
    route_configuration,
    rule_for_host,
)
from grpclab.xds.kube_proxy import ads_source
from grpclab.xds.server import CLUSTER, ENDPOINT, LISTENER, ROUTE

NODE_ID = "proxyless-grpc"
# gRPC's name for each lb_policy it can run from a Cluster; the others get a NACK.
GRPC_LB_NAMES = {
    cluster_pb2.Cluster.ROUND_ROBIN: "round_robin",
    cluster_pb2.Cluster.RING_HASH: "ring_hash",
}
# Without a DestinationRule the Cluster's lb_policy is left at its default, ROUND_ROBIN,
# as istiod leaves it for gRPC; istiod's LEAST_REQUEST default applies to sidecars only.
PROXYLESS_DEFAULT_LB = "ROUND_ROBIN"


def listener_name(host: str, port: int) -> str:
    """The Listener an `xds:///host:port` channel subscribes to: the target's authority."""
    return f"{host}:{port}"


def xds_target(host: str, port: int) -> str:
    return f"xds:///{listener_name(host, port)}"


def api_listener(
    name: str, route_name: str | None = None, route_config: Message | None = None
) -> listener_pb2.Listener:
    """A Listener for a gRPC client: no address, just an HCM with RDS or inline routes."""
    manager = any_pb2.Any()
    manager.Pack(http_connection_manager(name, route_name=route_name, route_config=route_config))
    return listener_pb2.Listener(
        name=name, api_listener=api_listener_pb2.ApiListener(api_listener=manager)
    )


def eds_cluster(name: str, rule: Mapping[str, Any] | None = None) -> cluster_pb2.Cluster:
    """A Cluster whose endpoints come from EDS over the same ADS stream."""
    simple = PROXYLESS_DEFAULT_LB
    if rule is not None:
        policy = (rule.get("spec") or {}).get("trafficPolicy") or {}
        simple = (policy.get("loadBalancer") or {}).get("simple", PROXYLESS_DEFAULT_LB)
    if simple not in LB_POLICIES:
        raise IstioConfigError(
            object_label(rule or {}),
            "spec.trafficPolicy.loadBalancer.simple",
            f"{simple!r} is not one of {', '.join(LB_POLICIES)}",
        )
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=name
        ),
        lb_policy=LB_POLICIES[simple],
    )


def grpc_supports(cluster: cluster_pb2.Cluster) -> bool:
    """Whether Python gRPC runs this Cluster's lb_policy (if not, it NACKs the Cluster)."""
    return cluster.lb_policy in GRPC_LB_NAMES


def proxyless_resources(
    ports: Sequence[ServicePort],
    destination_rules: Sequence[Mapping[str, Any]] = (),
    virtual_services: Sequence[Mapping[str, Any]] = (),
    client_locality: tuple[str, str] | None = None,
    inline_routes: bool = False,
) -> dict[str, dict[str, Message]]:
    """Listeners, routes, clusters and endpoints that `xds:///` channels to `ports` need."""
    listeners: dict[str, Message] = {}
    routes: dict[str, Message] = {}
    clusters: dict[str, Message] = {}
    assignments: dict[str, Message] = {}
    ports_of: dict[str, list[int]] = {}
    for target in ports:
        ports_of.setdefault(target.host, []).append(target.port)
    for target in ports:
        rule = rule_for_host(destination_rules, target.host)
        service = rule_for_host(virtual_services, target.host, field="hosts")
        name = listener_name(target.host, target.port)
        routes_for_port = route_configuration(target, service, ports_of)
        # gRPC picks the virtual host by the target's authority.
        del routes_for_port.virtual_hosts[0].domains[:]
        routes_for_port.virtual_hosts[0].domains.extend([name, target.host])
        if inline_routes:
            listeners[name] = api_listener(name, route_config=routes_for_port)
        else:
            listeners[name] = api_listener(name, route_name=routes_for_port.name)
            routes[routes_for_port.name] = routes_for_port
        clusters[target.cluster_name] = eds_cluster(target.cluster_name, rule)
        assignments[target.cluster_name] = load_assignment(
            target.cluster_name, target.endpoints, rule, client_locality
        )
    resources = {LISTENER: listeners, CLUSTER: clusters, ENDPOINT: assignments}
    if not inline_routes:
        resources[ROUTE] = routes
    return resources


def bootstrap(
    server_uri: str,
    node_id: str = NODE_ID,
    locality: tuple[str, str] | None = None,
    cluster: str = "grpclab",
) -> dict[str, Any]:
    """The bootstrap a gRPC client reads from $GRPC_XDS_BOOTSTRAP: where the control plane
    is, how to reach it, and who this client is (its node id picks its config)."""
    node: dict[str, Any] = {"id": node_id, "cluster": cluster}
    if locality is not None:
        node["locality"] = {"region": locality[0], "zone": locality[1]}
    return {
        "xds_servers": [
            {
                "server_uri": server_uri,
                "channel_creds": [{"type": "insecure"}],
                # gRPC releases from before xDS v2 was dropped need this to speak v3;
                # current ones speak only v3 and accept it.
                "server_features": ["xds_v3"],
            }
        ],
        "node": node,
    }

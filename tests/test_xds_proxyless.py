"""Config for proxyless gRPC clients: api_listener, RDS or inline routes, EDS, localities."""

from __future__ import annotations

import json

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from support import REPO

from grpclab.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, proxyless
from grpclab.xds.istio import Endpoint, IstioConfigError, ServicePort

HOST = "grpc-server.production.svc.cluster.local"
NAME = f"{HOST}:50051"
CLUSTER_NAME = f"outbound|50051||{HOST}"
PORT = ServicePort(
    "production",
    "grpc-server",
    50051,
    (
        Endpoint("127.42.9.10", 50051, "local", "zone-a"),
        Endpoint("127.42.9.11", 50051, "local", "zone-a"),
        Endpoint("127.42.9.12", 50051, "local", "zone-b"),
    ),
)


def manifest(path: str) -> dict:
    return yaml.safe_load((REPO / "cluster" / "manifests" / path).read_text())


def manager_of(listener) -> hcm_pb2.HttpConnectionManager:
    manager = hcm_pb2.HttpConnectionManager()
    assert listener.api_listener.api_listener.Unpack(manager)
    return manager


def test_the_target_names_the_listener_the_client_asks_for():
    assert proxyless.xds_target(HOST, 50051) == f"xds:///{NAME}"
    assert proxyless.listener_name(HOST, 50051) == NAME


def test_the_listener_is_an_api_listener_with_rds_over_ads():
    resources = proxyless.proxyless_resources([PORT])
    listener = resources[LISTENER][NAME]
    assert not listener.HasField("address")  # no socket: the gRPC channel is the listener
    manager = manager_of(listener)
    assert manager.rds.config_source.HasField("ads")
    assert manager.rds.route_config_name == NAME
    assert [f.name for f in manager.http_filters] == ["envoy.filters.http.router"]
    route = resources[ROUTE][NAME]
    assert list(route.virtual_hosts[0].domains) == [NAME, HOST]
    assert route.virtual_hosts[0].routes[0].route.cluster == CLUSTER_NAME


def test_inline_routes_put_the_route_configuration_in_the_listener():
    resources = proxyless.proxyless_resources([PORT], inline_routes=True)
    assert ROUTE not in resources
    manager = manager_of(resources[LISTENER][NAME])
    assert not manager.HasField("rds")
    assert manager.route_config.virtual_hosts[0].routes[0].route.cluster == CLUSTER_NAME


def test_the_cluster_takes_its_endpoints_from_eds():
    cluster = proxyless.proxyless_resources([PORT])[CLUSTER][CLUSTER_NAME]
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.service_name == CLUSTER_NAME
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert proxyless.grpc_supports(cluster)


def test_a_least_request_rule_is_passed_on_for_the_client_to_refuse():
    rule = manifest("istio/destinationrule-least-request.yaml")
    cluster = proxyless.proxyless_resources([PORT], [rule])[CLUSTER][CLUSTER_NAME]
    assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert not proxyless.grpc_supports(cluster)


def test_a_round_robin_rule_gives_round_robin():
    rule = manifest("istio/destinationrule.yaml")
    cluster = proxyless.proxyless_resources([PORT], [rule])[CLUSTER][CLUSTER_NAME]
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert proxyless.GRPC_LB_NAMES[cluster.lb_policy] == "round_robin"


def test_an_unknown_load_balancer_is_refused_naming_object_and_field():
    rule = manifest("istio/destinationrule.yaml")
    rule["spec"]["trafficPolicy"]["loadBalancer"]["simple"] = "WEIGHTED"
    with pytest.raises(IstioConfigError) as caught:
        proxyless.eds_cluster(CLUSTER_NAME, rule)
    assert caught.value.object == "DestinationRule production/grpc-server"
    assert caught.value.field == "spec.trafficPolicy.loadBalancer.simple"


def test_every_locality_has_a_weight():
    assignment = proxyless.proxyless_resources([PORT])[ENDPOINT][CLUSTER_NAME]
    assert [(e.locality.zone, e.load_balancing_weight.value) for e in assignment.endpoints] == [
        ("zone-a", 2),
        ("zone-b", 1),
    ]


def test_locality_weights_follow_the_rules_distribute_for_the_clients_locality():
    rule = manifest("xds/destinationrule-locality.yaml")
    assignment = proxyless.proxyless_resources([PORT], [rule], client_locality=("local", "zone-a"))[
        ENDPOINT
    ][CLUSTER_NAME]
    weights = {e.locality.zone: e.load_balancing_weight.value for e in assignment.endpoints}
    assert weights == {"zone-a": 50, "zone-b": 50}


def test_the_virtual_service_retries_reach_the_grpc_client():
    service = manifest("istio/virtualservice.yaml")
    route = proxyless.proxyless_resources([PORT], virtual_services=[service])[ROUTE][NAME]
    policy = route.virtual_hosts[0].routes[0].route.retry_policy
    assert policy.retry_on == "unavailable,resource-exhausted,internal"
    assert policy.num_retries.value == 3


def test_the_bootstrap_names_the_server_the_node_and_its_locality():
    data = proxyless.bootstrap("127.42.9.1:18000", "client-7", ("local", "zone-a"))
    json.dumps(data)  # it goes into a file as JSON
    (server,) = data["xds_servers"]
    assert server["server_uri"] == "127.42.9.1:18000"
    assert server["channel_creds"] == [{"type": "insecure"}]
    assert server["server_features"] == ["xds_v3"]
    assert data["node"] == {
        "id": "client-7",
        "cluster": "grpclab",
        "locality": {"region": "local", "zone": "zone-a"},
    }
    assert "locality" not in proxyless.bootstrap("127.42.9.1:18000")["node"]

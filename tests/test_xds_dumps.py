"""grpclab.xds.dumps on the config dump of a real sidecar Envoy, taken from a running sandbox."""

from __future__ import annotations

import copy

import pytest
from support import BASE, ISTIO

import grpclab
from grpclab.xds.dumps import NotInDumpError, dumped_cluster, dumped_virtual_host

CLUSTER_NAME = "outbound|50051||grpc-server.production.svc.cluster.local"
HOST = "grpc-server.production.svc.cluster.local"


@pytest.fixture(scope="module")
def lab():
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(BASE)
        sandbox.apply(ISTIO / "namespace.yaml")
        sandbox.apply(ISTIO / "destinationrule.yaml")
        sandbox.apply(ISTIO / "virtualservice.yaml")
        sandbox.wait_ready("grpc-server", timeout=60)
        sandbox.target("grpc-server", via="mesh")
        yield sandbox


@pytest.fixture()
def dump(lab) -> dict:
    return lab.mesh_config_dump()


def test_the_cluster_is_what_the_destination_rule_became(lab, dump):
    cluster = dumped_cluster(dump, CLUSTER_NAME)
    # Envoy's JSON leaves ROUND_ROBIN (the default) out; the helper says it.
    assert cluster["lb_policy"] == "ROUND_ROBIN"
    assert cluster["outlier_detection"]["consecutive_5xx"] == 5
    assert cluster["circuit_breakers"]["thresholds"][0]["max_connections"] == 100
    lab.apply(ISTIO / "destinationrule-least-request.yaml")
    try:
        changed = dumped_cluster(lab.mesh_config_dump(), CLUSTER_NAME)
    finally:
        lab.apply(ISTIO / "destinationrule.yaml")
    assert changed["lb_policy"] == "LEAST_REQUEST"


def test_static_clusters_are_found_too(lab, dump):
    # The sidecar's one static cluster (from its bootstrap) is its way to the control plane.
    xds = dumped_cluster(dump, "grpclab-xds")
    assert xds["type"] == "STATIC"
    (endpoint,) = xds["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert f"{address['address']}:{address['port_value']}" == lab.xds.address


def test_an_absent_cluster_names_the_clusters_the_dump_has(dump):
    with pytest.raises(NotInDumpError) as error:
        dumped_cluster(dump, "outbound|50051||no-such.production.svc.cluster.local")
    message = str(error.value)
    assert "'outbound|50051||no-such.production.svc.cluster.local' is not active" in message
    assert f"dynamic_active_clusters: {CLUSTER_NAME}" in message
    assert "static_clusters: grpclab-xds" in message


def test_the_virtual_host_carries_the_virtual_service_retries(dump):
    vhost = dumped_virtual_host(dump, f"{HOST}:50051")
    (route,) = vhost["routes"]
    assert route["route"]["cluster"] == CLUSTER_NAME
    assert route["route"]["timeout"] == "10s"
    policy = route["route"]["retry_policy"]
    assert policy["retry_on"] == "unavailable,resource-exhausted,internal"
    assert policy["num_retries"] == 3 and policy["per_try_timeout"] == "2s"
    assert dumped_virtual_host(dump, HOST) == vhost  # with or without the port


def test_an_istiod_shaped_route_config_is_read_by_domain(dump):
    """The real dump's routes, renamed and listed the way istiod 1.16+ does it.

    istiod names the route config after the port, lists the Service's names and cluster IP
    without ports (and sets ignore_port_in_host_matching), and adds a catch-all virtual host
    for traffic to unknown hosts.
    """
    istiod = copy.deepcopy(dump)
    routes = next(c for c in istiod["configs"] if c["@type"].endswith(".RoutesConfigDump"))
    config = routes["dynamic_route_configs"][0]["route_config"]
    config["name"] = "50051"
    config["ignore_port_in_host_matching"] = True
    config["virtual_hosts"][0]["domains"] = [
        HOST,
        "grpc-server",
        "grpc-server.production.svc",
        "grpc-server.production",
        "10.96.10.20",
    ]
    # First in the list, so that only Envoy's order, not the list's, can pass it over.
    config["virtual_hosts"].insert(0, {"name": "allow_any", "domains": ["*"], "routes": []})
    found = dumped_virtual_host(istiod, f"{HOST}:50051")
    assert found["name"] == f"{HOST}:50051"  # the exact name wins over the catch-all
    assert dumped_virtual_host(istiod, "10.96.10.20:50051")["name"] == f"{HOST}:50051"
    assert dumped_virtual_host(istiod, "elsewhere.example.com")["name"] == "allow_any"
    config["virtual_hosts"].pop(0)  # without the catch-all, an unknown host is named
    with pytest.raises(NotInDumpError) as error:
        dumped_virtual_host(istiod, "elsewhere.example.com")
    message = str(error.value)
    assert "no virtual host in this config dump serves 'elsewhere.example.com'" in message
    assert f"'{HOST}:50051' in '50051' for {HOST}, grpc-server," in message


def test_two_meshed_services_make_a_host_ambiguous_and_say_so(lab):
    """The sandbox gives each Service port its own listener whose routes take any host."""
    canary = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "grpc-server-canary", "namespace": "production"},
        "spec": {
            "selector": {"app": "grpc-server"},
            "ports": [{"name": "grpc", "port": 50051, "targetPort": "grpc"}],
        },
    }
    lab.apply(canary)
    try:
        lab.target("grpc-server-canary", via="mesh")
        with pytest.raises(NotInDumpError) as error:
            dumped_virtual_host(lab.mesh_config_dump(), HOST)
    finally:
        lab.delete(canary)
    message = str(error.value)
    assert "matches virtual hosts in 2 route configs equally well" in message
    assert f"in '{HOST}:50051'" in message
    assert "in 'grpc-server-canary.production.svc.cluster.local:50051'" in message


def test_a_dump_without_routes_says_so(dump):
    without = {"configs": [c for c in dump["configs"] if "Routes" not in c["@type"]]}
    with pytest.raises(NotInDumpError, match="has no RoutesConfigDump"):
        dumped_virtual_host(without, HOST)
    with pytest.raises(NotInDumpError, match="not an Envoy config dump"):
        dumped_cluster({"clusters": []}, CLUSTER_NAME)

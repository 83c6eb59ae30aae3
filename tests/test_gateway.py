"""Gateway API and Traefik in the sandbox: the translator, then real Envoys over real TLS."""

from __future__ import annotations

import socket

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from support import BASE, REPO

import grpclab
from grpclab.cluster.manifests import ManifestError, check_sandbox_support, load_objects
from grpclab.cluster.sandbox.catalog import install
from grpclab.cluster.sandbox.frontends import listen_port
from grpclab.load import LoadSpec
from grpclab.measure import checks
from grpclab.tls import TlsCheckError, check_tls, issue_certificate
from grpclab.xds import CLUSTER, LISTENER, ROUTE
from grpclab.xds.gateway import (
    HTTP2_OPTIONS,
    Backend,
    GatewayConfigError,
    check_gateway,
    gateway_resources,
    parse_traefik_match,
    traefik_resources,
)

INGRESS = REPO / "cluster" / "manifests" / "ingress"
HOST = "grpc.example.com"
CERT = (b"-----BEGIN CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n")


def read(name: str) -> list[dict]:
    return list(yaml.safe_load_all((INGRESS / name).read_text()))


def resolve(namespace: str, service: str, port):
    endpoints = {"grpc-server": ("127.42.9.10", "127.42.9.11"), "grpc-server-v2": ("127.42.9.12",)}
    ips = endpoints.get(service)
    if ips is None:
        return None
    return Backend(namespace, service, 50051, "grpc", tuple((ip, 50051) for ip in ips))


def gateway_config(routes=None, policies=(), secret=lambda ns, name: CERT):
    [gateway] = read("gateway.yaml")
    routes = read("grpcroute.yaml") if routes is None else routes
    return gateway_resources(
        [gateway],
        routes,
        {("production", "grpc-gateway"): "127.42.9.20"},
        lambda ip, port: port,
        resolve,
        secret,
        policies,
    )


def routes_of(resources) -> list:
    [config] = resources[ROUTE].values()
    [host] = config.virtual_hosts
    return list(host.routes)


# --- the translator -----------------------------------------------------------------------------


def test_the_method_match_wins_over_the_service_match_whatever_the_rule_order():
    [route] = read("grpcroute.yaml")
    route["spec"]["rules"].reverse()  # the service-wide rule first
    resources, _ = gateway_config([route])
    first, second = routes_of(resources)
    assert first.match.path == "/mypackage.MyService/SayHello"
    assert second.match.prefix == "/mypackage.MyService/"
    assert resources[CLUSTER][first.route.cluster].eds_cluster_config.service_name
    assert "rule/1" in first.route.cluster and "rule/0" in second.route.cluster


def test_a_grpc_route_is_http2_upstream_and_least_request_by_default():
    resources, attachments = gateway_config()
    for cluster in resources[CLUSTER].values():
        assert HTTP2_OPTIONS in cluster.typed_extension_protocol_options
        assert cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    [attachment] = attachments
    assert attachment.address == "127.42.9.20:443" and attachment.hostnames == (HOST,)
    assert set(attachment.services) == {
        ("production", "grpc-server"),
        ("production", "grpc-server-v2"),
    }


def test_a_backend_traffic_policy_on_the_route_sets_round_robin():
    resources, _ = gateway_config(policies=read("backend-traffic-policy.yaml"))
    assert {c.lb_policy for c in resources[CLUSTER].values()} == {cluster_pb2.Cluster.ROUND_ROBIN}


def test_the_https_listener_terminates_tls_for_its_hostname_only():
    resources, _ = gateway_config()
    [listener] = resources[LISTENER].values()
    [chain] = listener.filter_chains
    assert list(chain.filter_chain_match.server_names) == [HOST]
    assert chain.transport_socket.name == "envoy.transport_sockets.tls"
    assert listener.listener_filters[0].name == "envoy.filters.listener.tls_inspector"


def test_without_its_secret_the_listener_is_not_served():
    resources, attachments = gateway_config(secret=lambda ns, name: None)
    assert not resources[LISTENER] and not attachments


def test_a_route_for_another_hostname_does_not_attach():
    [route] = read("grpcroute.yaml")
    route["spec"]["hostnames"] = ["other.example.com"]
    _, attachments = gateway_config([route])
    assert attachments == []


def test_an_http_route_speaks_http2_only_to_h2c_ports():
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "production"},
        "spec": {
            "parentRefs": [{"name": "grpc-gateway"}],
            "rules": [{"backendRefs": [{"name": "grpc-server", "port": 50051}]}],
        },
    }
    resources, _ = gateway_config([route])
    [cluster] = resources[CLUSTER].values()
    assert HTTP2_OPTIONS not in cluster.typed_extension_protocol_options  # appProtocol: grpc


@pytest.mark.parametrize(
    ("listener", "field", "message"),
    [
        ({"protocol": "TCP"}, "spec.listeners[0].protocol", "HTTP and HTTPS"),
        ({"tls": {"mode": "Passthrough"}}, "spec.listeners[0].tls.mode", "Terminate"),
        ({"tls": {"certificateRefs": []}}, "spec.listeners[0].tls.certificateRefs", "certificate"),
    ],
)
def test_gateway_listeners_the_sandbox_cannot_serve_name_the_field(listener, field, message):
    [gateway] = read("gateway.yaml")
    gateway["spec"]["listeners"][0].update(listener)
    with pytest.raises(GatewayConfigError, match=message) as caught:
        check_gateway(gateway)
    assert caught.value.field == field


def test_a_grpc_route_with_an_unknown_field_is_refused_with_its_path():
    [route] = load_objects(INGRESS / "grpcroute.yaml")
    route["spec"]["rules"][0]["filters"] = [{"type": "RequestMirror"}]
    with pytest.raises(ManifestError) as caught:
        load_objects(route, default_namespace="production")
    assert caught.value.field == "spec.rules[0].filters" and "unknown field" in caught.value.reason


def test_traefik_rules_outside_the_supported_grammar_are_refused():
    assert parse_traefik_match("Host(`a.b`) && PathPrefix(`/x`)", "r", "m") == {
        "Host": "a.b",
        "PathPrefix": "/x",
    }
    objects = load_objects(INGRESS / "traefik-ingressroute.yaml")
    objects[0]["spec"]["routes"][0]["match"] = "HostRegexp(`.*`)"
    with pytest.raises(ManifestError) as caught:
        check_sandbox_support(objects, "<dict>")
    assert caught.value.field == "spec.routes[0].match"


def test_traefik_scheme_h2c_is_what_makes_the_upstream_http2():
    route, transport = read("traefik-ingressroute.yaml")
    args = ("127.42.9.30", lambda ip, port: port, resolve, lambda ns, name: CERT)
    resources, _ = traefik_resources([route], [transport], *args)
    [cluster] = resources[CLUSTER].values()
    assert HTTP2_OPTIONS in cluster.typed_extension_protocol_options
    assert cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN
    assert cluster.connect_timeout.seconds == 5  # the ServersTransport's dialTimeout
    del route["spec"]["routes"][0]["services"][0]["scheme"]
    resources, _ = traefik_resources([route], [transport], *args)
    [cluster] = resources[CLUSTER].values()
    assert HTTP2_OPTIONS not in cluster.typed_extension_protocol_options


def test_a_taken_or_privileged_port_moves_8000_up():
    with socket.socket() as taken:
        taken.bind(("127.99.1.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert listen_port("127.99.1.1", port) == port + 8000
    assert listen_port("127.99.1.1", port) == port  # free again


# --- real Envoys, real TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls():
    return issue_certificate([HOST])


@pytest.fixture(scope="module")
def lab(tls):
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(BASE)
        sandbox.apply(INGRESS / "deployment-v2.yaml")
        sandbox.apply(INGRESS / "service-v2.yaml")
        sandbox.apply(tls.secret("grpc-tls"))
        for name in ("gateway.yaml", "grpcroute.yaml", "backend-traffic-policy.yaml"):
            sandbox.apply(INGRESS / name)
        sandbox.apply(INGRESS / "traefik-ingressroute.yaml")
        install(sandbox, "envoy-gateway")
        install(sandbox, "traefik")
        sandbox.wait_ready("grpc-server", timeout=60)
        sandbox.wait_ready("grpc-server-v2", timeout=60)
        yield sandbox


@pytest.fixture(scope="module")
def tls_spec(lab, tls):
    def spec(via: str, **fields) -> LoadSpec:
        target = lab.target("grpc-server", via=via)
        return LoadSpec(target, tls_ca_file=str(tls.ca_file), tls_server_name=HOST, **fields)

    return spec


def pods_of(lab, deployment: str) -> list[str]:
    return [pod.name for pod in lab.wait_ready(deployment)]


def test_grpc_route_sends_say_hello_only_to_v1_and_get_user_only_to_v2(lab, tls_spec):
    v1, v2 = pods_of(lab, "grpc-server"), pods_of(lab, "grpc-server-v2")
    hello = lab.run_load(tls_spec("gateway", rpcs=600, method="SayHello"))
    user = lab.run_load(tls_spec("gateway", rpcs=600, method="GetUser"))
    assert hello.failed == 0 and user.failed == 0, (hello.errors, user.errors)
    assert set(hello.per_pod) == set(v1)
    assert set(user.per_pod) == set(v2)
    # Round robin (the BackendTrafficPolicy) within each backend.
    checks.assert_even(hello, v1, max_ratio=1.2)
    checks.assert_even(user, v2, max_ratio=1.2)


def test_the_gateway_checks_sni_and_the_client_checks_the_certificate(lab, tls):
    target = lab.target("grpc-server", via="gateway")
    peer = check_tls(target, tls.ca_file, HOST)
    assert peer.dns_names == (HOST,) and peer.alpn == "h2"
    with pytest.raises(TlsCheckError, match="wrong.example.com"):
        check_tls(target, tls.ca_file, "wrong.example.com")
    wrong = LoadSpec(
        target, rpcs=20, tls_ca_file=str(tls.ca_file), tls_server_name="wrong.example.com"
    )
    assert lab.run_load(wrong).errors == {"UNAVAILABLE": 20}


@pytest.mark.parametrize("method", ["SayHello", "GetUser"])
def test_the_traefik_emulation_spreads_every_method_evenly_over_v1(lab, tls_spec, method):
    v1 = pods_of(lab, "grpc-server")
    result = lab.run_load(tls_spec("traefik", rpcs=600, method=method))
    assert result.failed == 0, result.errors
    assert set(result.per_pod) == set(v1)
    checks.assert_even(result, v1, max_ratio=1.2)


def test_without_h2c_traefik_cannot_reach_a_grpc_pod(lab, tls_spec):
    route, transport = load_objects(INGRESS / "traefik-ingressroute.yaml")
    del route["spec"]["routes"][0]["services"][0]["scheme"]  # Traefik's default: http
    lab.apply([route, transport])
    try:
        result = lab.run_load(tls_spec("traefik", rpcs=30))
        assert result.ok == 0 and result.failed == 30
    finally:
        lab.apply(INGRESS / "traefik-ingressroute.yaml")
    assert lab.run_load(tls_spec("traefik", rpcs=30)).failed == 0


def test_a_service_that_no_route_names_cannot_be_reached_through_the_gateway(lab):
    lab.apply(REPO / "cluster" / "manifests" / "headless" / "service-headless.yaml")
    with pytest.raises(ValueError, match="no route of Envoy Gateway.*grpc-server-headless"):
        lab.target("grpc-server-headless", via="gateway")

"""DestinationRule and VirtualService into Envoy config: every supported field, and bad values."""

from __future__ import annotations

import copy

import pytest
import yaml
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from support import ISTIO

from grpclab.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, istio
from grpclab.xds.istio import Endpoint, IstioConfigError, ServicePort

HOST = "grpc-server.production.svc.cluster.local"
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


def manifest(name: str) -> dict:
    return yaml.safe_load((ISTIO / name).read_text())


def rule(**traffic_policy) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "grpc-server", "namespace": "production"},
        "spec": {"host": "grpc-server", "trafficPolicy": traffic_policy},
    }


def virtual_service(*http) -> dict:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "grpc-server", "namespace": "production"},
        "spec": {"hosts": ["grpc-server"], "http": list(http)},
    }


def route_to(port: int | None = 50051, **extra) -> dict:
    destination = {"host": "grpc-server"}
    if port:
        destination["port"] = {"number": port}
    return {"route": [{"destination": destination}], **extra}


def cluster_for(obj: dict | None) -> cluster_pb2.Cluster:
    return istio.destination_rule_cluster(HOST, 50051, obj)


def only_route(service: dict | None, target: ServicePort = PORT):
    config = istio.route_configuration(target, service)
    (virtual_host,) = config.virtual_hosts
    (route,) = virtual_host.routes
    return route


def refused(call, field: str, fragment: str) -> IstioConfigError:
    with pytest.raises(IstioConfigError) as caught:
        call()
    error = caught.value
    assert error.object.endswith("production/grpc-server"), error
    assert error.field == field, error
    assert fragment in error.reason, error
    assert error.object in str(error) and field in str(error)
    return error


# --- names and values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("grpc-server", HOST),
        ("grpc-server.production", HOST),
        (HOST, HOST),
        ("other.staging.svc.cluster.local", "other.staging.svc.cluster.local"),
    ],
)
def test_hosts_resolve_like_istiod(host, expected):
    assert istio.resolve_host(host, "production") == expected


def test_cluster_names_follow_istio():
    assert istio.cluster_name(HOST, 50051) == CLUSTER_NAME


@pytest.mark.parametrize(
    ("text", "seconds", "nanos"),
    [("2s", 2, 0), ("100ms", 0, 100_000_000), ("1m30s", 90, 0), ("1.5s", 1, 500_000_000)],
)
def test_durations_parse_like_go(text, seconds, nanos):
    duration = istio.parse_duration(text, "X ns/n", "f")
    assert (duration.seconds, duration.nanos) == (seconds, nanos)


@pytest.mark.parametrize("text", ["30", "2 seconds", "", "1d", 5, "500us"])
def test_bad_durations_are_refused(text):
    with pytest.raises(IstioConfigError, match="X ns/n: f: "):
        istio.parse_duration(text, "X ns/n", "f")


# --- DestinationRule: load balancer --------------------------------------------------------------


@pytest.mark.parametrize(
    ("simple", "policy"),
    [
        ("ROUND_ROBIN", cluster_pb2.Cluster.ROUND_ROBIN),
        ("LEAST_REQUEST", cluster_pb2.Cluster.LEAST_REQUEST),
        ("RANDOM", cluster_pb2.Cluster.RANDOM),
    ],
)
def test_load_balancer_simple_sets_the_lb_policy(simple, policy):
    cluster = cluster_for(rule(loadBalancer={"simple": simple}))
    assert cluster.lb_policy == policy


def test_without_a_rule_istio_defaults_to_least_request():
    assert cluster_for(None).lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert cluster_for(rule()).lb_policy == cluster_pb2.Cluster.LEAST_REQUEST


def test_an_unknown_load_balancer_is_refused_naming_the_field():
    refused(
        lambda: cluster_for(rule(loadBalancer={"simple": "FASTEST"})),
        "spec.trafficPolicy.loadBalancer.simple",
        "'FASTEST' is not one of ROUND_ROBIN",
    )


def test_the_cluster_is_eds_over_ads_and_speaks_http2_upstream():
    cluster = cluster_for(None)
    assert cluster.name == CLUSTER_NAME
    assert cluster.type == cluster_pb2.Cluster.EDS
    assert cluster.eds_cluster_config.eds_config.HasField("ads")
    assert cluster.eds_cluster_config.service_name == CLUSTER_NAME
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed = cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert packed.Unpack(options)
    assert options.explicit_http_config.HasField("http2_protocol_options")


# --- DestinationRule: connection pool ------------------------------------------------------------


def protocol_options(cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    cluster.typed_extension_protocol_options[
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ].Unpack(options)
    return options


def test_connection_pool_fields_become_circuit_breakers_and_protocol_options():
    cluster = cluster_for(manifest("destinationrule.yaml"))
    (limits,) = cluster.circuit_breakers.thresholds
    assert limits.max_connections.value == 100
    assert limits.max_requests.value == 1000
    options = protocol_options(cluster)
    assert options.common_http_protocol_options.max_requests_per_connection.value == 100


def test_without_a_connection_pool_the_limits_are_istios_unlimited():
    (limits,) = cluster_for(None).circuit_breakers.thresholds
    for name in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
        assert getattr(limits, name).value == 2**32 - 1, name
    assert not protocol_options(cluster_for(None)).common_http_protocol_options.HasField(
        "max_requests_per_connection"
    )


@pytest.mark.parametrize(
    ("pool", "field", "fragment"),
    [
        ({"tcp": {"maxConnections": 0}}, "tcp.maxConnections", ">= 1"),
        ({"tcp": {"maxConnections": "100"}}, "tcp.maxConnections", "whole number"),
        ({"http": {"http2MaxRequests": -1}}, "http.http2MaxRequests", ">= 1"),
        ({"http": {"maxRequestsPerConnection": 1.5}}, "http.maxRequestsPerConnection", "whole"),
        ({"http": {"h2UpgradePolicy": "ALWAYS"}}, "http.h2UpgradePolicy", "not one of"),
    ],
)
def test_bad_connection_pool_values_are_refused(pool, field, fragment):
    refused(
        lambda: cluster_for(rule(connectionPool=pool)),
        f"spec.trafficPolicy.connectionPool.{field}",
        fragment,
    )


# --- DestinationRule: outlier detection ----------------------------------------------------------


def test_outlier_detection_fields_as_istiod_translates_them():
    cluster = cluster_for(manifest("destinationrule.yaml"))
    detection = cluster.outlier_detection
    assert (detection.consecutive_5xx.value, detection.enforcing_consecutive_5xx.value) == (5, 100)
    assert detection.interval.seconds == 30
    assert detection.base_ejection_time.seconds == 30
    assert detection.max_ejection_percent.value == 50
    assert detection.HasField("enforcing_success_rate")
    assert detection.enforcing_success_rate.value == 0
    # With three pods, Envoy's default panic threshold (50%) would undo the first ejection.
    assert cluster.common_lb_config.HasField("healthy_panic_threshold")
    assert cluster.common_lb_config.healthy_panic_threshold.value == 0


def test_consecutive_gateway_errors_are_enforced():
    cluster = cluster_for(manifest("destinationrule-outlier-detection.yaml"))
    detection = cluster.outlier_detection
    assert detection.consecutive_gateway_failure.value == 1
    assert detection.enforcing_consecutive_gateway_failure.value == 100
    assert detection.interval.seconds == 1
    assert detection.base_ejection_time.seconds == 5


def test_zero_errors_turn_that_ejection_off():
    cluster = cluster_for(rule(outlierDetection={"consecutive5xxErrors": 0}))
    assert cluster.outlier_detection.consecutive_5xx.value == 0
    assert cluster.outlier_detection.HasField("enforcing_consecutive_5xx")
    assert cluster.outlier_detection.enforcing_consecutive_5xx.value == 0


def test_without_outlier_detection_there_is_none():
    cluster = cluster_for(rule(loadBalancer={"simple": "ROUND_ROBIN"}))
    assert not cluster.HasField("outlier_detection")
    assert not cluster.common_lb_config.HasField("healthy_panic_threshold")


@pytest.mark.parametrize(
    ("settings", "field", "fragment"),
    [
        ({"consecutive5xxErrors": -1}, "consecutive5xxErrors", ">= 0"),
        ({"consecutiveGatewayErrors": "one"}, "consecutiveGatewayErrors", "whole number"),
        ({"interval": "30"}, "interval", "not a duration"),
        ({"baseEjectionTime": "0s"}, "baseEjectionTime", "minimum of 1ms"),
        ({"maxEjectionPercent": 101}, "maxEjectionPercent", "<= 100"),
    ],
)
def test_bad_outlier_detection_values_are_refused(settings, field, fragment):
    refused(
        lambda: cluster_for(rule(outlierDetection=settings)),
        f"spec.trafficPolicy.outlierDetection.{field}",
        fragment,
    )


# --- DestinationRule: locality weights -----------------------------------------------------------


def weights(assignment) -> dict[str, int]:
    return {e.locality.zone: e.load_balancing_weight.value for e in assignment.endpoints}


def test_each_locality_weighs_its_pod_count_by_default():
    assignment = istio.load_assignment(CLUSTER_NAME, PORT.endpoints)
    assert weights(assignment) == {"zone-a": 2, "zone-b": 1}
    assert [len(e.lb_endpoints) for e in assignment.endpoints] == [2, 1]
    assert assignment.endpoints[0].locality.region == "local"


def distributing(source: str, to: dict) -> dict:
    distribute = [{"from": source, "to": to}]
    return rule(
        loadBalancer={"simple": "ROUND_ROBIN", "localityLbSetting": {"distribute": distribute}}
    )


def test_distribute_sets_the_locality_weights_for_clients_in_its_from():
    obj = distributing("local/zone-a/*", {"local/zone-a/*": 20, "local/zone-b/*": 80})
    assignment = istio.load_assignment(CLUSTER_NAME, PORT.endpoints, obj, ("local", "zone-a"))
    assert weights(assignment) == {"zone-a": 20, "zone-b": 80}
    assert cluster_for(obj).common_lb_config.HasField("locality_weighted_lb_config")
    # A client elsewhere is not covered by the rule: pod counts again.
    elsewhere = istio.load_assignment(CLUSTER_NAME, PORT.endpoints, obj, ("local", "zone-c"))
    assert weights(elsewhere) == {"zone-a": 2, "zone-b": 1}


def test_distribute_drops_localities_it_gives_nothing():
    obj = distributing("*", {"local/zone-b/*": 100})
    assignment = istio.load_assignment(CLUSTER_NAME, PORT.endpoints, obj, ("local", "zone-a"))
    assert weights(assignment) == {"zone-b": 100}


def test_distribute_weights_must_add_up_to_100():
    refused(
        lambda: istio.check_destination_rule(distributing("*", {"local/zone-a/*": 60})),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "add up to 100, not 60",
    )


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [("*", True), ("local/*", True), ("local/zone-a/*", True), ("local/zone-b/*", False)],
)
def test_locality_patterns_match_like_istio(pattern, matches):
    assert istio.locality_matches(("local", "zone-a"), pattern) is matches


# --- VirtualService ------------------------------------------------------------------------------


def test_the_guides_virtual_service_becomes_a_route_with_retries_and_a_timeout():
    route = only_route(manifest("virtualservice.yaml"))
    action = route.route
    assert action.cluster == CLUSTER_NAME
    assert action.timeout.seconds == 10
    assert action.max_stream_duration.grpc_timeout_header_max.seconds == 10
    policy = action.retry_policy
    assert policy.retry_on == "unavailable,resource-exhausted,internal"
    assert policy.num_retries.value == 3
    assert policy.per_try_timeout.seconds == 2
    assert [p.name for p in policy.retry_host_predicate] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]


def test_retry_on_takes_connection_failures_and_grpc_codes_together():
    route = only_route(manifest("virtualservice-retries.yaml"))
    retry_on = route.route.retry_policy.retry_on.split(",")
    assert retry_on == ["connect-failure", "reset", "unavailable", "resource-exhausted"]


def test_status_codes_in_retry_on_become_retriable_status_codes():
    retries = {"attempts": 2, "retryOn": "reset,503"}
    policy = only_route(virtual_service(route_to(retries=retries))).route.retry_policy
    assert policy.retry_on == "reset,retriable-status-codes"
    assert list(policy.retriable_status_codes) == [503]


def test_zero_attempts_turn_retries_off():
    route = only_route(manifest("virtualservice-no-retries.yaml"))
    assert not route.route.HasField("retry_policy")


def test_without_a_virtual_service_istio_retries_twice():
    route = only_route(None)
    assert route.route.cluster == CLUSTER_NAME
    policy = route.route.retry_policy
    assert policy.num_retries.value == 2
    assert "connect-failure" in policy.retry_on.split(",")
    assert list(policy.retriable_status_codes) == [503]
    assert route.route.timeout.seconds == 0  # no route timeout: the client's deadline rules


def test_an_http_entry_applies_only_to_the_port_it_matches():
    service = virtual_service(route_to(match=[{"port": 50051}], timeout="3s"))
    assert only_route(service).route.timeout.seconds == 3
    other_port = ServicePort("production", "grpc-server", 9090, PORT.endpoints)
    route = only_route(service, other_port)
    assert route.name == "default" and route.route.cluster == f"outbound|9090||{HOST}"


def test_a_destination_without_a_port_takes_the_services_only_port():
    assert only_route(virtual_service(route_to(port=None))).route.cluster == CLUSTER_NAME


@pytest.mark.parametrize(
    ("entry", "field", "fragment"),
    [
        (
            route_to(retries={"attempts": 3, "retryOn": "sometimes"}),
            "retries.retryOn",
            "'sometimes'",
        ),
        (route_to(retries={"attempts": -1}), "retries.attempts", ">= 0"),
        (
            route_to(retries={"attempts": 2, "perTryTimeout": "2"}),
            "retries.perTryTimeout",
            "duration",
        ),
        (route_to(timeout="ten seconds"), "timeout", "not a duration"),
        (route_to(match=[{"port": 70000}]), "match[0].port", "<= 65535"),
        ({"route": []}, "route", "exactly one destination"),
    ],
)
def test_bad_virtual_service_values_are_refused(entry, field, fragment):
    refused(
        lambda: istio.check_virtual_service(virtual_service(entry)),
        f"spec.http[0].{field}",
        fragment,
    )


def test_two_destinations_are_refused_rather_than_half_translated():
    entry = route_to()
    entry["route"].append(copy.deepcopy(entry["route"][0]))
    refused(
        lambda: istio.check_virtual_service(virtual_service(entry)),
        "spec.http[0].route",
        "not 2",
    )


# --- the sidecar ---------------------------------------------------------------------------------


def test_sidecar_resources_link_listener_route_cluster_and_endpoints():
    resources = istio.sidecar_resources(
        [PORT],
        {("production", "grpc-server", 50051): "127.42.9.200"},
        [manifest("destinationrule-least-request.yaml")],
        [manifest("virtualservice.yaml")],
    )
    (listener,) = resources[LISTENER].values()
    assert listener.address.socket_address.address == "127.42.9.200"
    assert listener.address.socket_address.port_value == 50051
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.rds.route_config_name in resources[ROUTE]
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    (config,) = resources[ROUTE].values()
    assert config.virtual_hosts[0].routes[0].route.cluster in resources[CLUSTER]
    assert resources[CLUSTER][CLUSTER_NAME].lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert set(resources[ENDPOINT]) == {CLUSTER_NAME}


def test_a_rule_for_another_host_does_not_apply():
    other = manifest("destinationrule-least-request.yaml")
    other["spec"]["host"] = "other.production.svc.cluster.local"
    resources = istio.sidecar_resources(
        [PORT], {}, [rule(loadBalancer={"simple": "RANDOM"}), other]
    )
    assert resources[CLUSTER][CLUSTER_NAME].lb_policy == cluster_pb2.Cluster.RANDOM
    assert resources[LISTENER] == {}  # no client asked for this port: no listener


def test_to_yaml_shows_unpacked_config_readably():
    text = istio.to_yaml(cluster_for(manifest("destinationrule.yaml")))
    data = yaml.safe_load(text)
    assert data["lb_policy"] == "ROUND_ROBIN"
    assert data["outlier_detection"]["base_ejection_time"] == "30s"
    options = data["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    assert options["@type"].endswith("HttpProtocolOptions")
    assert "lb_policy: ROUND_ROBIN" in text

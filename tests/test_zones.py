"""Zone-aware routing on the sandbox: trafficDistribution: PreferClose through kube-proxy,
its fallback, a headless Service that ignores it, and Istio's locality failover with and
without outlier detection. Real pods in two zones, real Envoy, real gRPC clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from support import MANIFESTS, base_sandbox

from grpclab.cluster import Cluster
from grpclab.cluster.manifests import ManifestError
from grpclab.load import LoadResult, LoadSpec
from grpclab.measure import zones
from grpclab.xds.istio import Endpoint, load_assignment

ZONES = MANIFESTS / "zones"
ZONE_B = MANIFESTS / "xds" / "deployment-zone-b.yaml"
ISTIO_NAMESPACE = MANIFESTS / "istio" / "namespace.yaml"
# Enough connections that a zone-blind kube-proxy misses the zone-b pod with odds of
# (3/4)**24, about 1 in 1,000.
CONNECTIONS = 24


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    with base_sandbox(
        ZONE_B, ZONES / "service-prefer-close.yaml", ZONES / "service-headless-prefer-close.yaml"
    ) as sandbox:
        sandbox.wait_ready("grpc-server-zone-b", timeout=60)
        yield sandbox


def per_zone(lab: Cluster, result: LoadResult) -> dict[str, int]:
    return zones.calls_per_zone(result, zones.pod_zones(lab.pods({"app": "grpc-server"})))


def clusterip_load(lab: Cluster, service: str) -> LoadResult:
    spec = LoadSpec(
        target=lab.target(service, via="clusterip"),
        rpcs=CONNECTIONS * 10,
        channels=CONNECTIONS,
        concurrency=CONNECTIONS,
    )
    return lab.run_load(spec)


def test_prefer_close_keeps_clusterip_traffic_in_the_clients_zone(lab: Cluster) -> None:
    close = per_zone(lab, clusterip_load(lab, "grpc-server-close"))
    anywhere = per_zone(lab, clusterip_load(lab, "grpc-server"))
    assert close.get("zone-b", 0) == 0 and close["zone-a"] == CONNECTIONS * 10, close
    # The same pods without the field: kube-proxy picks among all four.
    assert anywhere.get("zone-b", 0) > 0, anywhere


def test_prefer_close_falls_back_to_every_zone_when_its_own_has_no_endpoint(
    lab: Cluster,
) -> None:
    placed = zones.pod_zones(lab.pods({"app": "grpc-server"}))
    lab.scale("grpc-server", 0)
    try:
        lab.wait_ready("grpc-server", timeout=30)
        # Which of the zone-a pods still ran when the load began: the message says, if it fails.
        gone = set(placed) - {p.name for p in lab.pods({"app": "grpc-server"})}
        fallback = zones.calls_per_zone(clusterip_load(lab, "grpc-server-close"), placed)
    finally:
        lab.scale("grpc-server", 3)
        lab.wait_ready("grpc-server", timeout=60)
    assert fallback == {"zone-b": CONNECTIONS * 10}, (fallback, gone)
    back = per_zone(lab, clusterip_load(lab, "grpc-server-close"))
    assert back.get("zone-b", 0) == 0, back


def test_a_headless_service_ignores_prefer_close(lab: Cluster) -> None:
    # DNS answers with every ready pod, hints or not; round_robin reaches each of them.
    spec = LoadSpec(
        target=lab.target("grpc-server-close-headless", via="dns"),
        rpcs=400,
        lb_policy="round_robin",
    )
    spread = per_zone(lab, lab.run_load(spec))
    assert spread.get("zone-b", 0) >= 40, spread


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"spec": {"trafficDistribution": "PreferSameZone"}}, "spec.trafficDistribution"),
        (
            {"metadata": {"annotations": {"service.kubernetes.io/topology-mode": "Auto"}}},
            "service.kubernetes.io/topology-mode",
        ),
    ],
)
def test_the_sandbox_refuses_what_its_kube_proxy_cannot_do(
    lab: Cluster, change: dict, field: str
) -> None:
    service = yaml.safe_load((ZONES / "service-prefer-close.yaml").read_text())
    service["metadata"]["name"] = "grpc-server-refused"
    for part, values in change.items():
        service[part].update(values)
    with pytest.raises(ManifestError, match=field.replace(".", r"\.")):
        lab.apply([service])
    assert not [s for s in [service["metadata"]["name"]] if _has_service(lab, s)]


def _has_service(lab: Cluster, name: str) -> bool:
    try:
        lab.target(name, via="dns")
    except KeyError:
        return False
    return True


# -- Istio: locality failover needs outlier detection ------------------------------------------


def _priorities(rule: dict | None) -> dict[str, int]:
    endpoints = [
        Endpoint("127.42.9.10", 50051, "local", "zone-a"),
        Endpoint("127.42.9.11", 50051, "local", "zone-a"),
        Endpoint("127.42.9.12", 50051, "local", "zone-b"),
        Endpoint("127.42.9.13", 50051, "other", "zone-c"),
    ]
    assignment = load_assignment("c", endpoints, rule, ("local", "zone-a"))
    return {group.locality.zone: group.priority for group in assignment.endpoints}


def test_istiod_orders_localities_only_when_the_rule_has_outlier_detection() -> None:
    failover = yaml.safe_load((ZONES / "destinationrule-failover.yaml").read_text())
    plain = yaml.safe_load((ZONES / "destinationrule-no-outlier-detection.yaml").read_text())
    assert _priorities(failover) == {"zone-a": 0, "zone-b": 1, "zone-c": 2}
    assert _priorities(plain) == {"zone-a": 0, "zone-b": 0, "zone-c": 0}
    assert _priorities(None) == {"zone-a": 0, "zone-b": 0, "zone-c": 0}
    weighted = yaml.safe_load((MANIFESTS / "xds" / "destinationrule-locality.yaml").read_text())
    weighted["spec"]["trafficPolicy"]["outlierDetection"] = {"consecutive5xxErrors": 1}
    assert set(_priorities(weighted).values()) == {0}  # distribute sets weights instead


@pytest.fixture(scope="module")
def meshed(lab: Cluster) -> Iterator[Cluster]:
    lab.apply(ISTIO_NAMESPACE)
    yield lab


def mesh_load(lab: Cluster, rule: str, fault_zone_a: bool = False) -> LoadResult:
    lab.apply(ZONES / rule)
    # 2 s at 200 calls a second where only the zones count; the broken-zone runs stay unpaced
    # for 4 s: their check compares the calls that failed before the ejection (20 to 44,
    # measured) with all calls: paced runs of 330 to 780 calls lost 5.7 to 7.5 % of them,
    # against a 10 % limit.
    spec = LoadSpec(
        target=lab.target("grpc-server", via="mesh"),
        duration_s=4.0 if fault_zone_a else 2.0,
        concurrency=4,
        rate=None if fault_zone_a else 200,
    )
    if not fault_zone_a:
        return lab.run_load(spec)
    placed = zones.pod_zones(lab.pods({"app": "grpc-server"}))
    zone_a = [pod for pod, zone in placed.items() if zone == "zone-a"]
    for pod in zone_a:
        lab.set_fault(pod, error_rate=1.0)
    try:
        return lab.run_load(spec)
    finally:
        for pod in zone_a:
            lab.set_fault(pod, error_rate=0.0)


def test_the_sidecar_prefers_the_clients_zone_only_with_outlier_detection(meshed: Cluster) -> None:
    with_od = per_zone(meshed, mesh_load(meshed, "destinationrule-failover.yaml"))
    without = per_zone(meshed, mesh_load(meshed, "destinationrule-no-outlier-detection.yaml"))
    assert with_od.get("zone-b", 0) == 0 and with_od["zone-a"] > 0, with_od
    # Without it, zone-b's pod gets its fourth: 100 of 400 calls in 4 runs, one beside another
    # module.
    assert without.get("zone-b", 0) > 0.1 * sum(without.values()), without


def test_outlier_detection_fails_a_broken_zone_over_to_the_next(meshed: Cluster) -> None:
    failover = mesh_load(meshed, "destinationrule-failover.yaml", fault_zone_a=True)
    stuck = mesh_load(meshed, "destinationrule-no-outlier-detection.yaml", fault_zone_a=True)
    # Ejected after two errors each, zone-a's pods leave priority 0 within the first second.
    assert failover.failed < 0.1 * failover.total, failover.errors
    assert per_zone(meshed, failover).get("zone-b", 0) > 0.9 * failover.ok
    # Without it, nothing moves: three calls in four keep landing on zone-a. Istio's default
    # retries (two, on UNAVAILABLE) rescue many of them, and the rest fail all run long.
    assert stuck.failed > 0.1 * stuck.total, stuck.errors
    assert stuck.between(2.0).failed > 0, stuck.timeline


def test_the_sandbox_mesh_refuses_a_service_with_traffic_distribution(meshed: Cluster) -> None:
    with pytest.raises(ValueError, match="trafficDistribution"):
        meshed.target("grpc-server-close", via="mesh")


# -- measure.zones: the words the notebook checks ----------------------------------------------

PLACED = {"a1": "zone-a", "a2": "zone-a", "b1": "zone-b"}


def result_of(per_pod: dict[str, int], failed: int = 0) -> LoadResult:
    return LoadResult(per_pod=per_pod, errors={"UNAVAILABLE": failed} if failed else {})


@pytest.mark.parametrize(
    ("per_pod", "failed", "words"),
    [
        ({"a1": 50, "a2": 50}, 0, "zone-a only"),
        ({"a1": 96, "b1": 4}, 0, "zone-a only"),  # under 5% counts as none
        ({"a1": 60, "b1": 40}, 0, "both zones"),
        ({"b1": 90}, 10, "zone-b only, some calls failing"),
        ({"b1": 100}, 1, "zone-b only"),  # one in a hundred is not "some"
        ({"a1": 5}, 95, "failing"),
        ({"b1": 40}, 60, "zone-b only, some calls failing"),  # "failing" is nine in ten
        ({}, 0, "nowhere"),
    ],
)
def test_outcome_words(per_pod: dict[str, int], failed: int, words: str) -> None:
    assert zones.outcome_words(result_of(per_pod, failed), PLACED) == words


def test_a_drill_splits_its_calls_where_the_failure_began() -> None:
    timeline = [
        {"t": 0.0, "per_pod": {"a1": 10}, "errors": {}},
        {"t": 0.5, "per_pod": {"a1": 10}, "errors": {}},
        {"t": 1.0, "per_pod": {"a1": 2}, "errors": {"UNAVAILABLE": 8}},  # failure at 1.2
        {"t": 1.5, "per_pod": {"b1": 3}, "errors": {"UNAVAILABLE": 7}},
        {"t": 2.0, "per_pod": {"b1": 10}, "errors": {}},
        {"t": 2.5, "per_pod": {"b1": 10}, "errors": {}},
    ]
    result = LoadResult(per_pod={"a1": 22, "b1": 23}, timeline=timeline, elapsed_s=3.0, done=True)
    drill = zones.split(result, started_s=1.2, done_s=1.3, settle_s=0.5)
    assert drill.before.per_pod == {"a1": 20} and not drill.before.failed
    assert drill.after.per_pod == {"b1": 20} and not drill.after.failed
    assert drill.words(PLACED) == "before: zone-a only; after: zone-b only"

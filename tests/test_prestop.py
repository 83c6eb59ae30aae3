"""The preStop hook on real sandbox pods, as the kubelet runs it.

A deleted pod leaves the endpoints at once; the kubelet runs the preStop hook, then sends
SIGTERM, and SIGKILL when terminationGracePeriodSeconds is up, less the hook's time but never
less than 2 s (kuberuntime_container.go: executePreStopHook, minimumGracePeriodInSeconds).
The demo server under test drains for 60 s after SIGTERM, reporting NOT_SERVING on its health
service meanwhile, so a probe of its health tells the three phases apart: SERVING (the hook
runs, no SIGTERM yet), NOT_SERVING (SIGTERM came), down (the process is gone: SIGKILL).
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import BASE, wait_until

from grpclab.cluster.manifests import ManifestError, load_objects

NAME = "prestop"
SHIPPED = yaml.safe_load((BASE / "deployment.yaml").read_text())


def deployment(grace: int, lifecycle: dict | None) -> dict:
    """One demo-server pod that drains for 60 s after SIGTERM (NOT_SERVING all along)."""
    obj = copy.deepcopy(SHIPPED)
    obj["metadata"] = {"name": NAME, "namespace": "production", "labels": {"app": NAME}}
    obj["spec"]["replicas"] = 1
    obj["spec"]["selector"] = {"matchLabels": {"app": NAME}}
    template = obj["spec"]["template"]
    template["metadata"]["labels"] = {"app": NAME}
    template["spec"]["terminationGracePeriodSeconds"] = grace
    container = template["spec"]["containers"][0]
    container["env"] = [
        *container.get("env", []),
        {"name": "GRPCLAB_DRAIN_DELAY_S", "value": "60"},
    ]
    if lifecycle is not None:
        container["lifecycle"] = lifecycle
    return obj


class Watch:
    """Asks the pod's health every 0.1 s from the deletion on: (seconds since, state)."""

    def __init__(self, ip: str) -> None:
        self.channel = grpc.insecure_channel(
            f"{ip}:50051", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        self.stub = health_pb2_grpc.HealthStub(self.channel)
        self.seen: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                reply = self.stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError:
                state = "down"
            self.seen.append((time.monotonic() - self.started, state))
            if state == "down":
                return
            time.sleep(0.1)

    def first(self, state: str) -> float | None:
        return next((t for t, s in self.seen if s == state), None)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.channel.close()


def delete_and_watch(lab, tmp_path: Path, grace: int, lifecycle: dict | None, until: str):
    """Run the pod, delete it, and watch its health until `until` ("NOT_SERVING" or "down")."""
    path = tmp_path / "prestop.yaml"
    path.write_text(yaml.safe_dump(deployment(grace, lifecycle), sort_keys=False))
    lab.apply(path)
    [pod] = lab.wait_ready(NAME)
    watch = Watch(pod.ip)
    wait_until(lambda: watch.seen, "a first health answer")
    lab.delete_pod(pod.name)
    # The endpoints drop the pod at once, while the hook runs.
    [view] = [p for p in lab.pods({"app": NAME}) if p.name == pod.name]
    assert view.phase == "Terminating" and not view.ready, view
    try:
        wait_until(lambda: watch.first(until) is not None, f"{until} in {watch.seen}", 40)
    finally:
        watch.close()
        lab.delete(path)
    return watch


SLEEP_HOOKS = {
    "sleep action": {"preStop": {"sleep": {"seconds": 3}}},
    "exec sleep": {"preStop": {"exec": {"command": ["sleep", "3"]}}},
    "exec sh -c": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 3"]}}},
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("hook", [*SLEEP_HOOKS, "no hook"])
def test_a_prestop_sleep_comes_before_sigterm(lab, tmp_path, hook):
    watch = delete_and_watch(lab, tmp_path, 30, SLEEP_HOOKS.get(hook), until="NOT_SERVING")
    sigterm = watch.first("NOT_SERVING")
    serving_late = [t for t, state in watch.seen if state == "SERVING" and t >= 1.5]
    if hook == "no hook":
        assert not serving_late, watch.seen  # SIGTERM at once: NOT_SERVING from the start
    else:
        # Still SERVING 1.5 s after the deletion: the 3 s hook holds SIGTERM back.
        assert serving_late and sigterm > serving_late[-1], watch.seen


@pytest.mark.timeout(120)
def test_a_grace_period_shorter_than_the_hook_ends_it_and_kills_after_two_seconds(lab, tmp_path):
    # An exec hook may sleep past the grace period (the sleep action may not: the API server
    # refuses that). The kubelet abandons the hook at the grace period, sends SIGTERM, and
    # SIGKILL 2 s later (its minimum), long before the 30 s sleep or the 60 s drain end.
    hook = {"preStop": {"exec": {"command": ["sleep", "30"]}}}
    watch = delete_and_watch(lab, tmp_path, 3, hook, until="down")
    sigterm, killed = watch.first("NOT_SERVING"), watch.first("down")
    assert sigterm is not None and killed is not None, watch.seen
    assert [t for t, state in watch.seen if state == "SERVING" and t >= 1.5], watch.seen
    assert sigterm < killed < 20, watch.seen
    assert killed - sigterm >= 1.0, watch.seen  # the 2 s minimum between SIGTERM and SIGKILL


REFUSED = {
    "exec curl": (
        {"preStop": {"exec": {"command": ["curl", "-X", "POST", "localhost:8080/drain"]}}},
        "lifecycle.preStop.exec.command",
        "runs only a sleep in an exec hook",
    ),
    "exec sh with more than a sleep": (
        {"preStop": {"exec": {"command": ["sh", "-c", "sleep 5; kill 1"]}}},
        "lifecycle.preStop.exec.command",
        "runs only a sleep in an exec hook",
    ),
    "httpGet": (
        {"preStop": {"httpGet": {"path": "/drain", "port": 9090}}},
        "lifecycle.preStop.httpGet",
        "does not run httpGet hooks",
    ),
    "postStart": (
        {"postStart": {"exec": {"command": ["sleep", "1"]}}},
        "lifecycle.postStart",
        "runs only a preStop hook",
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_a_hook_the_sandbox_cannot_run_is_refused_naming_file_line_object_and_field(
    lab, tmp_path, case
):
    lifecycle, field, reason = REFUSED[case]
    path = tmp_path / "hook.yaml"
    path.write_text(yaml.safe_dump(deployment(30, lifecycle), sort_keys=False))
    load_objects(path)  # a real cluster takes it: only the sandbox refuses
    # The tests above delete their Deployment; its pods may still be on their way out.
    before = {pod.name for pod in lab.pods({"app": NAME})}
    with pytest.raises(ManifestError) as refused:
        lab.apply(path)
    text = str(refused.value)
    assert f"{path}:" in text and f"Deployment production/{NAME}" in text, text
    assert f"spec.template.spec.containers[0].{field}" in text and reason in text, text
    # Nothing runs from it: no pod that was not there before the apply.
    assert not [pod for pod in lab.pods({"app": NAME}) if pod.name not in before]


@pytest.mark.parametrize(
    ("seconds", "grace", "refused"),
    [(31, 30, True), (-1, 30, True), (30, 30, False), (0, 30, True)],
)
def test_a_sleep_action_longer_than_the_grace_period_is_refused_as_kubernetes_does(
    tmp_path, seconds, grace, refused
):
    path = tmp_path / "sleep.yaml"
    lifecycle = {"preStop": {"sleep": {"seconds": seconds}}}
    path.write_text(yaml.safe_dump(deployment(grace, lifecycle), sort_keys=False))
    if not refused:
        load_objects(path)
        return
    with pytest.raises(ManifestError) as error:
        load_objects(path)
    assert "lifecycle.preStop.sleep.seconds" in str(error.value), error.value
    assert f"less than terminationGracePeriodSeconds ({grace})" in str(error.value)

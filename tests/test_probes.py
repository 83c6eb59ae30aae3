"""kubelet's three probes in the sandbox, against real demo-server pods.

Each test runs its own small Deployment with short probe periods, flips the pod's
health with the not_serving fault knob and watches what the sandbox does about it.
"""

from __future__ import annotations

import copy
import os
import socket
import time
import urllib.request

import grpc
import pytest
import yaml
from dnslib import QTYPE, DNSRecord
from support import BASE
from support import wait_until as wait_for

import grpclab
from grpclab.cluster.sandbox import Sandbox
from grpclab.cluster.sandbox.pods import (
    PodRuntime,
    ProbeState,
    due_probes,
    probe_once,
    record_result,
)
from grpclab.demo._generated import admin_pb2, admin_pb2_grpc
from grpclab.load import LoadSpec

TEMPLATE = yaml.safe_load((BASE / "deployment.yaml").read_text())
GRPC_PROBE = {"grpc": {"port": 50051}, "periodSeconds": 1}
PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")


@pytest.fixture(scope="module")
def lab():
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "production"}})
        yield sandbox


@pytest.fixture
def drill(lab):
    """`lab.apply` for one test: what it applied is deleted when the test ends, pass or fail."""
    applied = []

    def apply(source):
        applied.append(source)
        return lab.apply(source)

    yield apply
    for source in reversed(applied):
        lab.delete(source)


def deployment(name: str, replicas: int = 1, env: dict[str, str] | None = None, **probes) -> dict:
    """The base Deployment renamed to `name`, with exactly the probes given (readinessProbe=...)."""
    obj = copy.deepcopy(TEMPLATE)
    obj["metadata"]["name"] = name
    obj["spec"]["replicas"] = replicas
    obj["spec"]["selector"]["matchLabels"] = {"app": name}
    obj["spec"]["template"]["metadata"]["labels"] = {"app": name}
    container = obj["spec"]["template"]["spec"]["containers"][0]
    for kind in PROBE_KINDS:
        container.pop(kind, None)
    container.update(probes)
    container["env"] += [{"name": k, "value": v} for k, v in (env or {}).items()]
    return obj


def services(name: str) -> list[dict]:
    """A ClusterIP Service and a headless one in front of the Deployment `name`."""
    spec = {"selector": {"app": name}, "ports": [{"name": "grpc", "port": 50051}]}
    meta = {"namespace": "production"}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "name": name}, "spec": spec},
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {**meta, "name": f"{name}-headless"},
            "spec": {**spec, "clusterIP": "None"},
        },
    ]


def pod(lab: Sandbox, name: str):
    return next(p for p in lab.pods() if p.name == name)


def dns_ips(lab: Sandbox, fqdn: str) -> set[str]:
    host, port = lab.dns.address.rsplit(":", 1)
    reply = DNSRecord.parse(DNSRecord.question(fqdn, "A").send(host, int(port), timeout=2))
    return {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}


def kube_proxy_endpoints(lab: Sandbox, service: str) -> set[str]:
    """Pod IPs that kube-proxy (Envoy) holds for `service`, read from Envoy's admin API."""
    with urllib.request.urlopen(lab.kube_proxy.admin_url("/clusters"), timeout=5) as reply:
        lines = reply.read().decode().splitlines()
    prefix = f"production/{service}:50051::"
    return {
        line[len(prefix) :].split(":")[0]
        for line in lines
        if line.startswith(prefix) and "::health_flags::" in line
    }


def container_pid(lab: Sandbox, name: str) -> int:
    with lab._lock:
        return lab._pods[name].process.pid


def not_serving(lab: Sandbox, name: str) -> bool:
    """The pod's not_serving knob, read from the process that answers now."""
    with lab._lock:
        address = f"{lab._pods[name].ip}:50051"
    with grpc.insecure_channel(address) as channel:
        fault = admin_pb2_grpc.AdminStub(channel).GetFault(admin_pb2.GetFaultRequest(), timeout=5)
    return fault.not_serving


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_failing_readiness_probe_takes_the_pod_out_of_dns_and_kube_proxy(lab, drill):
    name = "readiness-drill"
    readiness = {**GRPC_PROBE, "grpc": {"port": 50051, "service": "mypackage.MyService"}}
    drill([deployment(name, replicas=2, readinessProbe=readiness), *services(name)])
    pods = lab.wait_ready(name)
    victim, other = pods[0], pods[1]
    fqdn = f"{name}-headless.production.svc.cluster.local"
    assert dns_ips(lab, fqdn) == {victim.ip, other.ip}
    assert kube_proxy_endpoints(lab, name) == {victim.ip, other.ip}

    lab.set_fault(victim.name, not_serving=True)
    wait_for(lambda: not pod(lab, victim.name).ready, "the readiness probe to fail")
    wait_for(lambda: dns_ips(lab, fqdn) == {other.ip}, "DNS to drop the unready pod")
    wait_for(
        lambda: kube_proxy_endpoints(lab, name) == {other.ip}, "kube-proxy to drop the unready pod"
    )
    # A fresh round_robin client resolves only the ready pod: the other gets nothing.
    result = lab.run_load(
        LoadSpec(lab.target(f"{name}-headless"), rpcs=60, lb_policy="round_robin")
    )
    assert result.failed == 0 and set(result.per_pod) == {other.name}
    # Unready is not dead: no restart, the process keeps running.
    assert pod(lab, victim.name).restarts == 0 and pod(lab, victim.name).phase == "Running"

    lab.set_fault(victim.name, not_serving=False)
    wait_for(lambda: pod(lab, victim.name).ready, "the pod to turn ready again")
    wait_for(lambda: dns_ips(lab, fqdn) == {victim.ip, other.ip}, "DNS to list the pod again")
    wait_for(
        lambda: kube_proxy_endpoints(lab, name) == {victim.ip, other.ip},
        "kube-proxy to list the pod again",
    )


def test_a_failing_liveness_probe_restarts_the_container_in_the_same_pod(lab, drill):
    name = "liveness-drill"
    liveness = {**GRPC_PROBE, "failureThreshold": 2}
    # A slow drain keeps the old container alive for a while after the probe gives up.
    # Readiness by TCP connect: it keeps passing while the old container drains, so only
    # the kill itself can take the pod out of endpoints.
    readiness = {"tcpSocket": {"port": "grpc"}, "periodSeconds": 1}
    drill(
        deployment(
            name,
            env={"GRPCLAB_DRAIN_DELAY_S": "3"},
            # Without it a slow start fails liveness and loops, which is what it is for.
            startupProbe={**GRPC_PROBE, "failureThreshold": 30},
            livenessProbe=liveness,
            readinessProbe=readiness,
        )
    )
    victim = lab.wait_ready(name)[0]
    old_pid = container_pid(lab, victim.name)

    lab.set_fault(victim.name, not_serving=True)
    # While kubelet stops the old container the pod is out of endpoints, and the sandbox
    # keeps answering (the stop does not hold its lock).
    wait_for(
        lambda: not pod(lab, victim.name).ready and alive(old_pid),
        "the pod to turn unready while its old container is still stopping",
    )
    assert pod(lab, victim.name).restarts == victim.restarts
    restarted = wait_for(
        lambda: (p := pod(lab, victim.name)).restarts == victim.restarts + 1 and p.ready and p,
        "the restart",
    )
    assert restarted.name == victim.name and restarted.ip == victim.ip
    assert not alive(old_pid) and container_pid(lab, victim.name) != old_pid
    # The new container starts healthy: the fault knob lived in the old process.
    assert not not_serving(lab, victim.name)


def test_a_startup_probe_that_never_passes_restarts_the_container_and_holds_back_readiness(
    lab, drill
):
    name = "startup-drill"
    # Nothing listens on port 1, so the startup probe fails every time.
    startup = {"tcpSocket": {"port": 1}, "periodSeconds": 1, "failureThreshold": 2}
    drill(deployment(name, startupProbe=startup, readinessProbe=GRPC_PROBE))
    victim = wait_for(lambda: lab.pods({"app": name}), "the pod to be created")[0]
    wait_for(lambda: pod(lab, victim.name).restarts >= 2, "two restarts", timeout=30)
    # The server itself is SERVING, but readiness is never asked before startup passes.
    assert not pod(lab, victim.name).ready


def test_a_startup_probe_stops_once_it_has_passed(lab, drill):
    name = "startup-once-drill"
    startup = {**GRPC_PROBE, "failureThreshold": 2, "initialDelaySeconds": 2}
    readiness = {**GRPC_PROBE, "failureThreshold": 1}
    drill(deployment(name, startupProbe=startup, readinessProbe=readiness))
    victim = lab.wait_ready(name)[0]
    restarts = victim.restarts  # a slow machine may need a restart or two to come up
    lab.set_fault(victim.name, not_serving=True)
    wait_for(lambda: not pod(lab, victim.name).ready, "the readiness probe to fail")

    def readiness_failures() -> int:
        with lab._lock:
            return lab._pods[victim.name].probes["readiness"].failures

    # Three more periods, counted by the readiness probe's own failures (a busy machine runs
    # them late, never early): a startup probe still running would have failed twice and
    # restarted the container. kubelet runs it only until its first success.
    seen = readiness_failures()
    wait_for(
        lambda: readiness_failures() >= seen + 3 or pod(lab, victim.name).restarts != restarts,
        "three more periods of the readiness probe",
    )
    assert pod(lab, victim.name).restarts == restarts
    assert not_serving(lab, victim.name)  # the same process still answers


def test_initial_delay_and_success_threshold_hold_back_readiness(lab, drill):
    name = "threshold-drill"
    readiness = {**GRPC_PROBE, "initialDelaySeconds": 3, "successThreshold": 3}
    drill(deployment(name, readinessProbe=readiness))
    victim = wait_for(lambda: lab.pods({"app": name}), "the pod to be created")[0]
    with lab._lock:
        started_at = lab._pods[victim.name].started_at
    lab.wait_ready(name)
    # Lower bounds only: the first probe waits initialDelaySeconds, and readiness needs
    # three successes one period apart. A slow machine can only make this later.
    assert time.monotonic() - started_at >= 3 + 2


# -- the probe state machine on its own (no processes) ------------------------------


def runtime(**probes: dict) -> PodRuntime:
    from grpclab.cluster.sandbox.pods import reset_for_start

    pod = PodRuntime("p", "ns", "d", "h", {}, "127.0.0.1", probes, 1.0)
    pod.process = object()  # due_probes only asks whether there is a container
    reset_for_start(pod, now=0.0)
    return pod


def feed(pod: PodRuntime, probe: ProbeState, results: str, now: float = 0.0) -> list:
    """Apply results written as a string of "+" (success) and "-" (failure)."""
    return [record_result(pod, probe, None if ok == "+" else "failed", now) for ok in results]


def test_readiness_needs_failure_threshold_failures_and_success_threshold_successes():
    pod = runtime(readinessProbe={"failureThreshold": 3, "successThreshold": 2})
    probe = pod.probes["readiness"]
    feed(pod, probe, "+")
    assert not pod.ready
    feed(pod, probe, "+")
    assert pod.ready
    feed(pod, probe, "--")
    assert pod.ready
    feed(pod, probe, "-")
    assert not pod.ready


def test_liveness_and_startup_ask_for_a_restart_at_their_failure_threshold():
    pod = runtime(startupProbe={"failureThreshold": 2}, livenessProbe={"failureThreshold": 3})
    assert feed(pod, pod.probes["startup"], "--") == [None, "restart"]
    pod = runtime(startupProbe={"periodSeconds": 1}, livenessProbe={"failureThreshold": 3})
    feed(pod, pod.probes["startup"], "+")
    assert feed(pod, pod.probes["liveness"], "--+---") == [None] * 5 + ["restart"]


def test_only_the_startup_probe_runs_until_it_passes_and_then_never_again():
    pod = runtime(
        startupProbe={"periodSeconds": 1},
        readinessProbe={"initialDelaySeconds": 5},
        livenessProbe={"periodSeconds": 10},
    )
    assert [p.kind for p in due_probes(pod, now=10)] == ["startup"]
    feed(pod, pod.probes["startup"], "+", now=10)
    assert [p.kind for p in due_probes(pod, now=4)] == ["liveness"]  # initialDelaySeconds
    assert sorted(p.kind for p in due_probes(pod, now=20)) == ["liveness", "readiness"]


def test_a_result_about_a_replaced_container_is_ignored():
    pod = runtime(livenessProbe={"failureThreshold": 1})
    stale = pod.probes["liveness"]
    pod.probes = {"liveness": ProbeState("liveness", {"failureThreshold": 1})}
    assert record_result(pod, stale, "failed", now=0.0) is None


def test_a_grpc_probe_passes_as_soon_as_the_server_listens_after_one_that_failed():
    # kubelet dials a new connection for every gRPC probe. One kept channel would sit in its
    # reconnect back-off (about 1 s) after the first probe of a starting server, and fail the
    # next probe although the server listens by then: a whole probe period lost at start.
    from concurrent.futures import ThreadPoolExecutor

    from grpc_health.v1 import health, health_pb2_grpc

    with socket.socket() as closed:  # a free port, and nothing listens on it
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    container = {"startupProbe": {"grpc": {"port": port}}}
    pod = PodRuntime("p", "production", "p", "h", {}, "127.0.0.1", container, 1)
    probe = ProbeState("startup", container["startupProbe"])
    assert "failed to connect" in (probe_once(pod, probe) or "")  # refused
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    assert server.add_insecure_port(f"127.0.0.1:{port}") == port
    server.start()
    try:
        assert probe_once(pod, probe) is None
    finally:
        server.stop(grace=None)

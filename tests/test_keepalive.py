"""A frozen pod (Cluster.freeze_pod), keepalive that notices it, and the server's ping
enforcement (GOAWAY too_many_pings): real demo-server processes, real gRPC clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest
import yaml
from support import HEADLESS, MANIFESTS, base_sandbox

from grpclab.cluster import Cluster
from grpclab.cluster.containers import container_env
from grpclab.demo._generated import admin_pb2, admin_pb2_grpc, demo_pb2, demo_pb2_grpc
from grpclab.demo.server import parse_config
from grpclab.load import LoadResult, LoadSpec
from grpclab.measure import checks
from grpclab.side_by_side import run_side_by_side

KEEPALIVE = MANIFESTS / "keepalive"
LOCAL = [("grpc.enable_http_proxy", 0)]
# Notebook 12's clients: keepalive alone, and with gRPC core's ping timeout, which is what
# closes a connection whose keepalive ping gets no answer (60 s by default).
WITH_KEEPALIVE = {
    "grpc.keepalive_time_ms": 1000,
    "grpc.keepalive_timeout_ms": 1000,
    "grpc.http2.ping_timeout_ms": 1000,
}
# Pings every second during a call, with no cap on pings while nothing is sent (as grpc-go
# and grpc-java clients do).
PINGY = [("grpc.keepalive_time_ms", 1000), ("grpc.http2.max_pings_without_data", 0), *LOCAL]


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    with base_sandbox(HEADLESS, KEEPALIVE / "deployment.yaml") as sandbox:
        yield sandbox


def say_hello(address: str, timeout: float) -> str:
    with grpc.insecure_channel(address, LOCAL) as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        return stub.SayHello(demo_pb2.HelloRequest(), timeout=timeout).served_by.pod_name


def test_a_frozen_pod_accepts_connections_but_answers_nothing_until_thawed(lab: Cluster) -> None:
    pod = lab.pods({"app": "grpc-server"})[0].name
    address = lab.local_address(pod)
    host, port = address.rsplit(":", 1)
    assert say_hello(address, timeout=5) == pod
    lab.freeze_pod(pod)
    try:
        # The kernel still completes the TCP handshake for a stopped process: a tcpSocket
        # probe would call it healthy. Nothing above TCP answers.
        with socket.create_connection((host, int(port)), timeout=2):
            pass
        with pytest.raises(grpc.RpcError) as caught:
            say_hello(address, timeout=1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        lab.thaw_pod(pod)
    assert say_hello(address, timeout=5) == pod


def test_freezing_a_pod_that_is_not_there_names_it(lab: Cluster) -> None:
    with pytest.raises(KeyError, match="no-such-pod"):
        lab.freeze_pod("no-such-pod")
    with pytest.raises(KeyError, match="no-such-pod"):
        lab.thaw_pod("no-such-pod")


def test_keepalive_moves_a_client_off_a_frozen_pod_and_none_does_not(lab: Cluster) -> None:
    pods = [pod.name for pod in lab.wait_ready("grpc-server")]
    frozen = pods[0]
    target = lab.target("grpc-server-headless")
    common = dict(rpcs=None, duration_s=6, concurrency=4, deadline_s=3, interval_s=0.25)
    clients = {
        "none": LoadSpec(target, lb_policy="round_robin", **common),
        "keepalive": LoadSpec(
            target, lb_policy="round_robin", channel_options=WITH_KEEPALIVE, **common
        ),
    }
    try:
        run = run_side_by_side(lab, clients, at_s=1.5, event=lambda _: lab.freeze_pod(frozen))
    finally:
        lab.thaw_pod(frozen)
    none, keepalive = run.results["none"], run.results["keepalive"]
    assert none.per_pod.get(frozen) and keepalive.per_pod.get(frozen)  # it served before
    # Without keepalive every call that lands on the frozen pod waits out its deadline, to
    # the end of the run.
    assert set(none.errors) == {"DEADLINE_EXCEEDED"}, none.error_messages
    assert checks.recovery_time(none, run.event_s["none"]) is None
    # With keepalive the unanswered ping closes the connection: the calls on it fail
    # UNAVAILABLE, and the client carries on with the other pods.
    assert set(keepalive.errors) == {"UNAVAILABLE"}, keepalive.error_messages
    assert all("ping timeout" in message for message in keepalive.error_messages["UNAVAILABLE"])
    assert checks.recovery_time(keepalive, run.event_s["keepalive"]) is not None
    lab.wait_ready("grpc-server")


def start_server(*flags: str) -> tuple[subprocess.Popen[str], str]:
    """A demo server on 127.0.0.1 with `flags`; returns it and its address."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRPC_", "GRPCLAB_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "grpclab.demo.server", "--host", "127.0.0.1", "--port", "0"]
        + ["--metrics-port", "0", *flags],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = process.stdout.readline() if process.stdout else ""
    match = re.search(r" port=(\d+) ", line)
    if match is None:
        process.kill()
        raise AssertionError(f"the demo server did not start: {line!r}")
    return process, f"127.0.0.1:{match[1]}"


def slow_call_with_pings(address: str) -> str:
    """One 8 s call from a client that pings every second: "ok" or the status message."""
    with grpc.insecure_channel(address, LOCAL) as admin:
        admin_pb2_grpc.AdminStub(admin).SetFault(admin_pb2.Fault(added_latency_ms=8000), timeout=5)
    with grpc.insecure_channel(address, PINGY) as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        try:
            stub.SayHello(demo_pb2.HelloRequest(), timeout=15)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    return "ok"


def test_the_server_cuts_a_client_that_pings_too_often_unless_it_permits_it() -> None:
    servers = [start_server(), start_server("--min-recv-ping-interval-ms", "500")]
    outcomes: dict[int, str] = {}
    try:
        threads = [
            threading.Thread(target=lambda i=i, a=a: outcomes.update({i: slow_call_with_pings(a)}))
            for i, (_, a) in enumerate(servers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    # gRPC's default: a ping sooner than 5 minutes after the last, while the server sends
    # nothing, is a strike; the third gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings".
    assert outcomes[0] == "UNAVAILABLE: Too many pings"
    assert outcomes[1] == "ok"


def test_the_ping_policy_manifest_sets_the_servers_minimum_ping_interval() -> None:
    for name, expected in [("deployment.yaml", None), ("deployment-ping-policy.yaml", 500)]:
        deployment = yaml.safe_load((KEEPALIVE / name).read_text())
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert "livenessProbe" not in container  # it would restart a frozen pod
        config = parse_config([], environ=container_env(container, {}))
        assert config.min_recv_ping_interval_ms == expected, name


def test_flags_and_environment_give_the_ping_enforcement_options() -> None:
    from grpclab.demo.server import _server_options

    config = parse_config(
        ["--min-recv-ping-interval-ms", "500"], environ={"GRPC_KEEPALIVE_PERMIT_WITHOUT_CALLS": "1"}
    )
    options = dict(_server_options(config))
    # The string gRPC core reads; GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS's
    # name lowercased ("grpc.http2.min_recv_ping_interval...") is silently ignored.
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 500
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert "grpc.http2.min_ping_interval_without_data_ms" not in dict(
        _server_options(parse_config([], environ={}))
    )
    with pytest.raises(SystemExit):
        parse_config(["--keepalive-permit-without-calls", "yes"], environ={})


def bucket(t: float, ok: int = 0, failed: int = 0) -> dict:
    return {
        "t": t,
        "per_pod": {"a": ok} if ok else {},
        "errors": {"DEADLINE_EXCEEDED": failed} if failed else {},
    }


def test_recovery_time_is_the_end_of_the_last_failing_bucket_before_ok_calls() -> None:
    def result(*buckets: dict) -> LoadResult:
        return LoadResult(timeline=list(buckets), elapsed_s=len(buckets) * 0.5, done=True)

    recovered = result(bucket(0, 5), bucket(0.5, 0, 2), bucket(1.0, 3, 1), bucket(1.5, 9))
    assert checks.recovery_time(recovered, since_s=0.5) == 1.0
    assert "yes, within 2 s: yes" in checks.recovery_summary(recovered, 0.5, within_s=2)
    still_failing = result(bucket(0, 5), bucket(0.5, 2, 1), bucket(1.0, 0, 2))
    assert checks.recovery_time(still_failing, since_s=0.5) is None
    assert checks.recovery_time(result(bucket(0, 5), bucket(0.5, 5)), since_s=0.2) == 0.0
    # Failures before the event do not count.
    assert checks.recovery_time(result(bucket(0, 0, 3), bucket(0.5, 5)), since_s=0.5) == 0.0


def test_the_kube_backend_refuses_to_freeze_and_says_how_to() -> None:
    from grpclab.cluster.kube.cluster import KubeCluster, freeze_refusal

    message = freeze_refusal("grpc-server-abc", "production")
    for needed in ("production/grpc-server-abc", "init", "kill -STOP", "kind-review.md"):
        assert needed in message
    assert KubeCluster.freeze_pod is not Cluster.freeze_pod
    assert KubeCluster.thaw_pod is not Cluster.thaw_pod

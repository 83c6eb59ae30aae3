"""The demo server as a real subprocess: replies, health, faults, metrics, drain, binding."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for_ready, wait_until

from grpclab.demo._generated import admin_pb2, admin_pb2_grpc, demo_pb2, demo_pb2_grpc
from grpclab.demo.server import POD_NETWORK_ENV, BindError, ServerConfig, parse_config, serve

HOST = "127.0.0.1"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]
# Settings the server reads from the environment; tests pass flags, so these must not leak in.
SERVER_ENV = (
    "POD_IP",
    "GRPC_PORT",
    "METRICS_PORT",
    "POD_NAME",
    "GRPC_MAX_CONNECTION_AGE_MS",
    "GRPC_MAX_CONNECTION_AGE_GRACE_MS",
    "GRPCLAB_DRAIN_GRACE_S",
    "GRPCLAB_DRAIN_DELAY_S",
    "GRPCLAB_NO_DRAIN",
    "GRPCLAB_POD_NETWORK_ADDRESS",
)


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    pod_name: str
    port: int
    metrics_port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


Launch = Callable[..., ServerProcess]


def _launch(tmp_path: Path, started: list[subprocess.Popen[bytes]]) -> Launch:
    def launch(*flags: str, pod_name: str = "pod-a", wait_ready: bool = True) -> ServerProcess:
        index = len(started)
        out, err = tmp_path / f"server{index}.out", tmp_path / f"server{index}.err"
        if "--port" not in flags:
            flags = (*flags, "--port", "0")
        if "--metrics-port" not in flags:
            flags = (*flags, "--metrics-port", str(free_port()))
        with out.open("wb") as out_file, err.open("wb") as err_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "grpclab.demo.server",
                    "--host",
                    HOST,
                    "--pod-name",
                    pod_name,
                ]
                + list(flags),
                stdout=out_file,
                stderr=err_file,
                env={k: v for k, v in os.environ.items() if k not in SERVER_ENV},
            )
        started.append(proc)
        server = ServerProcess(proc, pod_name, 0, 0, out, err)
        if not wait_ready:
            return server
        ready = wait_for_ready(out, proc)
        if ready:
            server.port, server.metrics_port = ready.port, ready.metrics_port
            return server
        pytest.fail(f"server never became ready (rc={proc.poll()}):\n{server.stderr()}")

    return launch


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `python -m grpclab.demo.server` subprocesses; every one is killed by PID afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield _launch(tmp_path, started)
    finally:
        for proc in started:
            stop_process(proc)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the read-only tests, which never change its faults."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield _launch(tmp_path_factory.mktemp("shared"), started)(pod_name="pod-shared")
    finally:
        for proc in started:
            stop_process(proc)


def set_fault(server: ServerProcess, **fault: object) -> admin_pb2.Fault:
    with server.channel() as channel:
        return admin_pb2_grpc.AdminStub(channel).SetFault(admin_pb2.Fault(**fault), timeout=5)


def scrape(server: ServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of /metrics, keyed by (sample name, labels)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    url = f"http://{HOST}:{server.metrics_port}/metrics"
    with opener.open(url, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def test_replies_name_the_pod(shared_server: ServerProcess) -> None:
    with shared_server.channel() as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        hello = stub.SayHello(demo_pb2.HelloRequest(name="Ada"), timeout=5)
        first = stub.GetUser(demo_pb2.GetUserRequest(user_id="42"), timeout=5)
        again = stub.GetUser(demo_pb2.GetUserRequest(user_id="42"), timeout=5)
    assert hello.message == "Hello, Ada, from pod-shared"
    assert hello.served_by == demo_pb2.ServedBy(pod_name="pod-shared", pod_ip=HOST)
    assert first.user_id == "42" and first.display_name
    assert first == again
    assert first.served_by.pod_name == "pod-shared"


def test_health_reports_overall_and_service(shared_server: ServerProcess) -> None:
    with shared_server.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "mypackage.MyService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == SERVING, service
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(shared_server: ServerProcess) -> None:
    with shared_server.channel() as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"mypackage.MyService", "grpclab.admin.v1.Admin", "grpc.health.v1.Health"} <= set(
        services
    )


def test_watch_follows_not_serving_fault(launch: Launch) -> None:
    server = launch()
    with server.channel() as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="mypackage.MyService"), timeout=20
        )
        try:
            assert next(watch).status == SERVING
            set_fault(server, not_serving=True)
            assert next(watch).status == NOT_SERVING
            set_fault(server, not_serving=False)
            assert next(watch).status == SERVING
        finally:
            watch.cancel()


def test_error_fault_fails_my_service_but_not_admin_or_health(launch: Launch) -> None:
    server = launch()
    assert set_fault(server, error_rate=1.0, error_code=8).error_code == 8
    with server.channel() as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        for call in (
            lambda: stub.SayHello(demo_pb2.HelloRequest(name="x"), timeout=5),
            lambda: stub.GetUser(demo_pb2.GetUserRequest(user_id="1"), timeout=5),
        ):
            with pytest.raises(grpc.RpcError) as failed:
                call()
            assert failed.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "pod-a" in failed.value.details()
        fault = admin_pb2_grpc.AdminStub(channel).GetFault(admin_pb2.GetFaultRequest(), timeout=5)
        assert (fault.error_rate, fault.error_code) == (1.0, 8)
        check = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert check.status == SERVING

        set_fault(server, error_rate=1.0)  # error_code 0 means UNAVAILABLE
        with pytest.raises(grpc.RpcError) as unavailable:
            stub.SayHello(demo_pb2.HelloRequest(), timeout=5)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE

        set_fault(server)
        assert stub.SayHello(demo_pb2.HelloRequest(), timeout=5).served_by.pod_name == "pod-a"


def test_added_latency_delays_my_service_only(launch: Launch) -> None:
    server = launch()
    set_fault(server, added_latency_ms=300)
    with server.channel() as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        stub.SayHello(demo_pb2.HelloRequest(), timeout=5)  # connect outside the measurement
        start = time.monotonic()
        stub.SayHello(demo_pb2.HelloRequest(), timeout=5)
        assert time.monotonic() - start >= 0.3

        # With a latency far above their deadlines, Admin and Health still answer.
        set_fault(server, added_latency_ms=60_000)
        admin = admin_pb2_grpc.AdminStub(channel)
        assert admin.GetFault(admin_pb2.GetFaultRequest(), timeout=5).added_latency_ms == 60_000
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == SERVING
        with pytest.raises(grpc.RpcError) as slow:
            stub.SayHello(demo_pb2.HelloRequest(), timeout=1)
        assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


@pytest.mark.parametrize(
    ("fault", "field"),
    [
        ({"error_rate": 1.5}, "Fault.error_rate"),
        ({"error_rate": -0.1}, "Fault.error_rate"),
        ({"error_rate": float("nan")}, "Fault.error_rate"),
        ({"error_rate": 0.5, "error_code": 17}, "Fault.error_code"),
    ],
)
def test_invalid_fault_is_rejected(
    shared_server: ServerProcess, fault: dict[str, object], field: str
) -> None:
    with pytest.raises(grpc.RpcError) as rejected:
        set_fault(shared_server, **fault)
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in rejected.value.details()
    with shared_server.channel() as channel:
        kept = admin_pb2_grpc.AdminStub(channel).GetFault(admin_pb2.GetFaultRequest(), timeout=5)
    assert kept == admin_pb2.Fault()  # a rejected fault changes nothing


def test_metrics_count_calls_with_go_grpc_prometheus_labels(launch: Launch) -> None:
    server = launch()
    with server.channel() as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        for _ in range(7):
            stub.SayHello(demo_pb2.HelloRequest(), timeout=5)
        for _ in range(3):
            stub.GetUser(demo_pb2.GetUserRequest(user_id="u"), timeout=5)
        set_fault(server, error_rate=1.0, error_code=8)
        for _ in range(2):
            with pytest.raises(grpc.RpcError):
                stub.SayHello(demo_pb2.HelloRequest(), timeout=5)

    say_hello = {"grpc_type": "unary", "grpc_service": "mypackage.MyService"}
    say_hello["grpc_method"] = "SayHello"
    get_user = {**say_hello, "grpc_method": "GetUser"}
    handled = "grpc_server_handled_total"

    def all_handled() -> dict | None:
        # grpc.aio's context.abort() sends the status before the handler's coroutine ends,
        # so a client can see its error before the server counts the call as handled (a
        # busy machine showed 1 of 2 RESOURCE_EXHAUSTED): wait for the count to settle.
        samples = scrape(server)
        count = sum(
            v
            for (name, key), v in samples.items()
            if name == handled and key >= labels(**say_hello)
        )
        return samples if count == 9 else None

    samples = wait_until(all_handled, "9 SayHello calls counted as handled", timeout=10)
    assert samples["grpc_server_started_total", labels(**say_hello)] == 9
    assert samples[handled, labels(**say_hello, grpc_code="OK")] == 7
    assert samples[handled, labels(**say_hello, grpc_code="RESOURCE_EXHAUSTED")] == 2
    assert samples[handled, labels(**get_user, grpc_code="OK")] == 3
    assert samples["grpc_server_msg_received_total", labels(**say_hello)] == 9
    assert samples["grpc_server_msg_sent_total", labels(**say_hello)] == 7
    assert samples["grpc_server_handling_seconds_count", labels(**say_hello)] == 9
    bounds = {
        dict(key[1])["le"]
        for key in samples
        if key[0] == "grpc_server_handling_seconds_bucket" and key[1] >= labels(**say_hello)
    }
    expected = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    assert bounds == {str(float(b)) for b in expected} | {"+Inf"}
    inf_bucket = labels(**say_hello, le="+Inf")
    assert samples["grpc_server_handling_seconds_bucket", inf_bucket] == 9
    admin = labels(grpc_type="unary", grpc_service="grpclab.admin.v1.Admin", grpc_method="SetFault")
    assert samples[handled, admin | labels(grpc_code="OK")] == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_health_before_exit(launch: Launch, signum: signal.Signals) -> None:
    server = launch("--drain-delay-s", "0.5", "--drain-grace-s", "1")
    with server.channel() as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20
        )
        try:
            assert next(watch).status == SERVING
            server.proc.send_signal(signum)
            assert next(watch).status == NOT_SERVING
        finally:
            watch.cancel()
    assert server.proc.wait(timeout=20) == 0
    assert "draining" in server.stdout()


def watch_until_cut(
    server: ServerProcess, act: Callable[[grpc.Channel], object]
) -> tuple[list[int], grpc.RpcError]:
    """Health statuses a Watch saw from before `act` until the stream was cut, and the cut."""
    seen = []
    with server.channel() as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20
        )
        try:
            seen.append(next(watch).status)
            act(channel)
            with pytest.raises(grpc.RpcError) as cut:
                seen.extend(reply.status for reply in watch)
        finally:
            watch.cancel()
    return seen, cut.value


def test_no_drain_exits_without_not_serving(launch: Launch) -> None:
    server = launch("--no-drain")
    seen, _ = watch_until_cut(server, lambda _: server.proc.send_signal(signal.SIGTERM))
    assert seen == [SERVING]
    assert server.proc.wait(timeout=20) == 0
    assert "draining" not in server.stdout()


@pytest.mark.parametrize(("asked", "expected"), [(0, 137), (3, 3)])
def test_crash_replies_then_exits_at_once_and_cuts_open_streams(
    launch: Launch, asked: int, expected: int
) -> None:
    # A long drain would show if Crash went through the graceful path by mistake.
    server = launch("--drain-delay-s", "5", "--drain-grace-s", "5")
    seen, cut = watch_until_cut(
        server,
        lambda channel: admin_pb2_grpc.AdminStub(channel).Crash(
            admin_pb2.CrashRequest(exit_code=asked), timeout=5
        ),
    )
    assert cut.code() == grpc.StatusCode.UNAVAILABLE
    assert seen == [SERVING]  # no NOT_SERVING: the server never drained
    assert server.proc.wait(timeout=3) == expected
    assert "draining" not in server.stdout()
    assert "crash requested" in server.stdout()


def test_second_server_on_same_port_exits_2(launch: Launch) -> None:
    first = launch()
    second = launch("--port", str(first.port), "--metrics-port", "0", wait_ready=False)
    assert second.proc.wait(timeout=30) == 2
    assert f"{HOST}:{first.port}" in second.stderr()
    assert "ready" not in second.stdout()

    third = launch("--metrics-port", str(first.metrics_port), wait_ready=False)
    assert third.proc.wait(timeout=30) == 2
    assert f"metrics port {HOST}:{first.metrics_port}" in third.stderr()


def test_max_connection_age_replaces_the_connection(launch: Launch) -> None:
    server = launch(
        "--max-connection-age-ms",
        "500",
        "--max-connection-age-grace-ms",
        "500",
        "--metrics-port",
        "0",
    )
    peers = set()
    with server.channel() as channel:
        stub = demo_pb2_grpc.MyServiceStub(channel)
        deadline = time.monotonic() + 15
        # Keep calling until the server has sent GOAWAY and the channel has reconnected.
        while len(peers) < 2 and time.monotonic() < deadline:
            _, call = stub.SayHello.with_call(demo_pb2.HelloRequest(), timeout=5)
            peers.update(value for key, value in call.trailing_metadata() if key == "grpclab-peer")
            time.sleep(0.05)
    assert len(peers) >= 2, peers


@pytest.mark.parametrize("ending", ["stop event", "cancel"])
def test_serve_in_process_releases_port_and_threads(ending: str) -> None:
    threads_before = {thread.ident for thread in threading.enumerate()}
    config = ServerConfig(host=HOST, port=0, metrics_port=free_port(), pod_name="pod-inline")

    async def scenario() -> str:
        stop = asyncio.Event()
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(serve(config, stop, lambda port, _: ready.set_result(port)))
        try:
            port = await asyncio.wait_for(ready, 30)
            async with grpc.aio.insecure_channel(f"{HOST}:{port}", options=CHANNEL_OPTIONS) as ch:
                reply = await demo_pb2_grpc.MyServiceStub(ch).SayHello(demo_pb2.HelloRequest())
            if ending == "cancel":
                task.cancel()
            else:
                stop.set()
            await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 30)
            # Checked before the loop closes: loop teardown would release the ports anyway.
            for listening in (port, config.metrics_port):
                with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
                    probe.connect((HOST, listening))
            return reply.served_by.pod_name
        finally:
            task.cancel()

    assert asyncio.run(scenario()) == "pod-inline"

    # A thread the server stopped may still be finishing its last lines: wait for it to end.
    def started() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.ident not in threads_before]

    wait_until(lambda: not started(), lambda: f"the server's threads to end: {started()}", 10)


def test_serve_in_process_bind_error_leaves_nothing_bound() -> None:
    grpc_port = free_port()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        config = ServerConfig(host=HOST, port=grpc_port, metrics_port=taken.getsockname()[1])
        with pytest.raises(BindError, match=f"metrics port {HOST}:{config.metrics_port}"):
            asyncio.run(serve(config))
    with socket.socket() as probe:
        probe.bind((HOST, grpc_port))  # the gRPC port was never taken, or was given back


def test_config_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "POD_IP": "127.0.0.9",
        "GRPC_PORT": "6000",
        "METRICS_PORT": "0",
        "POD_NAME": "from-env",
        "GRPC_MAX_CONNECTION_AGE_MS": "30000",
        "GRPCLAB_DRAIN_DELAY_S": "2.5",
        "GRPCLAB_NO_DRAIN": "1",
    }.items():
        monkeypatch.setenv(name, value)
    from_env = parse_config([])
    # POD_IP is who served, not where to bind: the server listens on every interface.
    assert (from_env.host, from_env.pod_ip) == ("0.0.0.0", "127.0.0.9")
    assert (from_env.port, from_env.metrics_port) == (6000, 0)
    assert (from_env.pod_name, from_env.max_connection_age_ms) == ("from-env", 30000)
    assert (from_env.drain_delay_s, from_env.drain, from_env.max_connection_age_grace_ms) == (
        2.5,
        False,
        None,
    )
    from_flags = parse_config(["--port", "7000", "--pod-name", "from-flag"])
    assert (from_flags.port, from_flags.pod_name) == (7000, "from-flag")


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        (
            {"GRPC_PORT": "abc"},
            [],
            "GRPC_PORT='abc' (fallback for --port): 'abc' is not an integer",
        ),
        ({}, ["--metrics-port", "70000"], "--metrics-port: 70000 is not a port"),
        ({"GRPCLAB_DRAIN_GRACE_S": "-1"}, [], "GRPCLAB_DRAIN_GRACE_S='-1'"),
    ],
)
def test_bad_config_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    argv: list[str],
    message: str,
) -> None:
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        parse_config(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def _say_hello(address: str) -> demo_pb2.HelloReply:
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        return demo_pb2_grpc.MyServiceStub(channel).SayHello(demo_pb2.HelloRequest(), timeout=10)


def test_the_server_binds_every_interface_and_reports_pod_ip(tmp_path: Path) -> None:
    # As in a pod: no --host, POD_IP from the Downward API. kubectl port-forward dials
    # localhost inside the pod, a Service dials the pod IP; both must reach the server.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV}
    env |= {"POD_IP": "10.244.1.7", "POD_NAME": "pod-everywhere", "GRPC_PORT": str(port)}
    out = tmp_path / "server.out"
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "grpclab.demo.server", "--metrics-port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        assert wait_for_ready(out, proc), out.read_text()
        assert "bind=0.0.0.0" in out.read_text(), out.read_text()
        for address in (f"127.0.0.1:{port}", f"127.0.0.77:{port}"):
            reply = _say_hello(address)
            assert (reply.served_by.pod_name, reply.served_by.pod_ip) == (
                "pod-everywhere",
                "10.244.1.7",
            )
    finally:
        stop_process(proc)


def test_in_the_sandbox_every_interface_is_the_pods_own_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in SERVER_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(POD_NETWORK_ENV, "127.42.9.10")
    config = parse_config([])
    assert (config.host, config.pod_ip) == ("127.42.9.10", "127.42.9.10")
    assert parse_config(["--host", "0.0.0.0"]).host == "127.42.9.10"
    assert parse_config(["--host", "127.0.0.1"]).host == "127.0.0.1"  # a chosen address stays

"""The load generator against real demo servers (`grpclab.demo.server`) on loopback IPs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from support import wait_for_ready

from grpclab.demo._generated import admin_pb2, admin_pb2_grpc, demo_pb2_grpc
from grpclab.demo.server import MyService, PodState
from grpclab.load import (
    DEFAULT_RPCS,
    LoadResult,
    LoadSpec,
    channel_options,
    format_table,
    json_line,
    parse_json_lines,
    run,
)
from grpclab.load.runner import build_parser, main, run_async, spec_from_args

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


@dataclass
class DemoPod:
    name: str
    ip: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"


def start_pods(hosts: tuple[str, ...], logs: Path) -> list[DemoPod]:
    """Start one demo server per host (port 0) and wait for each ready line."""
    pods: list[DemoPod] = []
    procs: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    try:
        for index, host in enumerate(hosts):
            out = logs / f"pod-{index}.out"
            with out.open("wb") as out_file, (logs / f"pod-{index}.err").open("wb") as err_file:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "grpclab.demo.server",
                        "--host",
                        host,
                        "--port",
                        "0",
                        "--metrics-port",
                        "0",
                        "--pod-name",
                        f"pod-{index}",
                        "--no-drain",
                    ],
                    stdout=out_file,
                    stderr=err_file,
                )
            procs.append((host, out, proc))
        for host, out, proc in procs:
            ready = wait_for_ready(out, proc)
            if ready is None:
                err = out.with_suffix(".err").read_text()
                raise RuntimeError(f"demo server on {host} did not start:\n{err}")
            pods.append(DemoPod(ready.pod, ready.ip, ready.port, proc))
        return pods
    except BaseException:
        stop_pods([proc for _, _, proc in procs])
        raise


def stop_pods(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[DemoPod]]:
    started = start_pods(HOSTS, tmp_path_factory.mktemp("pods"))
    try:
        yield started
    finally:
        stop_pods([pod.proc for pod in started])


def static_target(pods: list[DemoPod]) -> str:
    return "ipv4:" + ",".join(pod.address for pod in pods)


def set_fault(pod: DemoPod, **fault: float) -> None:
    with grpc.insecure_channel(pod.address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        admin_pb2_grpc.AdminStub(channel).SetFault(admin_pb2.Fault(**fault), timeout=5)


def assert_timeline_sums(result: LoadResult, interval_s: float) -> None:
    assert [entry["t"] for entry in result.timeline] == [
        round(i * interval_s, 6) for i in range(len(result.timeline))
    ]
    per_pod: dict[str, int] = {}
    errors: dict[str, int] = {}
    for entry in result.timeline:
        for pod, count in entry["per_pod"].items():
            per_pod[pod] = per_pod.get(pod, 0) + count
        for code, count in entry["errors"].items():
            errors[code] = errors.get(code, 0) + count
    assert per_pod == result.per_pod
    assert errors == result.errors


def test_round_robin_spreads_over_every_pod(pods: list[DemoPod]) -> None:
    spec = LoadSpec(static_target(pods), rpcs=600, concurrency=6, lb_policy="round_robin")
    result = run(spec)
    assert result.done
    assert result.total == 600 and result.errors == {}
    assert set(result.per_pod) == {pod.name for pod in pods}
    assert result.pod_ips == {pod.name: pod.ip for pod in pods}
    # Round robin rotates per call; the slack covers the first calls, made while some
    # subchannels were still connecting.
    assert min(result.share(pod.name) for pod in pods) > 0.2
    assert set(result.latency_ms) == {"p50", "p90", "p99", "max", "mean"}
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p99"] <= result.latency_ms["max"]
    assert_timeline_sums(result, spec.interval_s)


def test_rate_paces_the_calls_on_one_schedule(pods: list[DemoPod]) -> None:
    # Calls start at t0 + n / rate and none at or after the end: at most rate x duration of
    # them, however many workers wait for a turn. Unpaced, the same workers make far more,
    # even in half the time (the shorter unpaced run saves CPU: it keeps both cores busy).
    paced = run(LoadSpec(static_target(pods), rpcs=None, duration_s=1.5, concurrency=8, rate=20))
    assert paced.errors == {} and 15 <= paced.total <= 30, paced.total
    unpaced = run(LoadSpec(static_target(pods), rpcs=None, duration_s=0.75, concurrency=8))
    assert unpaced.total > 3 * paced.total, (unpaced.total, paced.total)
    # With rpcs as the bound, the pace stretches the run instead: 20 calls at 40/s.
    counted = run(LoadSpec(static_target(pods), rpcs=20, concurrency=4, rate=40))
    assert counted.total == 20 and counted.elapsed_s >= 19 / 40, counted.elapsed_s


def test_pick_first_stays_on_the_first_address(pods: list[DemoPod]) -> None:
    result = run(LoadSpec(static_target(pods), rpcs=300, concurrency=4, channels=2))
    assert result.per_pod == {pods[0].name: 300}
    assert result.share(pods[0].name) == 1.0


def test_method_picks_the_rpc_that_is_called() -> None:
    called: list[str] = []

    class CountingService(MyService):
        async def SayHello(self, request, context):  # type: ignore[no-untyped-def]
            called.append("SayHello")
            return await super().SayHello(request, context)

        async def GetUser(self, request, context):  # type: ignore[no-untyped-def]
            called.append("GetUser")
            return await super().GetUser(request, context)

    async def scenario() -> LoadResult:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        service = CountingService(PodState("in-process", HOSTS[0]))
        demo_pb2_grpc.add_MyServiceServicer_to_server(service, server)
        port = server.add_insecure_port(f"{HOSTS[0]}:0")
        await server.start()
        try:
            return await run_async(LoadSpec(f"{HOSTS[0]}:{port}", rpcs=20, method="GetUser"))
        finally:
            await server.stop(None)

    result = asyncio.run(scenario())
    assert result.per_pod == {"in-process": 20}
    assert called == ["GetUser"] * 20


def test_failed_calls_are_counted_by_code_and_rpcs_is_exact(pods: list[DemoPod]) -> None:
    set_fault(pods[2], error_rate=1.0, error_code=grpc.StatusCode.UNAVAILABLE.value[0])
    try:
        spec = LoadSpec(static_target(pods), rpcs=450, concurrency=6, lb_policy="round_robin")
        result = run(spec)
    finally:
        set_fault(pods[2])
    assert result.total == 450
    assert set(result.per_pod) == {pods[0].name, pods[1].name}
    assert set(result.errors) == {"UNAVAILABLE"} and result.failed > 0
    assert_timeline_sums(result, spec.interval_s)
    # Why they failed, counted: the status message the pod sent, not only its code.
    message = f"fault injected by {pods[2].name}: error_rate=1"
    assert result.error_messages == {"UNAVAILABLE": {message: result.failed}}
    assert f"UNAVAILABLE x{result.failed}: {message}" in format_table(result)
    assert LoadResult.from_dict(result.to_dict()) == result  # it crosses the kube Job's log


def test_deadline_exceeded_and_empty_buckets_are_kept(pods: list[DemoPod]) -> None:
    # Every call waits 350 ms at the pod; one worker makes 3 calls, so at least 10
    # buckets of 0.1 s pass and at most 3 of them can hold a reply.
    set_fault(pods[1], added_latency_ms=350)
    try:
        slow = run(LoadSpec(pods[1].address, rpcs=3, concurrency=1, interval_s=0.1))
        timed_out = run(LoadSpec(pods[1].address, rpcs=4, concurrency=2, deadline_s=0.05))
    finally:
        set_fault(pods[1])
    assert slow.per_pod == {pods[1].name: 3}
    assert len(slow.timeline) >= 10
    assert sum(1 for entry in slow.timeline if not entry["per_pod"]) >= 7
    assert_timeline_sums(slow, 0.1)
    assert timed_out.errors == {"DEADLINE_EXCEEDED": 4} and timed_out.per_pod == {}


def test_a_gone_server_gives_unavailable_and_the_run_ends(tmp_path: Path) -> None:
    (gone,) = start_pods(("127.0.0.4",), tmp_path)
    stop_pods([gone.proc])
    result = run(LoadSpec(gone.address, rpcs=50, concurrency=4, deadline_s=2.0))
    assert result.done
    assert result.errors == {"UNAVAILABLE": 50}
    assert result.per_pod == {} and result.latency_ms == {}
    assert "(no OK replies)" in format_table(result)


def established_to(address: str) -> int:
    """TCP connections to `address` that are open now, read from /proc/net/tcp{,6}."""
    ip, port = address.split(":")
    ipv4 = "".join(f"{int(part):02X}" for part in reversed(ip.split(".")))
    # gRPC's sockets are dual-stack, so its IPv4 peers show up v4-mapped in tcp6.
    wanted = {f"{ipv4}:{int(port):04X}", f"0000000000000000FFFF0000{ipv4}:{int(port):04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            columns = line.split()
            count += columns[2] in wanted and columns[3] == "01"  # 01: ESTABLISHED
    return count


def connections_after_settling(address: str) -> int:
    """`established_to(address)` once it reaches 0, or after 10 s: closing takes a moment."""
    deadline = time.monotonic() + 10
    while (count := established_to(address)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


@pytest.mark.parametrize("channels", [1, 3])
def test_each_channel_opens_its_own_connection(pods: list[DemoPod], channels: int) -> None:
    seen: list[int] = []

    def count_connections(snapshot: LoadResult) -> None:
        if not snapshot.done:  # the final snapshot comes after the channels are closed
            seen.append(established_to(pods[0].address))

    spec = LoadSpec(
        pods[0].address,
        rpcs=None,
        duration_s=1.0,
        concurrency=3,
        channels=channels,
        interval_s=0.25,
        rate=100,  # each worker takes its turn, on its own channel; unpaced costs 1 CPU-s
    )
    assert connections_after_settling(pods[0].address) == 0  # nothing left from other tests
    result = asyncio.run(run_async(spec, count_connections))
    assert result.per_pod == {pods[0].name: result.total}
    assert seen and max(seen) == channels


def test_progress_snapshots_then_one_final(pods: list[DemoPod]) -> None:
    snapshots: list[LoadResult] = []
    spec = LoadSpec(
        static_target(pods),
        rpcs=None,
        duration_s=1.0,
        lb_policy="round_robin",
        interval_s=0.2,
        rate=200,  # snapshots need calls in every interval, not a saturated machine
    )
    result = run(spec, snapshots.append)
    assert len(snapshots) >= 3
    assert [s.done for s in snapshots] == [False] * (len(snapshots) - 1) + [True]
    assert snapshots[-1] == result
    totals = [s.total for s in snapshots]
    assert totals == sorted(totals) and totals[-1] == result.total > 0
    for snapshot in snapshots:
        assert_timeline_sums(snapshot, spec.interval_s)
    # Snapshots own their data: later counting must not change an earlier snapshot.
    assert snapshots[0].total < result.total


def test_run_works_inside_a_running_event_loop(pods: list[DemoPod]) -> None:
    async def notebook_cell() -> LoadResult:
        # A Jupyter cell runs while the kernel's loop runs; run() must not need that loop.
        asyncio.get_running_loop()
        return run(LoadSpec(pods[0].address, rpcs=50))

    assert asyncio.run(notebook_cell()).per_pod == {pods[0].name: 50}


def test_keyboard_interrupt_cancels_the_run(pods: list[DemoPod]) -> None:
    sent: list[int] = []

    def interrupt(snapshot: LoadResult) -> None:
        if not sent:
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)  # what Jupyter's interrupt button sends

    spec = LoadSpec(pods[0].address, rpcs=None, duration_s=60, channels=2, interval_s=0.1)
    with pytest.raises(KeyboardInterrupt):
        run(spec, interrupt)
    running = [thread.name for thread in threading.enumerate() if thread.is_alive()]
    assert "grpclab-load" not in running
    assert connections_after_settling(pods[0].address) == 0


def test_cancelling_run_async_closes_its_connections(pods: list[DemoPod]) -> None:
    async def cancel_midway() -> asyncio.Task[LoadResult]:
        spec = LoadSpec(pods[1].address, rpcs=None, duration_s=60, channels=2, interval_s=0.1)
        started = asyncio.Event()
        task = asyncio.create_task(run_async(spec, lambda snapshot: started.set()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task  # held on purpose, as a notebook variable would hold it

    task = asyncio.run(cancel_midway())
    assert task.cancelled()
    assert connections_after_settling(pods[1].address) == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "grpclab.load", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_json_lines_parse_back(pods: list[DemoPod]) -> None:
    done = run_cli(
        static_target(pods),
        "--duration",
        "0.8",
        "--rate",
        "200",
        "--interval",
        "0.2",
        "--concurrency",
        "3",
        "--lb-policy",
        "round_robin",
        "--option",
        "grpc.max_receive_message_length=65536",
        "--progress-json",
    )
    assert done.returncode == 0, done.stderr
    progress, final = parse_json_lines(done.stdout.splitlines())
    assert final is not None and final.done and final.errors == {}
    assert set(final.per_pod) == {pod.name for pod in pods}
    assert progress and not any(snapshot.done for snapshot in progress)
    assert json.loads(done.stdout.splitlines()[-1]).keys() == {"result"}
    # Lines that are not protocol lines (gRPC logs on a merged stream) are skipped.
    noisy = [
        "E0101 00:00:00 something logged",
        "{not json",
        '{"other": 1}',
        json_line("result", final),
    ]
    assert parse_json_lines(noisy) == ([], final)


def test_cli_json_is_one_result_line_that_round_trips(pods: list[DemoPod]) -> None:
    done = run_cli(static_target(pods), "--rpcs", "30", "--lb-policy", "round_robin", "--json")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    progress, final = parse_json_lines([line])
    assert progress == [] and final is not None and final.total == 30
    assert json_line("result", final) == line  # nothing lost on the way through JSON


def test_json_round_trip_is_exact(pods: list[DemoPod]) -> None:
    result = run(LoadSpec(static_target(pods), rpcs=90, lb_policy="round_robin"))
    assert parse_json_lines([json_line("result", result)]) == ([], result)
    assert LoadResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_cli_human_table(pods: list[DemoPod]) -> None:
    done = run_cli(pods[2].address, "--rpcs", "40", "--method", "GetUser")
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^{pods[2].name}\s+{pods[2].ip}\s+40\s+100\.0%$", done.stdout, re.M)
    assert "errors: none" in done.stdout and "calls: 40 (ok 40, failed 0)" in done.stdout


def test_cli_ctrl_c_cancels_the_run(pods: list[DemoPod]) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "grpclab.load",
            pods[0].address,
            "--duration",
            "60",
            "--progress-json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith('{"progress"')
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 130 and "interrupted" in err


def test_tls_checks_the_server_name(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    name = "demo.grpclab.test"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            tmp_path / "key.pem",
            "-out",
            tmp_path / "cert.pem",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )
    key, cert = (tmp_path / "key.pem").read_bytes(), (tmp_path / "cert.pem").read_bytes()

    async def scenario() -> tuple[LoadResult, LoadResult]:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        demo_pb2_grpc.add_MyServiceServicer_to_server(
            MyService(PodState("tls-pod", HOSTS[0])), server
        )
        port = server.add_secure_port(f"{HOSTS[0]}:0", grpc.ssl_server_credentials([(key, cert)]))
        await server.start()
        try:
            spec = LoadSpec(
                f"{HOSTS[0]}:{port}",
                rpcs=10,
                concurrency=2,
                tls_ca_file=str(tmp_path / "cert.pem"),
                tls_server_name=name,
            )
            good = await run_async(spec)
            spec.tls_server_name = "wrong.grpclab.test"
            wrong = await run_async(spec)
            return good, wrong
        finally:
            await server.stop(None)

    good, wrong = asyncio.run(scenario())
    assert good.per_pod == {"tls-pod": 10}
    assert wrong.per_pod == {} and wrong.errors == {"UNAVAILABLE": 10}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rpcs": 10, "duration_s": 1.0}, "exactly one of rpcs and duration_s"),
        ({"rpcs": 0}, "LoadSpec.rpcs"),
        (
            {"concurrency": 2, "channels": 3},
            "LoadSpec.concurrency (2) must be >= LoadSpec.channels",
        ),
        ({"method": "Nope"}, "LoadSpec.method"),
        ({"interval_s": 0}, "LoadSpec.interval_s"),
        ({"service_config": "{not json"}, "LoadSpec.service_config is not valid JSON"),
        ({"service_config": "[]"}, "LoadSpec.service_config must be a JSON object"),
        ({"tls_server_name": "x"}, "LoadSpec.tls_server_name is set"),
        ({"rate": 0}, "LoadSpec.rate must be > 0"),
        ({"rate": 5, "method": "SayHelloStream"}, "LoadSpec.rate paces unary calls"),
    ],
)
def test_bad_specs_are_refused_by_field(changes: dict[str, object], message: str) -> None:
    spec = LoadSpec("127.0.0.1:1", **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape(message)):
        run(spec)


def test_a_spec_with_no_bound_makes_the_default_number_of_calls() -> None:
    assert LoadSpec("127.0.0.1:1").rpcs == DEFAULT_RPCS
    assert LoadSpec("127.0.0.1:1", duration_s=2.0).rpcs is None


def test_unreadable_ca_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    spec = LoadSpec("127.0.0.1:1", rpcs=1, tls_ca_file=str(missing))
    with pytest.raises(ValueError, match=f"LoadSpec.tls_ca_file: cannot read {missing}"):
        run(spec)


def test_unknown_dict_fields_are_named() -> None:
    with pytest.raises(ValueError, match="LoadResult.from_dict: unknown field.*per_node"):
        LoadResult.from_dict({"per_node": {}})
    with pytest.raises(ValueError, match="LoadSpec.from_dict: unknown field.*rps"):
        LoadSpec.from_dict({"target": "x", "rps": 3})


def test_channel_options_carry_the_service_config() -> None:
    options = dict(channel_options(LoadSpec("x", lb_policy="round_robin")))
    assert json.loads(options["grpc.service_config"]) == {
        "loadBalancingConfig": [{"round_robin": {}}]
    }
    config = {"loadBalancingConfig": [{"pick_first": {}}]}
    options = dict(
        channel_options(
            LoadSpec(
                "x",
                lb_policy="round_robin",
                service_config=json.dumps(config),
                channel_options={"grpc.use_local_subchannel_pool": 0},
            )
        )
    )
    assert json.loads(options["grpc.service_config"]) == config
    assert options["grpc.use_local_subchannel_pool"] == 0  # the caller's choice wins
    assert "grpc.service_config" not in dict(channel_options(LoadSpec("x")))


def test_cli_options_become_typed_channel_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["x", "--rpcs", "5", "--duration", "1"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["x", "--concurrency", "1", "--channels", "2"])
    assert "--concurrency (1) must be >= --channels (2)" in capsys.readouterr().err
    args = build_parser().parse_args(
        ["x", "--duration", "2", "--option", "a=5", "--option", "b=x=y", "--lb-policy", "rr"]
    )
    spec = spec_from_args(args)
    assert spec.channel_options == {"a": 5, "b": "x=y"}
    assert (spec.rpcs, spec.duration_s, spec.lb_policy) == (None, 2.0, "rr")


def test_after_every_pod_answered_counts_from_the_interval_after_the_last_first_reply():
    timeline = [
        {"t": 0.00, "per_pod": {"a": 5}, "errors": {}},
        {"t": 0.01, "per_pod": {"a": 3, "b": 2}, "errors": {}},
        {"t": 0.02, "per_pod": {"a": 1, "c": 1}, "errors": {}},
        {"t": 0.03, "per_pod": {"a": 4, "b": 4, "c": 4}, "errors": {}},
        {"t": 0.04, "per_pod": {"a": 2, "b": 3, "c": 3}, "errors": {}},
    ]
    result = LoadResult(per_pod={"a": 15, "b": 9, "c": 8}, timeline=timeline, done=True)
    assert result.after_every_pod_answered(["a", "b", "c"]).per_pod == {"a": 6, "b": 7, "c": 7}
    assert result.after_every_pod_answered(["a", "b", "d"]).per_pod == {}


# -- The timeline's questions, answered by LoadResult ------------------------------------


def test_a_real_runs_timeline_answers_window_questions(pods: list[DemoPod]) -> None:
    # Three pods, one failing every call: OK replies and failures in every interval.
    set_fault(pods[2], error_rate=1.0, error_code=grpc.StatusCode.UNAVAILABLE.value[0])
    try:
        spec = LoadSpec(
            static_target(pods), duration_s=0.6, concurrency=3, lb_policy="round_robin",
            interval_s=0.05,
        )  # fmt: skip
        result = run(spec)
    finally:
        set_fault(pods[2])
    assert result.interval_s() == pytest.approx(spec.interval_s)
    whole = result.between()
    assert (whole.per_pod, whole.errors) == (result.per_pod, result.errors)
    assert whole.pod_ips == result.pod_ips
    starts = [interval["t"] for interval in result.timeline]
    # Cut anywhere, the two windows hold every call once: each interval is on one side.
    for cut in (0.0, 0.1, 0.23, 0.3, result.elapsed_s):
        early, late = result.between(0, cut), result.between(cut)
        assert early.ok + late.ok == result.ok and early.failed + late.failed == result.failed
        side = [t for t in starts if t < cut]
        assert early.ok == sum(
            sum(result.timeline[i]["per_pod"].values()) for i in range(len(side))
        )
    # From 0.12 s: the intervals that start at 0.15 s or later; touching, also the one at 0.1 s.
    assert result.between(0.12).per_pod == result.between(0.15).per_pod
    assert result.between(0.12, touching=True).per_pod == result.between(0.1).per_pod
    assert result.between(0.1, 0.2).elapsed_s == pytest.approx(0.1)
    # The last interval is cut short by the end of the run: only complete ones are left.
    complete = result.complete_intervals()
    assert complete == result.timeline[: len(complete)]
    assert len(complete) >= len(result.timeline) - 1
    assert all(i["t"] + spec.interval_s <= result.elapsed_s + 1e-6 for i in complete)
    for name in result.per_pod:
        first = result.first_reply_s(name)
        assert result.between(0, first).per_pod.get(name, 0) == 0
        assert result.between(first, first + spec.interval_s / 2).per_pod[name] > 0
    assert result.first_reply_s(pods[2].name) is None  # it failed every call
    failing_from, failing_to = result.failing_s()
    assert result.between(0, failing_from).failed == 0
    assert result.between(failing_to).failed == 0
    assert result.between(failing_from, failing_to).failed == result.failed
    # After the warm-up: the calls once both answering pods had answered, evenly spread.
    steady = result.after_every_pod_answered([pods[0].name, pods[1].name])
    assert set(steady.per_pod) == {pods[0].name, pods[1].name}
    assert 0 < steady.ok < result.ok
    assert result.after_every_pod_answered([pod.name for pod in pods]).per_pod == {}


def test_window_questions_on_a_known_timeline() -> None:
    # Intervals of 0.5 s; the run ended at 2.2 s, so the one from 2.0 s is cut short.
    timeline = [
        {"t": 0.0, "per_pod": {"a": 4}, "errors": {}},
        {"t": 0.5, "per_pod": {"a": 2, "b": 2}, "errors": {"UNAVAILABLE": 1}},
        {"t": 1.0, "per_pod": {"a": 2, "b": 3}, "errors": {}},
        {"t": 1.5, "per_pod": {"b": 5}, "errors": {"CANCELLED": 2}},
        {"t": 2.0, "per_pod": {"b": 1}, "errors": {}},
    ]
    result = LoadResult(
        per_pod={"a": 8, "b": 11},
        pod_ips={"a": "10.0.0.1", "b": "10.0.0.2"},
        errors={"CANCELLED": 2, "UNAVAILABLE": 1},
        timeline=timeline,
        elapsed_s=2.2,
        done=True,
    )
    assert result.interval_s() == 0.5
    assert result.complete_intervals() == timeline[:4]
    assert result.between(0.5, 1.5).per_pod == {"a": 4, "b": 5}
    assert result.between(0.5, 1.5).errors == {"UNAVAILABLE": 1}
    assert result.between(0.5, 1.5).pod_ips == result.pod_ips
    assert result.between(0.7, 1.5).per_pod == {"a": 2, "b": 3}
    assert result.between(0.7, 1.5, touching=True).per_pod == {"a": 4, "b": 5}
    assert result.between(1.5).elapsed_s == pytest.approx(0.7)  # the run ended at 2.2 s
    assert result.between(3.0).per_pod == {} and result.between(3.0).elapsed_s == 0.0
    assert result.first_reply_s("b") == 0.5 and result.first_reply_s("c") is None
    assert result.failing_s() == (0.5, 2.0)
    assert result.after_every_pod_answered(["a", "b"]).per_pod == {"a": 2, "b": 9}


def test_a_timeline_of_one_interval_has_no_width_to_tell() -> None:
    result = LoadResult(per_pod={"a": 1}, timeline=[{"t": 0.0, "per_pod": {"a": 1}}], elapsed_s=0.3)
    with pytest.raises(ValueError, match="two intervals"):
        result.interval_s()
    assert result.interval_s(default=0.5) == 0.5
    assert result.complete_intervals() == []
    assert result.between().per_pod == {"a": 1}

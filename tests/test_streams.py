"""Long-lived streams with real servers: SayHelloStream, the load generator's stream mode,
a stream pinned across a scale-up, and the cut at max connection age + grace."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import HEADLESS, MANIFESTS, wait_for_ready

import grpclab
from grpclab.cluster.kube import load_cli_args
from grpclab.demo._generated import demo_pb2, demo_pb2_grpc
from grpclab.load import LoadResult, LoadSpec, format_table, json_line, parse_json_lines, run
from grpclab.load.runner import build_parser, main, spec_from_args
from grpclab.measure import streams
from grpclab.side_by_side import scale_side_by_side

HOST = "127.0.0.1"
STREAMS = MANIFESTS / "streams"
# The server's settings come from flags here; none may leak in from the environment.
SERVER_ENV = ("POD_IP", "GRPC_PORT", "METRICS_PORT", "GRPC_MAX_CONNECTION_AGE_MS")


@dataclass
class Pod:
    name: str
    port: int
    metrics_port: int

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"


@contextmanager
def demo_servers(tmp_path: Path, *names: str, flags: tuple[str, ...] = ()) -> Iterator[list[Pod]]:
    """`python -m grpclab.demo.server` once per name, on 127.0.0.1; killed by PID afterwards."""
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV and not k.startswith("GRPC")}
    started: list[tuple[str, Path, subprocess.Popen[bytes]]] = []
    try:
        for name in names:
            out = tmp_path / f"{name}.out"
            with out.open("wb") as output:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "grpclab.demo.server", "--host", HOST, "--port", "0"]
                    + ["--pod-name", name, "--no-drain", *flags]
                    + ([] if "--metrics-port" in flags else ["--metrics-port", "0"]),
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            started.append((name, out, proc))
        pods = []
        for name, out, proc in started:
            ready = wait_for_ready(out, proc)
            assert ready, f"{name} did not start:\n{out.read_text()}"
            pods.append(Pod(name, ready.port, ready.metrics_port))
        yield pods
    finally:
        for _, _, proc in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def stream_spec(target: str, **fields: object) -> LoadSpec:
    return LoadSpec(target, method="SayHelloStream", **fields)


# -- The RPC ---------------------------------------------------------------------------------


def test_every_reply_on_a_stream_names_the_pod_and_its_messages_are_counted(tmp_path):
    port = _free_port()
    with demo_servers(tmp_path, "pod-a", flags=("--metrics-port", str(port))) as [pod]:
        with grpc.insecure_channel(pod.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
            call = demo_pb2_grpc.MyServiceStub(ch).SayHelloStream(
                iter([demo_pb2.HelloRequest(name=n) for n in ("Ada", "Alan", "")]), timeout=10
            )
            replies = list(call)
            assert [r.message for r in replies] == [
                "Hello, Ada, from pod-a",
                "Hello, Alan, from pod-a",
                "Hello, world, from pod-a",
            ]
            assert {r.served_by.pod_name for r in replies} == {"pod-a"}
            assert {r.served_by.pod_ip for r in replies} == {HOST}
            assert call.code() == grpc.StatusCode.OK
        metrics = scrape(port)
    method = {
        "grpc_type": "bidi_stream",
        "grpc_service": "mypackage.MyService",
        "grpc_method": "SayHelloStream",
    }
    assert metrics[("grpc_server_started_total", labels(method))] == 1
    assert metrics[("grpc_server_msg_received_total", labels(method))] == 3
    assert metrics[("grpc_server_msg_sent_total", labels(method))] == 3
    assert metrics[("grpc_server_handled_total", labels(method, grpc_code="OK"))] == 1


def test_an_open_stream_counts_its_messages_before_it_is_handled(tmp_path):
    # What notebook 13 tells Prometheus users: handled_total sees a stream only at its end.
    port = _free_port()
    with demo_servers(tmp_path, "pod-a", flags=("--metrics-port", str(port))) as [pod]:
        with grpc.insecure_channel(pod.address, options=[("grpc.enable_http_proxy", 0)]) as ch:
            requests = _Requests()
            call = demo_pb2_grpc.MyServiceStub(ch).SayHelloStream(iter(requests), timeout=10)
            for _ in range(2):
                requests.send(demo_pb2.HelloRequest(name="x"))
                next(call)
            open_metrics = scrape(port)
            requests.close()
            assert list(call) == []
    method = {
        "grpc_type": "bidi_stream",
        "grpc_service": "mypackage.MyService",
        "grpc_method": "SayHelloStream",
    }
    assert open_metrics[("grpc_server_msg_sent_total", labels(method))] == 2
    assert ("grpc_server_handled_total", labels(method, grpc_code="OK")) not in open_metrics


# -- The load generator's stream mode -------------------------------------------------------


def test_stream_mode_counts_each_reply_for_its_pod_and_records_each_stream(tmp_path):
    with demo_servers(tmp_path, "pod-a", "pod-b") as pods:
        target = "ipv4:" + ",".join(pod.address for pod in pods)
        result = run(
            stream_spec(
                target, rpcs=200, concurrency=4, stream_messages=10, lb_policy="round_robin"
            )
        )
    assert result.ok == 200 and result.failed == 0
    assert set(result.per_pod) == {"pod-a", "pod-b"}
    replies = [sum(stream["pods"].values()) for stream in result.streams]
    assert sum(replies) == 200 and max(replies) == 10
    # The run's 200 messages are shared by all workers: only the last stream of each may
    # have ended early.
    assert replies.count(10) >= 200 // 10 - 4
    assert {stream["code"] for stream in result.streams} == {"OK"}
    assert result.most_pods_on_one_stream() == 1
    assert result.stream_messages_per_pod() == result.per_pod
    assert sum(sum(b["per_pod"].values()) for b in result.timeline) == 200
    assert f"streams: {len(replies)} (ended: OK {len(replies)}); most pods on one stream: 1" in (
        format_table(result)
    )


def test_stream_mode_reopens_streams_that_end_by_duration(tmp_path):
    with demo_servers(tmp_path, "pod-a") as [pod]:
        result = run(
            stream_spec(
                pod.address,
                rpcs=None,
                duration_s=1.5,
                concurrency=2,
                stream_duration_s=0.3,
                stream_interval_s=0.02,
            )
        )
    assert result.failed == 0 and result.ok > 0
    # Each worker ends its stream after 0.3 s and opens the next one; the last ones end
    # with the run.
    assert len(result.streams) > 2
    assert all(s["code"] == "OK" and s["closed_s"] >= s["opened_s"] for s in result.streams)
    assert sorted(s["opened_s"] for s in result.streams)[-1] > 0.3


def test_stream_fields_need_a_stream_method_and_the_cli_names_the_flag(capsys):
    with pytest.raises(ValueError, match="LoadSpec.stream_messages, stream_duration_s"):
        LoadSpec("x:1", stream_messages=5).validate()
    with pytest.raises(ValueError, match="LoadSpec.stream_interval_s must be >= 0"):
        stream_spec("x:1", stream_interval_s=-1).validate()
    with pytest.raises(ValueError, match="LoadSpec.stream_duration_s must be > 0"):
        stream_spec("x:1", stream_duration_s=0).validate()
    with pytest.raises(SystemExit):
        main(["x:1", "--method", "SayHelloStream", "--stream-messages", "0"])
    assert "--stream-messages must be a positive integer" in capsys.readouterr().err


STREAM_SPECS = [
    stream_spec("dns:///grpc-server-headless:50051", rpcs=None, duration_s=9.0),
    stream_spec(
        "x:1",
        rpcs=500,
        concurrency=4,
        stream_messages=25,
        stream_duration_s=1.5,
        stream_interval_s=0.02,
        lb_policy="round_robin",
        channel_options={"grpc.dns_min_time_between_resolutions_ms": 1000},
    ),
]


@pytest.mark.parametrize("spec", STREAM_SPECS, ids=range(len(STREAM_SPECS)))
def test_a_stream_spec_survives_the_kube_jobs_cli_and_json(spec):
    parsed = spec_from_args(build_parser().parse_args(load_cli_args(spec)))
    assert (parsed.method, parsed.stream_messages, parsed.stream_duration_s) == (
        spec.method,
        spec.stream_messages,
        spec.stream_duration_s,
    )
    assert parsed.stream_interval_s == spec.stream_interval_s
    assert LoadSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_the_cli_drives_streams_and_its_json_result_keeps_them(tmp_path):
    with demo_servers(tmp_path, "pod-a") as [pod]:
        args = load_cli_args(stream_spec(pod.address, rpcs=30, concurrency=1, stream_messages=5))
        done = subprocess.run(
            [sys.executable, "-m", "grpclab.load", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    _, final = parse_json_lines(done.stdout.splitlines())
    assert final is not None and final.ok == 30 and final.per_pod == {"pod-a": 30}
    assert len(final.streams) == 6 and all(s["pods"] == {"pod-a": 5} for s in final.streams)
    assert parse_json_lines([json_line("result", final)])[1] == final


# -- max connection age and its grace --------------------------------------------------------

AGE_MS, GRACE_MS = 1000, 800
CUT_DETAILS = {
    "UNAVAILABLE": ("max connection age", "Stream removed (sendmsg: Broken pipe"),
    "INTERNAL": ("Internal error from Core",),
}


def test_without_a_grace_a_stream_outlives_its_connections_age(tmp_path):
    flags = ("--max-connection-age-ms", str(AGE_MS))  # grace: grpc core's default, infinite
    with demo_servers(tmp_path, "pod-a", flags=flags) as [pod]:
        result = run(stream_spec(pod.address, rpcs=None, duration_s=2.0, stream_interval_s=0.02))
    assert result.failed == 0 and result.ok > 0
    assert len(result.streams) == 8  # one per worker, never cut
    assert all(s["code"] == "OK" for s in result.streams)


def test_age_plus_grace_cuts_a_long_stream_with_unavailable_and_it_is_reopened(tmp_path):
    flags = ("--max-connection-age-ms", str(AGE_MS), "--max-connection-age-grace-ms", str(GRACE_MS))
    with demo_servers(tmp_path, "pod-a", flags=flags) as [pod]:
        # Paced: the cut mostly meets a read or a pause, where grpcio reports UNAVAILABLE.
        long = stream_spec(
            pod.address, rpcs=None, duration_s=3.0, concurrency=4, stream_interval_s=0.05
        )
        short = stream_spec(
            pod.address, rpcs=None, duration_s=3.0, concurrency=4, stream_interval_s=0.02,
            stream_duration_s=0.1,
        )  # fmt: skip
        long_result, short_result = run(long), run(short)
    cut, table = streams.cut_streams(long_result), format_table(long_result)
    assert cut, table
    assert {s["code"] for s in cut} <= set(streams.CUT_CODES), table
    # What each cut said: grpc core's reason when it met a read; when it met a write,
    # INTERNAL (grpc/grpc#36066), or on a busy machine the closed socket's own error.
    for code, messages in long_result.error_messages.items():
        for message in messages:
            assert message.startswith(CUT_DETAILS[code]), table
    # Never before the earliest GOAWAY (age less the 10 % jitter) plus the whole grace.
    earliest = (0.9 * AGE_MS + GRACE_MS) / 1000
    assert min(streams.first_cuts_s(long_result, opened_before_s=0.2)) >= earliest - 0.02
    assert long_result.failed <= len(cut), table  # one message at most per cut
    assert len(long_result.streams) > 4, table  # the workers opened their streams again
    # Streams shorter than the grace end before it runs out.
    assert short_result.failed == 0, format_table(short_result)
    assert not streams.cut_streams(short_result), short_result.streams


# -- Balancing happens when a stream starts ---------------------------------------------------


def test_a_stream_opened_before_a_scale_up_stays_on_its_pod_while_new_streams_move():
    with grpclab.connect("sandbox") as lab:
        lab.apply(MANIFESTS / "base" / "00-namespace.yaml")
        lab.apply(STREAMS / "deployment-max-age.yaml")  # age 2 s, no grace
        lab.apply(HEADLESS)
        old = [pod.name for pod in lab.wait_ready("grpc-server", timeout=60)]
        target = lab.target("grpc-server-headless")
        same = dict(
            rpcs=None,
            # Long enough for a new pod that starts late on a busy machine (its first
            # renewed stream comes up to about 3 s after it is ready); paced for the CPU.
            duration_s=14,
            concurrency=2,
            stream_interval_s=0.1,
            lb_policy="round_robin",
            channel_options={"grpc.dns_min_time_between_resolutions_ms": 1000},
        )
        run_, new_pods = scale_side_by_side(
            lab,
            {
                "long": stream_spec(target, **same),
                "renewed": stream_spec(target, stream_duration_s=0.5, **same),
            },
            replicas=3,
            at_s=0.5,
        )
    long, renewed = run_.results["long"], run_.results["renewed"]
    assert len(old) == 2 and len(new_pods) == 1
    assert long.failed == 0 and renewed.failed == 0
    assert len(long.streams) == 2 and set(long.per_pod) <= set(old), format_table(long)
    assert streams.reached(renewed, new_pods), format_table(renewed)
    assert long.most_pods_on_one_stream() == renewed.most_pods_on_one_stream() == 1
    assert "long: reached a new pod: no" in streams.pinned_summary(run_.results, new_pods)


# -- Summaries -----------------------------------------------------------------------------


def test_cut_summary_names_how_streams_ended_and_whether_they_were_reopened():
    def stream(opened: float, closed: float, code: str) -> dict:
        return {"opened_s": opened, "closed_s": closed, "pods": {"a": 1}, "code": code}

    reopened = LoadResult(
        per_pod={"a": 3},
        streams=[stream(0, 3, "UNAVAILABLE"), stream(0, 3, "INTERNAL"), stream(3, 9, "OK")],
        elapsed_s=9,
    )
    assert streams.cut_summary(reopened) == (
        "streams cut: some; ended with: UNAVAILABLE, or INTERNAL when the cut met a write; "
        "reopened: yes"
    )
    abandoned = LoadResult(streams=[stream(0, 3, "DEADLINE_EXCEEDED")], elapsed_s=9)
    assert streams.cut_summary(abandoned) == (
        "streams cut: some; ended with: DEADLINE_EXCEEDED; reopened: no"
    )
    assert streams.cut_summary(LoadResult(streams=[stream(0, 9, "OK")])) == "streams cut: none"
    assert streams.first_cuts_s(reopened, opened_before_s=1) == [3, 3]
    # Cut after 2.5 s: the two cuts at 3 s, not the stream that the client closed at 9 s.
    assert [s["code"] for s in streams.cut_after(reopened, 2.5)] == ["UNAVAILABLE", "INTERNAL"]
    assert streams.cut_after(reopened, 3) == []


# -- helpers -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{HOST}:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(base: dict[str, str], **more: str) -> frozenset:
    return frozenset({**base, **more}.items())


class _Requests:
    """A request iterator the test feeds one message at a time (for the sync stream API)."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()

    def send(self, request: demo_pb2.HelloRequest) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Iterator[demo_pb2.HelloRequest]:
        while (request := self._queue.get()) is not None:
            yield request


def test_progress_snapshots_leave_the_stream_records_to_the_final_result(tmp_path):
    snapshots: list[LoadResult] = []
    with demo_servers(tmp_path, "pod-a") as [pod]:
        final = run(
            stream_spec(
                pod.address,
                rpcs=None,
                duration_s=1.0,
                concurrency=2,
                stream_duration_s=0.1,
                stream_interval_s=0.01,
                interval_s=0.2,
            ),
            snapshots.append,
        )
    progress = [snapshot for snapshot in snapshots if not snapshot.done]
    assert progress and all(snapshot.streams == [] for snapshot in progress)
    assert progress[-1].ok > 0 and len(final.streams) > 2


def test_client_code_refuses_a_stream_spec_and_says_where_to_look():
    with pytest.raises(ValueError, match="no printed client for the stream mode"):
        stream_spec("x:1").client_code()

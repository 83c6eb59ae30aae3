"""Load generator: drives MyService RPCs and counts which pod answered each one.

Unary methods make one call per request. `SayHelloStream` is the stream mode: each worker
holds one bidirectional stream and counts its replies like calls (see `LoadSpec`).

Library (`run`, `run_async`) and CLI (`python -m grpclab.load --json ...`).
The CLI is also the entry point of the in-cluster Job on the kube backend.

Line protocol of `--json` (what the kube backend reads back from the Job's logs):
every protocol line is one JSON object with exactly one key. `{"progress": {...}}`
carries a snapshot (only with `--progress-json`, one per interval) and
`{"result": {...}}` carries the final LoadResult; it is always the last protocol
line. Any other line (a gRPC log line on a merged stream) is not part of the
protocol, and `parse_json_lines` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
import threading
import time
import urllib.parse
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import grpc

from grpclab.demo._generated import demo_pb2, demo_pb2_grpc
from grpclab.local_http import open_local

UNARY_METHODS = ("SayHello", "GetUser")
STREAM_METHODS = ("SayHelloStream",)
METHODS = (*UNARY_METHODS, *STREAM_METHODS)
LATENCY_KEYS = ("p50", "p90", "p99", "max", "mean")


DEFAULT_RPCS = 300
# The service the demo's methods belong to: where a retry or hedging policy applies.
SERVICE = "mypackage.MyService"


@dataclass
class LoadSpec:
    """What to send. One of `rpcs` and `duration_s` bounds the run (300 RPCs if neither).

    Stream mode (`method="SayHelloStream"`): each of the `concurrency` workers opens a
    stream, sends a request, waits for its reply and sends the next (one every
    `stream_interval_s` seconds, or at once when 0), so `rpcs` counts messages and
    `deadline_s` is each reply's. A stream ends after `stream_messages` replies
    or `stream_duration_s` seconds, whichever comes first (neither: when the run ends);
    then the worker opens a new one. A stream the server ends with an error is reopened too.
    """

    target: str
    rpcs: int | None = None
    duration_s: float | None = None
    concurrency: int = 8
    channels: int = 1
    # Calls started per second, at most, over all workers (unary methods): each call waits
    # for its turn on one schedule, t0 + n / rate. None: as fast as the workers go, which on
    # a laptop measures its CPU more than the balancer. Where calls go does not depend on it.
    rate: float | None = None
    # A gRPC LB policy name ("pick_first", "round_robin", ...) put into the
    # service config; None leaves the channel's default (pick_first).
    lb_policy: str | None = None
    # A full service config (JSON text or dict); overrides lb_policy when set.
    service_config: str | dict[str, Any] | None = None
    channel_options: dict[str, Any] = field(default_factory=dict)
    # Every call's deadline; None sends calls with none, which can then wait forever.
    deadline_s: float | None = 5.0
    method: str = "SayHello"  # or "GetUser", or "SayHelloStream" (stream mode)
    interval_s: float = 0.5  # width of one timeline bucket and of progress updates
    # TLS: a PEM CA bundle path to trust and the name to check (SNI/authority).
    tls_ca_file: str | None = None
    tls_server_name: str | None = None
    # The Envoy admin URL of the client's own sidecar (http://127.0.0.1:15000 in an Istio
    # pod). When set, the result's proxy_counters say what that sidecar did during the run.
    proxy_admin: str | None = None
    # gRFC A6, in the service config: a retryPolicy or a hedgingPolicy (not both) for
    # MyService's methods, and the channel's retryThrottling. Each is the JSON object A6
    # defines, e.g. {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
    # "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}.
    retry_policy: dict[str, Any] | None = None
    hedging_policy: dict[str, Any] | None = None
    retry_throttling: dict[str, Any] | None = None
    # Stream mode only: when a worker closes its stream and opens a new one.
    stream_messages: int | None = None
    stream_duration_s: float | None = None
    stream_interval_s: float = 0.0  # stream mode: from one request to the next on a stream

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def streaming(self) -> bool:
        return self.method in STREAM_METHODS

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadSpec:
        _reject_unknown_keys(cls, data)
        return cls(**data)

    def __post_init__(self) -> None:
        if self.rpcs is None and self.duration_s is None:
            self.rpcs = DEFAULT_RPCS

    def validate(self) -> None:
        """Raise ValueError naming the first LoadSpec field that cannot drive a run."""
        if self.rpcs is not None and self.duration_s is not None:
            raise ValueError(
                f"LoadSpec: set exactly one of rpcs and duration_s (got rpcs={self.rpcs!r}, "
                f"duration_s={self.duration_s!r})"
            )
        if self.rpcs is not None and not _positive_int(self.rpcs):
            raise ValueError(f"LoadSpec.rpcs must be a positive integer, got {self.rpcs!r}")
        if self.duration_s is not None and not _positive_number(self.duration_s):
            raise ValueError(f"LoadSpec.duration_s must be > 0 seconds, got {self.duration_s!r}")
        for name in ("concurrency", "channels"):
            value = getattr(self, name)
            if not _positive_int(value):
                raise ValueError(f"LoadSpec.{name} must be a positive integer, got {value!r}")
        if self.concurrency < self.channels:
            # Workers are what open connections; a channel without one would never connect.
            raise ValueError(
                f"LoadSpec.concurrency ({self.concurrency}) must be >= LoadSpec.channels "
                f"({self.channels}) so that every channel carries calls"
            )
        if self.rate is not None and not _positive_number(self.rate):
            raise ValueError(f"LoadSpec.rate must be > 0 calls per second, got {self.rate!r}")
        if self.rate is not None and self.streaming:
            raise ValueError(
                "LoadSpec.rate paces unary calls; a stream's messages are paced by "
                "stream_interval_s"
            )
        for name in ("deadline_s", "interval_s"):
            value = getattr(self, name)
            if not _positive_number(value) and not (name == "deadline_s" and value is None):
                raise ValueError(f"LoadSpec.{name} must be > 0 seconds, got {value!r}")
        if self.method not in METHODS:
            raise ValueError(f"LoadSpec.method must be one of {METHODS}, got {self.method!r}")
        if self.stream_messages is not None and not _positive_int(self.stream_messages):
            raise ValueError(
                f"LoadSpec.stream_messages must be a positive integer, got {self.stream_messages!r}"
            )
        if self.stream_duration_s is not None and not _positive_number(self.stream_duration_s):
            raise ValueError(
                f"LoadSpec.stream_duration_s must be > 0 seconds, got {self.stream_duration_s!r}"
            )
        interval = self.stream_interval_s
        if not _positive_number(interval) and interval != 0:
            raise ValueError(f"LoadSpec.stream_interval_s must be >= 0 seconds, got {interval!r}")
        if not self.streaming and (self.stream_messages or self.stream_duration_s or interval):
            raise ValueError(
                "LoadSpec.stream_messages, stream_duration_s and stream_interval_s need a "
                f"streaming method ({', '.join(STREAM_METHODS)}); method is {self.method!r}"
            )
        if not isinstance(self.target, str) or not self.target:
            raise ValueError(f"LoadSpec.target must be a non-empty string, got {self.target!r}")
        if not isinstance(self.channel_options, dict):
            kind = type(self.channel_options).__name__
            raise ValueError(f"LoadSpec.channel_options must be a dict, got {kind}")
        if self.tls_server_name is not None and self.tls_ca_file is None:
            raise ValueError("LoadSpec.tls_server_name is set but LoadSpec.tls_ca_file is not")
        self.service_config_json()

    def service_config_dict(self) -> dict[str, Any] | None:
        """The service config this spec puts on its channels (None: none)."""
        config = self.service_config
        if config is None:
            config = (
                {} if self.lb_policy is None else {"loadBalancingConfig": [{self.lb_policy: {}}]}
            )
        if isinstance(config, str):
            try:
                config = json.loads(config)
            except json.JSONDecodeError as error:
                raise ValueError(f"LoadSpec.service_config is not valid JSON: {error}") from None
        if not isinstance(config, dict):
            raise ValueError(
                f"LoadSpec.service_config must be a JSON object, got {type(config).__name__}"
            )
        config = {**config, **self._retry_config(config)}
        return config or None

    def _retry_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """What retry_policy, hedging_policy and retry_throttling add to `config` (gRFC A6)."""
        fields_ = {
            "retry_policy": ("retryPolicy", self.retry_policy),
            "hedging_policy": ("hedgingPolicy", self.hedging_policy),
            "retry_throttling": ("retryThrottling", self.retry_throttling),
        }
        for name, (key, value) in fields_.items():
            if value is not None and not isinstance(value, dict):
                kind = type(value).__name__
                raise ValueError(f"LoadSpec.{name} must be a dict (A6's {key}), got {kind}")
        if self.retry_policy is not None and self.hedging_policy is not None:
            # gRFC A6: "Only one of retryPolicy or hedgingPolicy may be set."
            raise ValueError("LoadSpec: set retry_policy or hedging_policy, not both (gRFC A6)")
        added: dict[str, Any] = {}
        for name in ("retry_policy", "hedging_policy"):
            key, value = fields_[name]
            if value is None:
                continue
            if "methodConfig" in config:
                raise ValueError(
                    f"LoadSpec.{name} and a methodConfig in LoadSpec.service_config: "
                    "set the policy in one place"
                )
            added["methodConfig"] = [{"name": [{"service": SERVICE}], key: value}]
        if self.retry_throttling is not None:
            if "retryThrottling" in config:
                raise ValueError(
                    "LoadSpec.retry_throttling and a retryThrottling in LoadSpec.service_config: "
                    "set it in one place"
                )
            added["retryThrottling"] = self.retry_throttling
        return added

    def service_config_json(self) -> str | None:
        """The service config this spec puts on its channels, as JSON text (None: none)."""
        config = self.service_config_dict()
        return None if config is None else json.dumps(config, separators=(",", ":"))

    def client_code(
        self, language: str = "python", *, in_pod: bool = False, target: str | None = None
    ) -> str:
        """The plain client code this spec stands for, in "python" or "node".

        in_pod: the target as a client in a pod writes it; target: print this one instead
        (grpclab.load.client_code says more).
        """
        from grpclab.load.client_code import client_code

        return client_code(self, language, in_pod=in_pod, target=target)


@dataclass
class LoadResult:
    """What happened. Serialisable to JSON so the kube Job can hand it back."""

    per_pod: dict[str, int] = field(default_factory=dict)  # pod name -> OK replies
    pod_ips: dict[str, str] = field(default_factory=dict)  # pod name -> pod IP
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    # Why they failed: status code name -> {the status message: count}. Distinct messages
    # are capped at MAX_ERROR_MESSAGES; later new ones count under OTHER_MESSAGES.
    error_messages: dict[str, dict[str, int]] = field(default_factory=dict)
    # p50, p90, p99, max, mean of OK calls (a failed call's time says little); {} if none.
    latency_ms: dict[str, float] = field(default_factory=dict)
    # One entry per interval: {"t": seconds since start, "per_pod": {pod: OK replies}}.
    # Entries also carry "errors": {status code name: count}. Calls count in the interval
    # in which they finished; empty intervals are kept, and the last one may be partial.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    done: bool = False  # False in progress snapshots, True in the final result
    # With LoadSpec.proxy_admin: PROXY_COUNTERS' names -> how much each grew during the run.
    # The sidecar counts for every client in its pod, so runs must not overlap to be exact.
    proxy_counters: dict[str, int] = field(default_factory=dict)
    # Stream mode, in the final result only (progress snapshots leave it empty, so that a
    # Job's progress lines stay small): one entry per stream, in the order they ended, at
    # most MAX_STREAM_RECORDS:
    # {"opened_s", "closed_s": seconds since start, "pods": {pod: OK replies on it},
    # "code": how it ended, "OK" or a status code name}.
    streams: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(self.per_pod.values())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def failed_share(self) -> float:
        """The fraction (0..1) of the run's calls that failed."""
        return self.failed / self.total if self.total else 0.0

    @property
    def rate(self) -> float:
        """Finished calls (OK and failed) per second."""
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def share(self, pod: str) -> float:
        """The fraction (0..1) of OK replies that `pod` served."""
        return self.per_pod.get(pod, 0) / self.ok if self.ok else 0.0

    # -- The timeline's questions: every caller asks them here, not of the timeline itself.
    # An interval is [t, t + interval_s); a call counts in the one in which it finished.

    def interval_s(self, default: float | None = None) -> float:
        """The width of one timeline interval (LoadSpec.interval_s), read from the t values.

        A timeline of fewer than two intervals does not show it: `default`, or ValueError.
        """
        if len(self.timeline) >= 2:
            return self.timeline[1]["t"] - self.timeline[0]["t"]
        if default is None:
            raise ValueError("the timeline needs two intervals or more to tell their width")
        return default

    def complete_intervals(self) -> list[dict[str, Any]]:
        """The timeline without its last interval when the run's end cut that one short.

        In a progress snapshot the newest interval is still filling, and the final result's
        last one is usually partial: drawn or compared, it would look like a drop in traffic
        that did not happen. A timeline of one interval is always partial.
        """
        if len(self.timeline) < 2:
            return []
        width = self.interval_s()
        last = self.timeline[-1]
        partial = last["t"] + width > self.elapsed_s + 1e-6
        return self.timeline[:-1] if partial else list(self.timeline)

    def between(
        self, since_s: float = 0.0, until_s: float = math.inf, touching: bool = False
    ) -> LoadResult:
        """The calls that finished between `since_s` and `until_s` (seconds into the run).

        The resolution is one interval: the intervals that start in [since_s, until_s)
        count, or with `touching`, every interval that overlaps the window (also the one
        under way at since_s). The answer is a LoadResult of those calls: per_pod, errors,
        pod_ips, and elapsed_s the time its intervals span. The timeline keeps no latencies
        or status messages per interval, so the answer has none, and no timeline.
        """
        if touching:
            width = self.interval_s()
            chosen = [i for i in self.timeline if i["t"] + width > since_s and i["t"] < until_s]
        else:
            chosen = [i for i in self.timeline if since_s <= i["t"] < until_s]
        per_pod: dict[str, int] = {}
        errors: dict[str, int] = {}
        for interval in chosen:
            for pod, calls in interval["per_pod"].items():
                per_pod[pod] = per_pod.get(pod, 0) + calls
            for code, calls in interval.get("errors", {}).items():
                errors[code] = errors.get(code, 0) + calls
        span = self._end_of(chosen[-1]) - chosen[0]["t"] if chosen else 0.0
        return LoadResult(
            per_pod=dict(sorted(per_pod.items())),
            pod_ips={pod: ip for pod, ip in self.pod_ips.items() if pod in per_pod},
            errors=dict(sorted(errors.items())),
            elapsed_s=round(max(span, 0.0), 6),
            done=self.done,
        )

    def first_reply_s(self, pod: str) -> float | None:
        """Start of the first interval in which `pod` answered a call; None if it never did."""
        for interval in self.timeline:
            if interval["per_pod"].get(pod, 0) > 0:
                return interval["t"]
        return None

    def failing_s(self) -> tuple[float, float] | None:
        """From the start of the first interval with a failed call to the end of the last one.

        None when no call failed.
        """
        failing = [interval for interval in self.timeline if interval.get("errors")]
        if not failing:
            return None
        return failing[0]["t"], self._end_of(failing[-1])

    def after_every_pod_answered(self, pods: Iterable[str]) -> LoadResult:
        """The calls from the first interval after every one of `pods` answered (`between`).

        round_robin picks among READY subchannels only, so the calls made while a channel is
        still connecting go to the pods it reached first. Evenness is a property of the
        balanced steady state: count from the interval after the last pod's first reply.
        Empty when some pod never answered.
        """
        firsts = [self.first_reply_s(pod) for pod in pods]
        if any(t is None for t in firsts):
            return LoadResult(done=self.done)
        later = [interval["t"] for interval in self.timeline if interval["t"] > max(firsts)]
        return self.between(later[0]) if later else LoadResult(done=self.done)

    def _end_of(self, interval: dict[str, Any]) -> float:
        """Where `interval` ends: one width after its start, or at the run's end if sooner."""
        end = interval["t"] + self.interval_s(default=self.elapsed_s)
        return min(end, self.elapsed_s) if self.elapsed_s > interval["t"] else end

    def stream_messages_per_pod(
        self, opened_from_s: float = 0.0, opened_before_s: float = math.inf
    ) -> dict[str, int]:
        """OK replies per pod on the streams opened in [opened_from_s, opened_before_s)."""
        counted: dict[str, int] = {}
        for stream in self.streams:
            if opened_from_s <= stream["opened_s"] < opened_before_s:
                for pod, replies in stream["pods"].items():
                    counted[pod] = counted.get(pod, 0) + replies
        return dict(sorted(counted.items()))

    def most_pods_on_one_stream(self) -> int:
        """The most pods that answered on any one stream: 1 when each stream kept its pod."""
        return max((len(stream["pods"]) for stream in self.streams), default=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadResult:
        _reject_unknown_keys(cls, data)
        return cls(**data)


MAX_ERROR_MESSAGES = 20
OTHER_MESSAGES = "(other messages)"
MAX_STREAM_RECORDS = 2000  # a few hundred bytes each, and the Job prints them


def _reject_unknown_keys(cls: type, data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"{cls.__name__}.from_dict: unknown field(s) {', '.join(unknown)}")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


class _Tally:
    """Counters the workers write on the hot path; snapshots read them."""

    def __init__(self, spec: LoadSpec) -> None:
        self.interval_s = spec.interval_s
        self.limit = spec.rpcs if spec.rpcs is not None else math.inf
        self.started = 0
        self.gap_s = 1 / spec.rate if spec.rate else 0.0  # between scheduled call starts
        self.t0 = time.perf_counter()
        self.end = self.t0 + spec.duration_s if spec.duration_s is not None else math.inf
        # Keyed by (bucket index, pod name) and (bucket index, status code name):
        # one dict update per call, and per-pod totals and the timeline both derive from it.
        self.ok: dict[tuple[int, str], int] = {}
        self.errors: dict[tuple[int, str], int] = {}
        self.messages: dict[tuple[str, str], int] = {}  # (code name, status message)
        self.pod_ips: dict[str, str] = {}
        self.latencies = array("d")  # seconds, OK calls only; 8 bytes per call
        self._sorted: list[float] = []
        self.streams: list[dict[str, Any]] = []  # stream mode: the ended streams

    def snapshot(self, done: bool) -> LoadResult:
        """A LoadResult of everything counted so far; shares nothing with the tally."""
        elapsed = time.perf_counter() - self.t0
        ok, errors = dict(self.ok), dict(self.errors)
        last_bucket = max((bucket for bucket, _ in (*ok, *errors)), default=0)
        buckets = max(last_bucket + 1, math.ceil(elapsed / self.interval_s))
        timeline = [
            {"t": round(i * self.interval_s, 6), "per_pod": {}, "errors": {}}
            for i in range(buckets)
        ]
        per_pod: dict[str, int] = {}
        for (bucket, pod), count in sorted(ok.items()):
            timeline[bucket]["per_pod"][pod] = count
            per_pod[pod] = per_pod.get(pod, 0) + count
        codes: dict[str, int] = {}
        for (bucket, code), count in sorted(errors.items()):
            timeline[bucket]["errors"][code] = count
            codes[code] = codes.get(code, 0) + count
        messages: dict[str, dict[str, int]] = {}
        for (code, message), count in sorted(dict(self.messages).items()):
            messages.setdefault(code, {})[message] = count
        return LoadResult(
            per_pod=dict(sorted(per_pod.items())),
            pod_ips=dict(sorted(self.pod_ips.items())),
            errors=dict(sorted(codes.items())),
            error_messages=messages,
            latency_ms=self._latency_ms(),
            timeline=timeline,
            elapsed_s=round(elapsed, 6),
            done=done,
            streams=list(self.streams) if done else [],
        )

    def _latency_ms(self) -> dict[str, float]:
        # Extending the already sorted prefix keeps each snapshot's sort near-linear
        # (timsort merges the two runs), so long runs do not stall the workers.
        self._sorted.extend(self.latencies[len(self._sorted) :])
        self._sorted.sort()
        return latency_summary_ms(self._sorted)


def latency_summary_ms(sorted_seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in ms (nearest rank) of sorted latencies in seconds; {} if none."""
    n = len(sorted_seconds)
    if n == 0:
        return {}
    summary = {f"p{q}": sorted_seconds[max(0, math.ceil(q / 100 * n) - 1)] for q in (50, 90, 99)}
    summary["max"] = sorted_seconds[-1]
    summary["mean"] = math.fsum(sorted_seconds) / n
    return {key: round(value * 1000, 3) for key, value in summary.items()}


async def _worker(call: Any, request: Any, timeout: float, tally: _Tally) -> None:
    # The hot path: one dict update and one array append per call.
    perf = time.perf_counter
    limit, end, gap = tally.limit, tally.end, tally.gap_s
    while tally.started < limit:
        if gap:
            # Take the next turn on the shared schedule and wait for it.
            due = tally.t0 + tally.started * gap
            if due >= end:
                return
            tally.started += 1
            if due > perf():
                await asyncio.sleep(due - perf())
            begin = perf()
            if begin >= end:
                tally.started -= 1  # the run ended while this call waited for its turn
                return
        else:
            begin = perf()
            if begin >= end:
                return
            tally.started += 1
        try:
            reply = await call(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            _count_error(tally, error.code().name, error.details(), perf())
            continue
        _count_reply(tally, reply, begin, perf())


def _count_reply(tally: _Tally, reply: Any, begin: float, now: float) -> str:
    """Count one OK reply for the pod that sent it; returns the pod's name."""
    tally.latencies.append(now - begin)
    served = reply.served_by
    pod = served.pod_name or served.pod_ip or "unknown"
    key = (int((now - tally.t0) / tally.interval_s), pod)
    tally.ok[key] = tally.ok.get(key, 0) + 1
    if pod not in tally.pod_ips:
        tally.pod_ips[pod] = served.pod_ip
    return pod


def _count_error(tally: _Tally, code: str, details: str | None, now: float) -> str:
    """Count one failed call (or stream message) under its status code name; returns it."""
    key = (int((now - tally.t0) / tally.interval_s), code)
    tally.errors[key] = tally.errors.get(key, 0) + 1
    why = (code, details or "")
    if why not in tally.messages and len(tally.messages) >= MAX_ERROR_MESSAGES:
        why = (code, OTHER_MESSAGES)
    tally.messages[why] = tally.messages.get(why, 0) + 1
    return code


async def _stream_worker(open_stream: Any, request: Any, spec: LoadSpec, tally: _Tally) -> None:
    """Hold one stream at a time: a request, its reply, the next request; reopen when it ends."""
    perf = time.perf_counter
    t0, limit, end, timeout = tally.t0, tally.limit, tally.end, spec.deadline_s
    most, interval = spec.stream_messages or math.inf, spec.stream_interval_s
    while tally.started < limit and perf() < end:
        call = open_stream()
        opened = perf()
        closes = min(end, opened + spec.stream_duration_s) if spec.stream_duration_s else end
        pods: dict[str, int] = {}
        replies, code, due = 0, "OK", opened
        try:
            while replies < most and tally.started < limit:
                if interval and due > perf():
                    await asyncio.sleep(due - perf())
                begin = perf()
                due = begin + interval
                if begin >= closes:
                    break
                tally.started += 1
                try:
                    await call.write(request)
                    async with asyncio.timeout(timeout):
                        reply = await call.read()
                except grpc.aio.AioRpcError as error:
                    # A write that races the stream's end fails as INTERNAL "Internal error
                    # from Core" in grpcio's asyncio client, hiding the status (grpc/grpc#36066).
                    code = _count_error(tally, error.code().name, error.details(), perf())
                    break
                except TimeoutError:
                    why = f"no reply on the stream within {timeout:g} s"
                    code = _count_error(tally, "DEADLINE_EXCEEDED", why, perf())
                    break
                except asyncio.InvalidStateError:  # the stream ended before this write
                    reply = grpc.aio.EOF
                if reply is grpc.aio.EOF:  # the stream ended; this request got no reply
                    code = (await call.code()).name
                    if code != "OK":
                        _count_error(tally, code, await call.details(), perf())
                    break
                pod = _count_reply(tally, reply, begin, perf())
                pods[pod] = pods.get(pod, 0) + 1
                replies += 1
            if code == "OK":
                await call.done_writing()  # a polite end: the server's handler returns OK
                async with asyncio.timeout(timeout):
                    code = (await call.code()).name
        except grpc.aio.AioRpcError as error:  # the stream ended while being closed
            code = error.code().name
        except TimeoutError:
            code = "DEADLINE_EXCEEDED"
        finally:
            call.cancel()  # a no-op once the stream has ended
            if len(tally.streams) < MAX_STREAM_RECORDS:
                tally.streams.append(
                    {
                        "opened_s": round(opened - t0, 6),
                        "closed_s": round(perf() - t0, 6),
                        "pods": pods,
                        "code": code,
                    }
                )


async def _report(tally: _Tally, on_progress: Callable[[LoadResult], None]) -> None:
    # Runs beside the workers; it wakes at bucket boundaries so snapshots line up with buckets.
    tick = 1
    while True:
        await asyncio.sleep(max(0.0, tally.t0 + tick * tally.interval_s - time.perf_counter()))
        on_progress(tally.snapshot(done=False))
        tick = int((time.perf_counter() - tally.t0) / tally.interval_s) + 1


def channel_options(spec: LoadSpec) -> list[tuple[str, Any]]:
    """The options every channel of `spec` is created with."""
    options = dict(spec.channel_options)
    # Channels whose target and options are identical share one subchannel pool, so N
    # such channels ride ONE TCP connection (measured: 3 channels, 1 peer at the
    # server). A per-channel pool makes `channels=N` open N connections, as N clients would.
    options.setdefault("grpc.use_local_subchannel_pool", 1)
    # Targets are loopback (sandbox) or in-cluster (kube Job): never a proxy's business,
    # and a laptop's $http_proxy would otherwise swallow calls to 127.0.0.x.
    options.setdefault("grpc.enable_http_proxy", 0)
    config = spec.service_config_json()
    if config is not None:
        options["grpc.service_config"] = config
    if spec.tls_server_name:
        options.setdefault("grpc.ssl_target_name_override", spec.tls_server_name)
        options.setdefault("grpc.default_authority", spec.tls_server_name)
    return list(options.items())


def open_channel(spec: LoadSpec) -> grpc.aio.Channel:
    """One grpc.aio channel to `spec.target` with the spec's options and credentials."""
    options = channel_options(spec)
    if spec.tls_ca_file is None:
        return grpc.aio.insecure_channel(spec.target, options=options)
    try:
        with open(spec.tls_ca_file, "rb") as ca_file:
            root_certificates = ca_file.read()
    except OSError as error:
        raise ValueError(f"LoadSpec.tls_ca_file: cannot read {spec.tls_ca_file}: {error}") from None
    credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
    return grpc.aio.secure_channel(spec.target, credentials, options=options)


def _request(method: str) -> Any:
    if method == "GetUser":
        return demo_pb2.GetUserRequest(user_id="u-1")
    return demo_pb2.HelloRequest(name="grpclab")


# What a client's sidecar counts that its calls cannot see: retries it made on the calls'
# behalf, and backends its outlier detection ejected. Envoy stat names; Istio names its
# outbound clusters "outbound|PORT||HOST", and so does the sandbox's sidecar.
PROXY_COUNTERS = {
    "retries": r"^cluster\.outbound\|.*\.upstream_rq_retry$",
    "ejections": r"^cluster\.outbound\|.*\.outlier_detection\.ejections_enforced_total$",
}


def read_proxy_counters(admin_url: str) -> dict[str, int]:
    """The sum of each PROXY_COUNTERS family in the Envoy at `admin_url`, right now."""
    totals = {}
    for name, pattern in PROXY_COUNTERS.items():
        query = urllib.parse.urlencode({"filter": pattern, "format": "json"})
        url = f"{admin_url.rstrip('/')}/stats?{query}"
        try:
            with open_local(url, timeout=5) as reply:
                stats = json.loads(reply.read()).get("stats", [])
        except (OSError, ValueError) as error:
            raise RuntimeError(
                f"LoadSpec.proxy_admin: cannot read the sidecar's stats at {url}: {error}"
            ) from None
        totals[name] = sum(s["value"] for s in stats if isinstance(s.get("value"), int))
    return totals


async def run_async(
    spec: LoadSpec, on_progress: Callable[[LoadResult], None] | None = None
) -> LoadResult:
    """Drive `spec` on the running event loop; returns the final result (done=True)."""
    spec.validate()
    counted_before = (
        await asyncio.to_thread(read_proxy_counters, spec.proxy_admin) if spec.proxy_admin else {}
    )
    channels = [open_channel(spec) for _ in range(spec.channels)]
    tasks: list[asyncio.Task[None]] = []
    workers: set[asyncio.Task[None]] = set()
    try:
        calls = [getattr(demo_pb2_grpc.MyServiceStub(channel), spec.method) for channel in channels]
        request = _request(spec.method)
        tally = _Tally(spec)
        workers.update(
            asyncio.create_task(
                _stream_worker(calls[i % len(calls)], request, spec, tally)
                if spec.streaming
                else _worker(calls[i % len(calls)], request, spec.deadline_s, tally)
            )
            for i in range(spec.concurrency)
        )
        tasks.extend(workers)
        if on_progress is not None:
            tasks.append(asyncio.create_task(_report(tally, on_progress)))
        while workers:
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()  # a worker's bug or an on_progress error ends the run here
                tasks.remove(task)
                workers.discard(task)
        for task in tasks:
            task.cancel()  # the reporter
        await asyncio.gather(*tasks, return_exceptions=True)
        result = tally.snapshot(done=True)
        if spec.proxy_admin:
            counted_after = await asyncio.to_thread(read_proxy_counters, spec.proxy_admin)
            result.proxy_counters = {
                name: counted_after[name] - counted_before[name] for name in PROXY_COUNTERS
            }
        if on_progress is not None:
            on_progress(result)
        return result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)


def run(spec: LoadSpec, on_progress: Callable[[LoadResult], None] | None = None) -> LoadResult:
    """Blocking `run_async` on its own loop and thread; safe inside Jupyter's running loop."""
    spec.validate()
    state: dict[str, Any] = {}
    loop_ready, finished = threading.Event(), threading.Event()

    def drive() -> None:
        loop = asyncio.new_event_loop()
        try:
            state["task"] = loop.create_task(run_async(spec, on_progress))
            state["loop"] = loop
            loop_ready.set()
            state["result"] = loop.run_until_complete(state["task"])
        except BaseException as error:  # handed to the caller's thread below
            state["error"] = error
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()
            finally:
                loop_ready.set()
                finished.set()

    thread = threading.Thread(target=drive, name="grpclab-load", daemon=True)
    thread.start()
    try:
        # An Event, not Thread.join(): on Python 3.11 a KeyboardInterrupt that lands inside
        # join() marks the still-running thread as stopped. The timed wait also runs signal
        # handlers promptly when SIGINT was delivered to another thread.
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        # Cancelling the task cancels every in-flight RPC and closes the channels.
        loop_ready.wait()
        try:
            state["loop"].call_soon_threadsafe(state["task"].cancel)
        except (KeyError, RuntimeError):
            pass  # the loop never started or has already finished
        finished.wait(timeout=(spec.deadline_s or 0) + 5)
        # The task and its CancelledError form a cycle with `state`; breaking it frees the
        # cancelled calls, and so their connections, now instead of at the next gc pass.
        state.clear()
        raise
    thread.join()
    error, result = state.pop("error", None), state.pop("result", None)
    state.clear()
    if error is not None:
        raise error
    return result


def parse_json_lines(lines: Iterable[str]) -> tuple[list[LoadResult], LoadResult | None]:
    """Progress snapshots and the final result from `--json` output; other lines are skipped."""
    progress: list[LoadResult] = []
    final: LoadResult | None = None
    for line in lines:
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            continue
        if not isinstance(message, dict) or len(message) != 1:
            continue
        if "progress" in message:
            progress.append(LoadResult.from_dict(message["progress"]))
        elif "result" in message:
            final = LoadResult.from_dict(message["result"])
    return progress, final


def json_line(kind: str, result: LoadResult) -> str:
    """One protocol line: kind is "progress" or "result"."""
    return json.dumps({kind: result.to_dict()}, separators=(",", ":"))


def format_table(result: LoadResult) -> str:
    """A human summary: replies and share per pod, errors, rate and latencies."""
    width = max((len(pod) for pod in result.per_pod), default=3)
    lines = [f"{'pod':<{width}}  {'ip':<15}  {'replies':>8}  {'share':>6}"]
    for pod, count in result.per_pod.items():
        ip = result.pod_ips.get(pod, "")
        lines.append(f"{pod:<{width}}  {ip:<15}  {count:>8}  {result.share(pod):>6.1%}")
    if not result.per_pod:
        lines.append("(no OK replies)")
    errors = ", ".join(f"{code} {count}" for code, count in result.errors.items())
    lines.append(f"errors: {errors or 'none'}")
    for code, messages in result.error_messages.items():
        for message, count in messages.items():
            lines.append(f"  {code} x{count}: {message or '(no message)'}")
    unit = "messages" if result.streams else "calls"
    lines.append(
        f"{unit}: {result.total} (ok {result.ok}, failed {result.failed}) in "
        f"{result.elapsed_s:.2f} s, {result.rate:.0f} {unit}/s"
    )
    if result.streams:
        ended: dict[str, int] = {}
        for stream in result.streams:
            ended[stream["code"]] = ended.get(stream["code"], 0) + 1
        how = ", ".join(f"{code} {count}" for code, count in sorted(ended.items()))
        lines.append(
            f"streams: {len(result.streams)} (ended: {how}); "
            f"most pods on one stream: {result.most_pods_on_one_stream()}"
        )
    if result.latency_ms:
        latency = "  ".join(f"{key} {result.latency_ms[key]:.2f}" for key in LATENCY_KEYS)
        lines.append(f"latency ms (OK {unit}): {latency}")
    return "\n".join(lines)


def _option(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"--option expects key=value, got {text!r}")
    try:
        return key, int(value)
    except ValueError:
        return key, value


# LoadSpec fields as the CLI spells them, so that a bad flag's error names the flag.
CLI_FLAGS = {
    "target": "TARGET", "rpcs": "--rpcs", "duration_s": "--duration",
    "concurrency": "--concurrency", "channels": "--channels", "deadline_s": "--deadline",
    "interval_s": "--interval", "service_config": "--service-config", "tls_ca_file": "--tls-ca",
    "tls_server_name": "--tls-server-name", "method": "--method", "channel_options": "--option",
    "proxy_admin": "--proxy-admin", "stream_messages": "--stream-messages",
    "stream_duration_s": "--stream-duration", "stream_interval_s": "--stream-interval",
    "rate": "--rate",
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m grpclab.load",
        description="Drive MyService RPCs at TARGET and count which pod answered each one.",
    )
    parser.add_argument("target", help="gRPC target, e.g. dns:///my-service:50051")
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--rpcs", type=int, help="total calls to make (default 300)")
    bound.add_argument("--duration", type=float, help="seconds to keep calling")
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument(
        "--rate", type=float, help="calls started per second at most (default: no limit)"
    )
    parser.add_argument(
        "--channels", type=int, default=1, help="gRPC channels, each with its own connections"
    )
    parser.add_argument("--lb-policy", help="pick_first, round_robin, ...")
    parser.add_argument("--service-config", help="service config JSON (overrides --lb-policy)")
    parser.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="channel option; the value is an int when it parses as one (repeatable)",
    )
    deadline = parser.add_mutually_exclusive_group()
    deadline.add_argument("--deadline", type=float, default=5.0, help="per-call deadline, seconds")
    deadline.add_argument(
        "--no-deadline", action="store_true", help="send calls without a deadline"
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="SayHello",
        help="SayHelloStream: each of --concurrency workers holds a stream (default %(default)s)",
    )
    parser.add_argument(
        "--stream-messages", type=int, help="with a stream method: replies per stream"
    )
    parser.add_argument(
        "--stream-duration", type=float, help="with a stream method: seconds per stream"
    )
    parser.add_argument(
        "--stream-interval",
        type=float,
        default=0.0,
        help="with a stream method: seconds from one request to the next (0: at once)",
    )
    parser.add_argument("--interval", type=float, default=0.5, help="timeline bucket, seconds")
    parser.add_argument("--tls-ca", help="PEM CA bundle to trust (enables TLS)")
    parser.add_argument("--tls-server-name", help="name to check in the server certificate")
    parser.add_argument(
        "--proxy-admin",
        help="Envoy admin URL of this client's sidecar: report its retries and ejections",
    )
    parser.add_argument("--json", action="store_true", help='print {"result": ...} as JSON')
    parser.add_argument(
        "--progress-json",
        action="store_true",
        help='also print {"progress": ...} per interval (implies --json)',
    )
    return parser


def spec_from_args(args: argparse.Namespace) -> LoadSpec:
    """The LoadSpec that parsed CLI arguments describe."""
    return LoadSpec(
        target=args.target,
        rpcs=None if args.duration is not None else args.rpcs,
        duration_s=args.duration,
        concurrency=args.concurrency,
        channels=args.channels,
        lb_policy=args.lb_policy,
        service_config=args.service_config,
        channel_options=dict(args.option),
        rate=args.rate,
        deadline_s=None if args.no_deadline else args.deadline,
        method=args.method,
        interval_s=args.interval,
        tls_ca_file=args.tls_ca,
        tls_server_name=args.tls_server_name,
        proxy_admin=args.proxy_admin,
        stream_messages=args.stream_messages,
        stream_duration_s=args.stream_duration,
        stream_interval_s=args.stream_interval,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit 0 when the run finished, whatever the calls returned."""
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = spec_from_args(args)
    try:
        spec.validate()
    except ValueError as error:
        parser.error(re.sub(r"LoadSpec\.(\w+)", lambda m: CLI_FLAGS.get(m[1], m[0]), str(error)))

    def print_progress(snapshot: LoadResult) -> None:
        if not snapshot.done:
            print(json_line("progress", snapshot), flush=True)

    try:
        result = run(spec, print_progress if args.progress_json else None)
    except KeyboardInterrupt:
        print("grpclab.load: interrupted", file=sys.stderr)
        return 130
    except ValueError as error:
        print(f"grpclab.load: {error}", file=sys.stderr)
        return 2
    if args.json or args.progress_json:
        print(json_line("result", result), flush=True)
    else:
        print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load generator: drives MyService RPCs and counts which pod answered each one.

Library (`run`, `run_async`) and CLI (`python -m grpclab.load --json ...`).
The CLI is also the entry point of the in-cluster Job on the kube backend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class LoadSpec:
    """What to send. Exactly one of `rpcs` and `duration_s` bounds the run."""

    target: str
    rpcs: int | None = 300
    duration_s: float | None = None
    concurrency: int = 8
    channels: int = 1
    # A gRPC LB policy name ("pick_first", "round_robin", ...) put into the
    # service config; None leaves the channel's default (pick_first).
    lb_policy: str | None = None
    # A full service config (JSON text or dict); overrides lb_policy when set.
    service_config: str | dict[str, Any] | None = None
    channel_options: dict[str, Any] = field(default_factory=dict)
    deadline_s: float = 5.0
    method: str = "SayHello"  # or "GetUser"
    interval_s: float = 0.5  # width of one timeline bucket and of progress updates
    # TLS: a PEM CA bundle path to trust and the name to check (SNI/authority).
    tls_ca_file: str | None = None
    tls_server_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadSpec:
        return cls(**data)


@dataclass
class LoadResult:
    """What happened. Serialisable to JSON so the kube Job can hand it back."""

    per_pod: dict[str, int] = field(default_factory=dict)  # pod name -> OK replies
    pod_ips: dict[str, str] = field(default_factory=dict)  # pod name -> pod IP
    errors: dict[str, int] = field(default_factory=dict)  # status code name -> count
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50, p90, p99, max, mean
    # One entry per interval: {"t": seconds since start, "per_pod": {pod: OK replies}}.
    timeline: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    done: bool = False  # False in progress snapshots, True in the final result

    @property
    def ok(self) -> int:
        return sum(self.per_pod.values())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def total(self) -> int:
        return self.ok + self.failed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadResult:
        return cls(**data)

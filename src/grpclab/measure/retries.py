"""Retries, hedging and deadlines in the client (gRFC A6), measured against faulty pods.

The drills of notebook 14: a pod that crashes under load (the kill drill), a pod that fails
every call while it stays Ready (a broken pod), a pod whose calls hang (a stuck pod) and a
slow pod (where hedging would help). Each runs the same load once per client spec, so that
the specs differ only in what the notebook compares, and puts the pods back afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec, drills

# gRFC A6's own example policy: up to 4 attempts, retried only on UNAVAILABLE, which says
# the call did not run (a crashed pod's reset, a refused connection, a pod that says so).
RETRY_ON_UNAVAILABLE: dict[str, Any] = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
# A6's example throttling: each failed call costs a token, each OK call earns 0.1, and
# retries stop while 5 tokens or fewer are left.
THROTTLING: dict[str, Any] = {"maxTokens": 10, "tokenRatio": 0.1}
# A6's hedging policy: a second copy of the call after 10 ms, a third after 20 ms.
HEDGING: dict[str, Any] = {
    "maxAttempts": 3,
    "hedgingDelay": "0.01s",
    "nonFatalStatusCodes": ["UNAVAILABLE"],
}
UNAVAILABLE = 14  # grpc.StatusCode.UNAVAILABLE's number, as the fault knob takes it


@dataclass(frozen=True)
class Row:
    """One configuration's run in a drill, and where its numbers come from."""

    result: LoadResult
    drill: str  # "pod crash", "broken pod", "stuck pod", "slow pod"
    where: str = "client"  # "client" (the gRPC library) or "mesh" (the client's sidecar)


def kill_drill(
    lab: Cluster, specs: Mapping[str, LoadSpec], at_s: float = 1.0, added_latency_ms: int = 20
) -> dict[str, LoadResult]:
    """For each spec: crash the least restarted pod at_s into its load (notebook 04's drill).

    Every call takes `added_latency_ms` so that some are in flight on the pod when it dies.
    """
    results = {}
    for name, spec in specs.items():
        results[name] = drills.crash_least_restarted(lab, spec, at_s, added_latency_ms)
    _clear_faults(lab)
    return results


def with_faulty_pod(
    lab: Cluster, pod: str, specs: Mapping[str, LoadSpec], **fault: Any
) -> dict[str, LoadResult]:
    """Run each spec in turn while `pod` has `fault` (the admin fault knobs); then clear it."""
    lab.set_fault(pod, **fault)
    try:
        return {name: lab.run_load(spec) for name, spec in specs.items()}
    finally:
        lab.set_fault(pod)


def broken_pod(lab: Cluster, pod: str, specs: Mapping[str, LoadSpec]) -> dict[str, LoadResult]:
    """Each spec against `pod` failing every call UNAVAILABLE while its health check passes."""
    return with_faulty_pod(lab, pod, specs, error_rate=1.0, error_code=UNAVAILABLE)


def stuck_pod(
    lab: Cluster, pod: str, specs: Mapping[str, LoadSpec], stuck_ms: int = 3000
) -> dict[str, LoadResult]:
    """Each spec against `pod` taking `stuck_ms` to answer every call (a lock, a dead database)."""
    return with_faulty_pod(lab, pod, specs, added_latency_ms=stuck_ms)


def _clear_faults(lab: Cluster, deployment: str = "grpc-server") -> None:
    for pod in lab.wait_ready(deployment):
        lab.set_fault(pod.name)


def failed_share(result: LoadResult) -> float:
    """The fraction (0..1) of the run's calls that failed."""
    return result.failed / result.total if result.total else 0.0


def ok_per_s(result: LoadResult) -> float:
    """OK replies per second over the whole run, the wait for stuck calls at its end included."""
    return result.ok / result.elapsed_s if result.elapsed_s > 0 else 0.0


def hedged(plain: LoadResult, hedging: LoadResult, slow_ms: float) -> bool:
    """Did the hedging client escape the slow pod? Its p90 under half of `slow_ms`, the plain
    client's at `slow_ms` or more (a third of the calls go to the slow pod)."""
    slow = plain.latency_ms.get("p90", 0.0) >= slow_ms * 0.9
    return slow and hedging.latency_ms.get("p90", math.inf) < slow_ms / 2


def table(rows: Mapping[str, Row]) -> str:
    """Drill, configuration, where it retries, failed calls, calls and OK calls per second."""
    width = max(len("configuration"), *(len(name) for name in rows)) + 1
    head = f"{'drill':<11} {'configuration':<{width}} {'retries in':<10} {'failed':>7} "
    lines = [head + f"{'of calls':>9} {'failed %':>9} {'OK/s':>6}"]
    for name, row in rows.items():
        result = row.result
        lines.append(
            f"{row.drill:<11} {name:<{width}} {row.where:<10} {result.failed:>7} "
            f"{result.total:>9} {failed_share(result):>9.1%} {ok_per_s(result):>6.0f}"
        )
    return "\n".join(lines)


def none_or_some(count: int) -> str:
    return "none" if count == 0 else "some"


def band(share: float, bands: Mapping[str, Callable[[float], bool]]) -> str:
    """The first band whose test `share` passes, else "other": stable words for a number."""
    return next((name for name, test in bands.items() if test(share)), "other")


# Failed shares in words: a third of the calls is what one broken pod of three gives.
SHARE_BANDS: dict[str, Callable[[float], bool]] = {
    "none": lambda share: share == 0,
    "under 1 %": lambda share: share < 0.01,
    "about a third": lambda share: 0.2 <= share <= 0.5,
}


def summary(rows: Mapping[str, Row]) -> str:
    """Stable text for nbval: each row's failed calls in words."""
    return "\n".join(
        f"{row.drill}, {name}: failed calls: {band(failed_share(row.result), SHARE_BANDS)}"
        for name, row in rows.items()
    )

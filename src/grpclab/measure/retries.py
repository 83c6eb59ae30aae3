"""Retries, hedging and deadlines in the client (gRFC A6), measured against faulty pods.

The drills of notebook 14: a pod that crashes under load (the kill drill), a pod that fails
every call while it stays Ready (a broken pod), a pod whose calls hang (a stuck pod) and a
slow pod (where hedging would help). Each runs the same load once per client spec, so that
the specs differ only in what the notebook compares, and puts the pods back afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec, drills
from grpclab.measure.streams import yes_no as yes_no  # notebook 14's checked lines use it

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
    lab: Cluster, specs: Mapping[str, LoadSpec], at_s: float = 1.0, added_latency_ms: int = 400
) -> dict[str, LoadResult]:
    """For each spec: crash the least restarted pod at_s into its load (notebook 04's drill).

    Every call takes `added_latency_ms` so that some are in flight on the pod when it dies:
    a paced client (LoadSpec.rate) has rate x latency calls in flight, 30/s x 0.4 s = 12,
    four on each of three pods. The pod holds only the calls sent in the last
    `added_latency_ms`, so a busy machine that stalls the client for longer empties it
    before the crash: with 50 ms calls notebook 14's client once lost none in a full test
    run (stalls of 230 ms were measured beside other notebooks' tests).
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


def ok_per_s(result: LoadResult) -> float:
    """OK replies per second over the whole run, the wait for stuck calls at its end included."""
    return result.ok / result.elapsed_s if result.elapsed_s > 0 else 0.0


def hedged(plain: LoadResult, hedging: LoadResult, slow_ms: float) -> bool:
    """Did the hedging client escape the slow pod? None of its calls took half of `slow_ms`,
    while the plain client, run the same way, did wait `slow_ms` (so it met the slow pod)."""
    met_the_slow_pod = plain.latency_ms.get("max", 0.0) >= slow_ms * 0.9
    return met_the_slow_pod and hedging.latency_ms.get("max", math.inf) < slow_ms / 2


def table(rows: Mapping[str, Row]) -> str:
    """Drill, configuration, where it retries, failed calls, calls and OK calls per second."""
    width = max(len("configuration"), *(len(name) for name in rows)) + 1
    head = f"{'drill':<11} {'configuration':<{width}} {'retries in':<10} {'failed':>7} "
    lines = [head + f"{'of calls':>9} {'failed %':>9} {'OK/s':>6}"]
    for name, row in rows.items():
        result = row.result
        lines.append(
            f"{row.drill:<11} {name:<{width}} {row.where:<10} {result.failed:>7} "
            f"{result.total:>9} {result.failed_share:>9.1%} {ok_per_s(result):>6.0f}"
        )
    return "\n".join(lines)


def none_or_some(count: int) -> str:
    return "none" if count == 0 else "some"


def about_a_third(result: LoadResult) -> bool:
    """Did 20 to 50 % of the calls fail: what one failing pod of three gives a balanced client?"""
    return 0.2 <= result.failed_share <= 0.5


def figure(rows: Mapping[str, Row], title: str) -> Any:
    """Two panels, one bar a configuration: the share of calls that failed, and OK calls
    per second. Mesh rows are hatched (their retries happen in the client's sidecar)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from grpclab.widgets import BASE_LAYOUT

    labels = [f"{row.drill}: {name.strip()}" for name, row in rows.items()]
    patterns = ["/" if row.where == "mesh" else "" for row in rows.values()]
    shares = [row.result.failed_share for row in rows.values()]
    rates = [ok_per_s(row.result) for row in rows.values()]
    chart = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        horizontal_spacing=0.04,
        subplot_titles=("failed calls, % of calls", "OK calls per second"),
    )
    for col, values, text, color in [
        (1, [100 * s for s in shares], [f"{s:.1%}" for s in shares], "#e45756"),
        (2, rates, [f"{r:.0f}" for r in rates], "#4c78a8"),
    ]:
        chart.add_trace(
            go.Bar(
                y=labels,
                x=values,
                text=text,
                orientation="h",
                textposition="outside",
                cliponaxis=False,
                marker={"color": color, "pattern": {"shape": patterns}},
                showlegend=False,
            ),
            row=1,
            col=col,
        )
    chart.update_layout(
        BASE_LAYOUT,
        title=title,
        height=140 + 32 * len(rows),
        margin={"l": 10, "r": 40, "t": 80, "b": 30},
    )
    chart.update_yaxes(autorange="reversed", automargin=True)
    return chart

"""Several clients side by side through one event: a pod turns NOT_SERVING, a Deployment
rolls or scales.

Each client is a `run_load` of its own, and each LoadResult keeps its own clock (seconds
since that client started), so the event's start and end are given on every client's clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.load.drills import act_during

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from grpclab.widgets import TimelineChart


@dataclass
class SideBySideRun:
    """What each client saw, and when the event began and ended on each client's clock."""

    results: dict[str, LoadResult]
    event_s: dict[str, float]  # the event began
    event_done_s: dict[str, float]  # the event's function returned
    outcome: Any  # what it returned
    started_at: float  # Unix time just before the clients started (for Prometheus)

    def share_chart(self, pod: str, title: str) -> go.Figure:
        """Each client's share of calls that `pod` served, against seconds since the event."""
        from grpclab.widgets import line_chart

        figure = line_chart(
            title,
            "seconds since the event",
            {"title": f"share of OK replies from {pod}", "range": [-0.05, 1.05]},
            height=380,
            # Under the plot: beside it, the clients' names would take a third of the width.
            legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
        )
        for name, result in self.results.items():
            times, shares = share_over_time(result, pod)
            figure.add_scatter(
                x=[round(t - self.event_s[name], 3) for t in times],
                y=shares,
                name=name,
                mode="lines",
                line={"shape": "hv"},
            )
        figure.add_vline(x=0, line_dash="dash", line_color="grey")
        return figure


def share_over_time(result: LoadResult, pod: str) -> tuple[list[float], list[float | None]]:
    """Start of each complete timeline interval, and the share of its OK replies `pod` served."""
    times, shares = [], []
    for interval in result.complete_intervals():
        total = sum(interval["per_pod"].values())
        times.append(interval["t"])
        shares.append(round(interval["per_pod"].get(pod, 0) / total, 4) if total else None)
    return times, shares


def run_side_by_side(
    lab: Cluster,
    loads: Mapping[str, LoadSpec],
    at_s: float,
    event: Callable[[Mapping[str, LoadResult]], Any],
    on_progress: Mapping[str, Callable[[LoadResult], None]] | None = None,
) -> SideBySideRun:
    """Run every load at once; `at_s` seconds into the first one, call `event(snapshots)`.

    `snapshots` holds each client's latest progress, so the event can act on what the
    clients do (flip the pod a connection is pinned to). The timing is
    `grpclab.load.drills.act_during`'s: the event runs in a thread of its own, so a slow one
    (a rollout) does not stall the clients, and an error in it is raised after the run.
    Every load must last longer than `at_s`.
    """
    run = act_during(lab, loads, at_s, lambda during: event(during.snapshots), on_progress)
    return SideBySideRun(
        results=run.results,
        event_s=run.started_s,
        event_done_s=run.done_s,
        outcome=run.outcome,
        started_at=run.started_at,
    )


def scale_side_by_side(
    lab: Cluster,
    loads: Mapping[str, LoadSpec],
    replicas: int,
    at_s: float,
    deployment: str = "grpc-server",
    charts: Mapping[str, TimelineChart] | None = None,
    timeout: float = 60.0,
) -> tuple[SideBySideRun, list[str]]:
    """`run_side_by_side` whose event scales `deployment` to `replicas` and waits for it.

    Returns the run and the new pods (ready after the scale, not before). Each client's
    chart in `charts` follows it live and gets the scale and the rollout's end marked.
    """
    before = {pod.name for pod in lab.wait_ready(deployment, timeout=timeout)}

    def scale(_snapshots: Mapping[str, LoadResult]) -> list[str]:
        lab.scale(deployment, replicas)
        ready = lab.wait_ready(deployment, timeout=timeout)
        return sorted(pod.name for pod in ready if pod.name not in before)

    progress = {name: chart.update for name, chart in (charts or {}).items()}
    run = run_side_by_side(lab, loads, at_s, scale, on_progress=progress)
    for name, chart in (charts or {}).items():
        chart.add_pods(run.outcome)
        chart.mark(run.event_s[name], f"scale to {replicas}")
        chart.mark(run.event_done_s[name], f"{replicas}/{replicas} ready")
    return run, run.outcome

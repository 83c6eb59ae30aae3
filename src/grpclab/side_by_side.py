"""Several clients side by side through one event: a pod turns NOT_SERVING, a Deployment
rolls or scales.

Each client is a `run_load` of its own, and each LoadResult keeps its own clock (seconds
since that client started), so the event's start and end are given on every client's clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec

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
        import plotly.graph_objects as go

        figure = go.Figure(
            layout=go.Layout(
                title=title,
                height=380,
                margin={"t": 50, "b": 40},
                template="plotly_white",
                xaxis={"title": "seconds since the event"},
                yaxis={"title": f"share of OK replies from {pod}", "range": [-0.05, 1.05]},
                # Under the plot: beside it, the clients' names would take a third of the width.
                legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
            )
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
    """Start of each complete timeline bucket, and the share of its OK replies `pod` served."""
    timeline = result.timeline
    width = timeline[1]["t"] - timeline[0]["t"] if len(timeline) > 1 else result.elapsed_s
    times, shares = [], []
    for bucket in timeline:
        if bucket["t"] + width > result.elapsed_s + 1e-6:
            break  # cut short by the end of the run
        total = sum(bucket["per_pod"].values())
        times.append(bucket["t"])
        shares.append(round(bucket["per_pod"].get(pod, 0) / total, 4) if total else None)
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
    clients do (flip the pod a connection is pinned to). The event runs in a thread of its
    own, so a slow one (a rollout) does not stall the clients; an error in it is raised
    after the run. Every load must last longer than `at_s`.
    """
    if not loads:
        raise ValueError("run_side_by_side: loads is empty; name at least one LoadSpec")
    for name, spec in loads.items():
        if spec.duration_s is None or spec.duration_s <= at_s:
            raise ValueError(
                f"run_side_by_side: loads[{name!r}].duration_s must be longer than "
                f"at_s={at_s} (got {spec.duration_s!r}); the event happens during the run"
            )
    first = next(iter(loads))
    callbacks = dict(on_progress or {})
    clocks: dict[str, float] = {}  # perf_counter at each client's t=0
    latest: dict[str, LoadResult] = {}
    state: dict[str, Any] = {}
    lock = threading.Lock()

    def fire(snapshots: dict[str, LoadResult]) -> None:
        try:
            state["outcome"] = event(snapshots)
        except BaseException as error:  # handed to the caller after the run
            state["error"] = error
        finally:
            state["done"] = time.perf_counter()

    def progress_of(name: str) -> Callable[[LoadResult], None]:
        def progress(snapshot: LoadResult) -> None:
            with lock:
                clocks.setdefault(name, time.perf_counter() - snapshot.elapsed_s)
                latest[name] = snapshot
                due = name == first and snapshot.elapsed_s >= at_s and "thread" not in state
                if due and not snapshot.done:
                    state["at"] = time.perf_counter()
                    state["thread"] = threading.Thread(
                        target=fire, args=(dict(latest),), name="grpclab-event", daemon=True
                    )
                    state["thread"].start()
            if name in callbacks:
                callbacks[name](snapshot)

        return progress

    results: dict[str, LoadResult] = {}
    failures: dict[str, BaseException] = {}

    def drive(name: str) -> None:
        try:
            results[name] = lab.run_load(loads[name], on_progress=progress_of(name))
        except BaseException as error:
            failures[name] = error

    started_at = time.time()
    threads = [
        threading.Thread(target=drive, args=(name,), name=f"grpclab-client-{name}", daemon=True)
        for name in loads
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        name, error = next(iter(failures.items()))
        raise RuntimeError(f"run_side_by_side: the client {name!r} failed: {error}") from error
    if "thread" not in state:
        raise RuntimeError(f"run_side_by_side: the run ended before at_s={at_s} s; no event")
    state["thread"].join()
    if "error" in state:
        raise state["error"]
    return SideBySideRun(
        results={name: results[name] for name in loads},  # in the caller's order
        event_s={name: state["at"] - clocks[name] for name in loads},
        event_done_s={name: state["done"] - clocks[name] for name in loads},
        outcome=state.get("outcome"),
        started_at=started_at,
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

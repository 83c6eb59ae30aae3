"""Zone-aware routing, read from load results: calls per zone, and what a zone failure did.

A pod's zone is its `topology.kubernetes.io/zone` label, zone-a without one: the sandbox
reads the label from the pod, and on grpclab's kind cluster pods without it run on the
zone-a workers (cluster/kind.yaml taints the zone-b node; xds/deployment-zone-b.yaml
carries the label and a nodeSelector for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grpclab.cluster import Cluster, Pod
from grpclab.load import LoadResult, LoadSpec
from grpclab.load.drills import act_during

ZONE_LABEL = "topology.kubernetes.io/zone"
DEFAULT_ZONE = "zone-a"
ZONE_NAMES = ("zone-a", "zone-b")


def pod_zones(pods: Iterable[Pod]) -> dict[str, str]:
    """Pod name -> its zone."""
    return {pod.name: pod.labels.get(ZONE_LABEL, DEFAULT_ZONE) for pod in pods}


def calls_per_zone(result: LoadResult, zones: Mapping[str, str]) -> dict[str, int]:
    """OK calls per zone. Take `zones` (pod_zones) before a drill deletes pods; a pod
    missing from it counts as zone "?"."""
    counted: dict[str, int] = {}
    for pod, calls in result.per_pod.items():
        zone = zones.get(pod, "?")
        counted[zone] = counted.get(zone, 0) + calls
    return dict(sorted(counted.items()))


def share_in(result: LoadResult, zones: Mapping[str, str], zone: str) -> float:
    """The fraction (0..1) of OK calls that pods in `zone` served."""
    counted = calls_per_zone(result, zones)
    total = sum(counted.values())
    return counted.get(zone, 0) / total if total else 0.0


def where_words(result: LoadResult, zones: Mapping[str, str]) -> str:
    """ "zone-a only", "zone-b only" or "both zones" (a zone under 5% counts as none)."""
    used = [z for z in ZONE_NAMES if share_in(result, zones, z) >= 0.05]
    if len(used) == 1:
        return f"{used[0]} only"
    return "both zones" if used else "nowhere"


def outcome_words(result: LoadResult, zones: Mapping[str, str]) -> str:
    """Where the OK calls went, and whether calls failed: "failing" when nine in ten did,
    ", some calls failing" after the zones when more than one in a hundred did."""
    failed = result.failed_share
    if failed > 0.9:
        return "failing"
    where = where_words(result, zones)
    return f"{where}, some calls failing" if failed > 0.01 else where


def routing_summary(results: Mapping[str, LoadResult], zones: Mapping[str, str]) -> str:
    """One line per client: where its calls went, in words that hold from run to run."""
    width = max(len(name) for name in results)
    return "\n".join(
        f"{name:<{width}}  {where_words(result, zones)}" for name, result in results.items()
    )


@dataclass(frozen=True)
class ZoneDrill:
    """One client through a zone failure: where its calls went before and after."""

    result: LoadResult
    at_s: float  # when the failure began, on the client's clock
    before: LoadResult
    after: LoadResult  # from settle_s after the failure to the end

    def words(self, zones: Mapping[str, str]) -> str:
        before, after = outcome_words(self.before, zones), outcome_words(self.after, zones)
        return f"before: {before}; after: {after}"


def zone_drill(
    lab: Cluster,
    spec: LoadSpec,
    at_s: float,
    failure: Callable[[], object],
    settle_s: float = 2.0,
) -> ZoneDrill:
    """Run `spec`, call `failure()` at_s seconds in, and split the calls there (`split`)."""
    return zone_drills(lab, {"": spec}, at_s, failure, settle_s)[""]


def zone_drills(
    lab: Cluster,
    specs: Mapping[str, LoadSpec],
    at_s: float,
    failure: Callable[[], object],
    settle_s: float = 2.0,
) -> dict[str, ZoneDrill]:
    """Run every client of `specs` at once through one failure (`act_during`), each split
    on its own clock: one zone failure and one recovery for all of them."""
    run = act_during(lab, specs, at_s, lambda _: failure())
    return {
        name: split(run.results[name], run.started_s[name], run.done_s[name], settle_s)
        for name in specs
    }


def split(result: LoadResult, started_s: float, done_s: float, settle_s: float = 2.0) -> ZoneDrill:
    """A drill's calls around a failure that began at started_s and was in place at done_s:
    `before` ends with the last interval that ended before it began, `after` starts
    settle_s after it was in place."""
    width = result.interval_s(default=LoadSpec.interval_s)
    return ZoneDrill(
        result,
        started_s,
        result.between(0.0, started_s - width),
        result.between(done_s + settle_s),
    )


def drill_summary(drills: Mapping[str, ZoneDrill], zones: Mapping[str, str]) -> str:
    """One line per client: where it sent calls before the failure and after it."""
    width = max(len(name) for name in drills)
    return "\n".join(f"{name:<{width}}  {d.words(zones)}" for name, d in drills.items())


def zone_chart(
    results: Mapping[str, LoadResult], zones: Mapping[str, str], title: str
) -> go.Figure:
    """OK replies per pod, the pods grouped by zone, one bar colour per client."""
    pods = sorted(zones, key=lambda pod: (zones[pod], pod))
    labels = [f"{zones[pod]} · {pod[-5:]}" for pod in pods]
    figure = go.Figure()
    for name, result in results.items():
        counts = [result.per_pod.get(pod, 0) for pod in pods]
        figure.add_bar(name=name, x=labels, y=counts, text=counts, textposition="outside")
    figure.update_layout(
        title=title, barmode="group", yaxis_title="OK replies", xaxis_title="zone · pod"
    )
    return figure


def drill_chart(drills: Mapping[str, ZoneDrill], zones: Mapping[str, str], title: str) -> go.Figure:
    """For each client, OK replies per second in each zone and failed calls per second."""
    figure = make_subplots(rows=len(drills), cols=1, subplot_titles=list(drills), shared_xaxes=True)
    colours = {"zone-a": "#1f77b4", "zone-b": "#2ca02c", "failed": "#d62728"}
    for row, run in enumerate(drills.values(), start=1):
        width = run.result.interval_s(default=1.0)
        intervals = run.result.complete_intervals()
        times = [i["t"] for i in intervals]
        lines = {name: [0.0] * len(intervals) for name in colours}
        for index, interval in enumerate(intervals):
            for pod, calls in interval["per_pod"].items():
                zone = zones.get(pod, "?")
                if zone in lines:
                    lines[zone][index] += calls / width
            lines["failed"][index] = sum(interval.get("errors", {}).values()) / width
        for name, values in lines.items():
            figure.add_scatter(
                x=times,
                y=values,
                name=name,
                line_color=colours[name],
                showlegend=row == 1,
                row=row,
                col=1,
            )
        figure.add_vline(x=run.at_s, line_dash="dash", row=row, col=1)
    figure.update_layout(title=title, height=260 * len(drills))
    figure.update_xaxes(title_text="seconds since the load started", row=len(drills), col=1)
    return figure

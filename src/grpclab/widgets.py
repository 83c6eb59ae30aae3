"""Live charts of where requests went, and the controls that drive load from a notebook.

The load generator calls `on_progress` from its own thread once per interval. A chart
keeps every snapshot but redraws at most every `min_redraw_s`, so a fast run stays light.

A chart is a plain plotly `go.Figure` drawn in Python and sent whole to a small widget
(`ChartWidget`) after each redraw. Its front end draws whatever state it holds when it
renders, so a view that renders late (a slow page, Run All) still shows the latest picture:
no update can be lost before the view exists, and the load never waits for the browser.
(A kernel running a cell cannot even receive the browser's "rendered" message until the
cell ends: comm messages queue behind the running cell and, under Run All, behind every
queued cell. So a wait for it in the load would only ever time out.) The front end does
report each view it has drawn (`ChartWidget.views_rendered`, and a `data-grpclab-ready`
attribute that the browser test reads).

plotly.js (about 5 MB) reaches the page once per kernel, in the one `PlotlyLibrary`
widget that every chart refers to, not once per chart. When a run ends, the chart's
output is replaced by the same figure as an ordinary plotly output
(`application/vnd.plotly.v1+json`), so a saved or reloaded notebook shows the result
without a kernel.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anywidget
import ipywidgets as widgets
import plotly
import plotly.colors
import plotly.graph_objects as go
import traitlets

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.load.drills import During, act_during, check_timing
from grpclab.measure import checks

PALETTE = plotly.colors.qualitative.Plotly
OLD_POD_COLOR = "#a8a8a8"
DEFAULT_INTERVAL_S = 0.5
SERVICES = {"ClusterIP Service": "grpc-server", "headless Service": "grpc-server-headless"}
LB_POLICIES = ("pick_first", "round_robin")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# The look of every chart, spelled out: a plotly template would ride along in every update
# and every saved figure (about 10 KB each).
BASE_LAYOUT = {
    "height": 360,
    "margin": {"t": 60, "b": 40, "l": 60, "r": 20},
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "font": {"family": "Arial, sans-serif", "size": 12},
    "xaxis": {"gridcolor": "#ebebeb", "zeroline": False, "automargin": True},
    "yaxis": {"gridcolor": "#ebebeb", "zeroline": False, "automargin": True},
}


def line_chart(
    title: str, x_title: str, yaxis: Mapping[str, Any], height: int, **layout: Any
) -> go.Figure:
    """An empty figure for lines over seconds (a Prometheus range, a share since an event)."""
    return go.Figure(
        layout=go.Layout(
            title=title,
            height=height,
            margin={"t": 50, "b": 40},
            template="plotly_white",
            xaxis={"title": x_title},
            yaxis=dict(yaxis),
            **layout,
        )
    )


def pod_order(pods: Iterable[str], result: LoadResult | None) -> list[str]:
    """The pods to draw: the listed ones first, then any other pod that served a call."""
    names = list(dict.fromkeys(pods))
    if result is not None:
        names += sorted(set(result.per_pod) - set(names))
    return names


def bar_counts(pods: Iterable[str], result: LoadResult | None) -> list[int]:
    """OK replies per pod in `pods` order; a pod that served nothing counts 0."""
    per_pod = result.per_pod if result is not None else {}
    return [per_pod.get(pod, 0) for pod in pods]


def timeline_rates(
    pods: Iterable[str], result: LoadResult
) -> tuple[list[float], dict[str, list[float]]]:
    """Interval start times and OK replies per second for each pod, complete intervals only.

    The newest interval is still filling (or was cut short by the end of the run): drawn,
    it would look like a drop in traffic that did not happen.
    """
    intervals = result.complete_intervals()
    width = result.interval_s(default=DEFAULT_INTERVAL_S)
    times = [interval["t"] for interval in intervals]
    rates = {pod: [i["per_pod"].get(pod, 0) / width for i in intervals] for pod in pods}
    return times, rates


def figure_json(figure: go.Figure) -> dict[str, Any]:
    """The figure as plain JSON (what plotly.js takes), without a template."""
    data = json.loads(figure.to_json())
    data["layout"].pop("template", None)
    data["config"] = {"displaylogo": False, "responsive": True}
    return data


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class PlotlyLibrary(widgets.Widget):
    """plotly.js itself, as widget state: sent to the page once and shared by every chart."""

    source = traitlets.Unicode().tag(sync=True)


_library: PlotlyLibrary | None = None
_library_lock = threading.Lock()


def plotly_library() -> PlotlyLibrary:
    """The kernel's one PlotlyLibrary (created on first use)."""
    global _library
    with _library_lock:
        if _library is None or _library.comm is None:  # none yet, or closed
            _library = PlotlyLibrary(source=PLOTLY_JS.read_text())
        return _library


class ChartWidget(anywidget.AnyWidget):
    """A plotly figure in a notebook, redrawn from its whole state on every change."""

    _esm = Path(__file__).parent / "static" / "chart.js"
    figure = traitlets.Dict().tag(sync=True)
    library = traitlets.Instance(PlotlyLibrary).tag(sync=True, **widgets.widget_serialization)
    # The chart's title without its run subtitle, in the widget's opening state: a view
    # knows which chart it is from its first moment, before any figure has arrived.
    title = traitlets.Unicode().tag(sync=True)

    def __init__(self, figure: dict[str, Any] | None = None, title: str = "") -> None:
        super().__init__(figure=figure or {}, library=plotly_library(), title=title)
        self.views_rendered = 0  # views that reported their first draw (kernel idle since)
        self.on_msg(self._on_front_end)

    def _on_front_end(self, _widget: Any, content: Mapping[str, Any], _buffers: Any) -> None:
        if content.get("event") == "rendered":
            self.views_rendered += 1


class _LiveChart:
    """A figure fed by LoadResult snapshots, live in a ChartWidget; subclasses say how to draw."""

    def __init__(self, pods: Iterable[str], title: str, min_redraw_s: float) -> None:
        self.pods = list(dict.fromkeys(pods))
        self.title = title
        self.min_redraw_s = min_redraw_s
        self.result: LoadResult | None = None
        self.redraws = 0
        self._last_draw = -float("inf")
        # Snapshots arrive on the load thread and marks on others: one drawer at a time.
        self._lock = threading.RLock()
        self.figure = go.Figure(layout={**BASE_LAYOUT, "title": {"text": title}})
        self.widget = ChartWidget(title=title)
        self._handle: Any = None  # the notebook output that shows this chart, once displayed
        self._shows_static = False
        self._redraw(None)

    def on_progress(self, result: LoadResult) -> None:
        """Take a snapshot from the load generator; redraws when due and at the end."""
        with self._lock:
            self.result = result
            now = time.monotonic()
            if not result.done and now - self._last_draw < self.min_redraw_s:
                return
            self._last_draw = now
            self.redraws += 1
            self._redraw(result)

    # The name the notebooks pass: `lab.run_load(spec, on_progress=chart.update)`.
    update = on_progress

    def set_pods(self, pods: Iterable[str]) -> None:
        """Draw these pods (with 0 for those that served nothing) from now on."""
        with self._lock:
            self.pods = list(dict.fromkeys(pods))
            self.result = None
            self._redraw(None)

    def add_pods(self, pods: Iterable[str]) -> None:
        """Also draw these pods (new ones after a scale-up), at 0 until they serve."""
        with self._lock:
            self.pods = list(dict.fromkeys([*self.pods, *pods]))
            self._redraw(self.result)

    def drawn_pods(self) -> list[str]:
        return pod_order(self.pods, self.result)

    def summary(self, max_ratio: float = 1.2) -> str:
        """The stable text of `checks.summary` for the last run (nbval checks it)."""
        if self.result is None:
            raise RuntimeError(
                f"{type(self).__name__} {self.title!r} has no run yet: pass chart.update "
                "as on_progress to lab.run_load"
            )
        return checks.summary(self.result, self.drawn_pods(), max_ratio)

    def color(self, pod: str) -> str:
        return PALETTE[self.drawn_pods().index(pod) % len(PALETTE)]

    def _heading(self, result: LoadResult | None) -> str:
        if result is None:
            return self.title
        state = "done" if result.done else "running"
        return (
            f"{self.title}<br><sup>{result.ok} OK, {result.failed} failed, "
            f"{result.elapsed_s:.1f} s ({state})</sup>"
        )

    def _draw(self, result: LoadResult | None) -> None:
        raise NotImplementedError

    def _redraw(self, result: LoadResult | None) -> None:
        with self.figure.batch_update():
            self._draw(result)
        self._publish()

    def _publish(self) -> None:
        """Send the figure to the live view; once the run is done, also to the saved output."""
        state = figure_json(self.figure)
        self.widget.figure = state
        done = self.result is not None and self.result.done
        if self._handle is None:
            return
        if done:
            if self._shows_static:
                # JupyterLab's plotly renderer ignores a new figure once it has drawn one
                # (jupyterlab-plotly's renderModel returns early): a text output in between
                # makes it draw the new figure afresh (a mark added after the run, say).
                self._handle.update({"text/plain": repr(self)}, raw=True)
            self._handle.update({PLOTLY_MIME: state, "text/plain": repr(self)}, raw=True)
            self._shows_static = True
        elif self._shows_static:  # a new run into a finished chart: live again
            self._handle.update(self._live_bundle(), raw=True)
            self._shows_static = False

    def _live_bundle(self) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_() or {}
        if isinstance(bundle, tuple):  # anywidget's is (data, metadata)
            bundle = bundle[0]
        bundle = dict(bundle)
        # A widget's own text repr carries its state; this one is stable for nbval.
        bundle["text/plain"] = repr(self)
        return bundle

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self._live_bundle()

    def _ipython_display_(self) -> None:
        """`display(chart)`: the live view, in an output this chart can replace when done."""
        from IPython.display import display

        with self._lock:
            done = self.result is not None and self.result.done
            bundle = (
                {PLOTLY_MIME: figure_json(self.figure), "text/plain": repr(self)}
                if done
                else self._live_bundle()
            )
            self._handle = display(bundle, raw=True, display_id=True)
            self._shows_static = done

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.title!r}, pods={len(self.pods)})"


class DistributionChart(_LiveChart):
    """Requests per pod as bars, live while load runs; idle pods show as a bar of 0."""

    def __init__(
        self, pods: Iterable[str] = (), title: str = "requests per pod", min_redraw_s: float = 0.3
    ) -> None:
        super().__init__(pods, title, min_redraw_s)

    def _draw(self, result: LoadResult | None) -> None:
        pods = self.drawn_pods()
        counts = bar_counts(pods, result)
        total = sum(counts)
        if not self.figure.data:
            self.figure.add_bar(
                textposition="outside",
                cliponaxis=False,
                hovertemplate="%{x}<br>%{y} OK replies<extra></extra>",
            )
        self.figure.data[0].update(
            x=pods,
            y=counts,
            # The label matters most on the bars of 0: an empty slot is easy to overlook.
            text=[f"{count} ({count / total:.0%})" if total else "0" for count in counts],
            marker_color=[self.color(pod) for pod in pods],
        )
        self.figure.layout.title = self._heading(result)
        self.figure.layout.yaxis.title = "OK replies"
        # Headroom for the labels above the bars; at least 1 so an idle chart has an axis.
        self.figure.layout.yaxis.range = [0, max(1, max(counts, default=0)) * 1.15]


class TimelineChart(_LiveChart):
    """Replies per second for each pod over the run, with marks for events such as a scale-up.

    The pods the chart starts with are "old pods" (grey, one legend entry); a pod added
    later is "new pod N" (N counts every pod drawn), each in its own bright colour. Marks
    are dashed lines whose labels sit on rows of their own at the top, clear of the lines.
    """

    MARK_ROW = 0.085  # paper height of one row of mark labels

    def __init__(
        self,
        pods: Iterable[str] = (),
        title: str = "replies per second, per pod",
        min_redraw_s: float = 0.3,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        self.marks: list[tuple[float, str]] = []
        self.old_pods = list(dict.fromkeys(pods))
        self.labels = dict(labels or {})  # legend names that say more than "old"/"new pod N"
        super().__init__(pods, title, min_redraw_s)
        self.figure.update_layout(
            height=420,
            margin={"b": 40},
            xaxis_title="seconds since the load started",
            yaxis_title="OK replies per second",
            legend={"orientation": "h", "yanchor": "top", "y": -0.2, "x": 0},
        )
        self._publish()

    def set_pods(self, pods: Iterable[str]) -> None:
        self.old_pods = list(dict.fromkeys(pods))
        super().set_pods(pods)

    def add_pods(self, pods: Iterable[str], new: bool = True) -> None:
        """Also draw these pods, at 0 until they serve; `new=False`: they count as old."""
        if not new:
            self.old_pods = list(dict.fromkeys([*self.old_pods, *pods]))
        super().add_pods(pods)

    def label(self, pod: str) -> str:
        """The pod's name in the legend: its entry in `labels`, "old pods", or "new pod N"."""
        if pod in self.labels:
            return self.labels[pod]
        if pod in self.old_pods:
            return f"old pods ({len(self.old_pods)})"
        return f"new pod {self.drawn_pods().index(pod) + 1}"

    def color(self, pod: str) -> str:
        if pod in self.old_pods:
            return OLD_POD_COLOR
        new = [p for p in self.drawn_pods() if p not in self.old_pods]
        return PALETTE[new.index(pod) % len(PALETTE)]

    def mark(self, t_s: float, label: str) -> None:
        """A dashed vertical line at `t_s` seconds (load clock) labelled `label`."""
        with self._lock:
            self.marks.append((t_s, label))
            self.figure.add_vline(x=t_s, line_dash="dash", line_color="#555", line_width=1)
            self.figure.add_annotation(
                x=t_s,
                xref="x",
                y=1 - self.MARK_ROW * (len(self.marks) - 1),
                yref="paper",
                yanchor="top",
                xanchor="left",
                text=label,
                showarrow=False,
                bgcolor="rgba(255,255,255,0.85)",
                font={"size": 11, "color": "#333"},
            )
            self._redraw(self.result)

    def show_pickup(self, run: ScaleRun) -> None:
        """Mark when every new pod of `run` had served, or say that they never did."""
        pickup = run.pickup_s()
        if pickup is None:
            with self._lock:
                self.figure.add_annotation(
                    text="the new pods served nothing",
                    xref="paper",
                    yref="paper",
                    x=0.99,
                    y=0.02,
                    xanchor="right",
                    showarrow=False,
                    font={"color": "firebrick"},
                )
                self._redraw(self.result)
        else:
            self.mark(run.ready_at_s + pickup, "new pods serving")

    def _draw(self, result: LoadResult | None) -> None:
        pods = self.drawn_pods()
        times, rates = timeline_rates(pods, result) if result else ([], {p: [] for p in pods})
        by_pod = {trace.meta: trace for trace in self.figure.data}
        shown_old = False
        for pod in pods:
            old = pod in self.old_pods
            style = {
                "x": times,
                "y": rates[pod],
                "name": self.label(pod),
                "legendgroup": "old" if old else pod,
                "showlegend": not (old and shown_old),
                "line": {
                    "shape": "hv",
                    "color": self.color(pod),
                    "width": 1.5 if old else 2.5,
                    # Two new pods at 0 would hide each other: a dash tells them apart.
                    "dash": "solid" if old else ("solid", "dash", "dot")[len(by_pod) % 3],
                },
            }
            shown_old = shown_old or old
            if pod in by_pod:
                style["line"]["dash"] = by_pod[pod].line.dash
                by_pod[pod].update(style)
            else:
                by_pod[pod] = self.figure.add_scatter(
                    mode="lines",
                    meta=pod,
                    hovertemplate=f"{pod}<br>%{{y:.0f}}/s at %{{x:.1f}} s<extra></extra>",
                    **style,
                ).data[-1]
        peak = max((max(r, default=0) for r in rates.values()), default=0)
        # Headroom above the lines for the rows of mark labels.
        rows = max(len(self.marks), 1)
        top = max(1, peak) / (1 - self.MARK_ROW * rows - 0.05)
        # A little below 0, so that a pod that serves nothing is a line, not the axis.
        self.figure.layout.yaxis.range = [-0.03 * top, top]
        self.figure.layout.title = self._heading(result)


class ProgressBar:
    """A progress bar callable as `on_progress(done, total)`, the signature of wait_ready's."""

    def __init__(self, total: int, description: str) -> None:
        self.bar = widgets.IntProgress(value=0, min=0, max=max(total, 1), description=description)
        self.label = widgets.Label(f"0/{total}")
        self.widget = widgets.HBox([self.bar, self.label])

    @property
    def done(self) -> int:
        return self.bar.value

    @property
    def total(self) -> int:
        return self.bar.max

    def __call__(self, done: int, total: int | None = None, note: str = "") -> None:
        if total is not None:
            self.bar.max = max(total, 1)
        self.bar.value = min(done, self.bar.max)
        self.label.value = f"{done}/{self.bar.max}" + (f" {note}" if note else "")
        self.bar.bar_style = "success" if done >= self.bar.max else ""

    def advance(self, note: str = "") -> None:
        """One more step done; `note` says which."""
        self(self.done + 1, note=note)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"{self.bar.description}: {self.label.value}"
        return bundle


def progress_bar(total: int, description: str, show: bool = True) -> ProgressBar:
    """A ProgressBar, shown at once (inside a notebook) so it moves while the cell runs."""
    bar = ProgressBar(total, description)
    if show and _in_notebook():
        from IPython.display import display

        display(bar)
    return bar


@dataclass
class ScaleRun:
    """A load run during which a Deployment was scaled, with the event times on the load clock."""

    result: LoadResult
    before: list[str]  # ready pods when the run started
    new_pods: list[str]  # ready pods after the scale that were not there before
    scaled_at_s: float
    ready_at_s: float

    def pickup_s(self) -> float | None:
        """Seconds from the new pods being ready until each had served a call; None: never."""
        return checks.pickup_time(self.result, self.new_pods, since_s=self.ready_at_s)

    def summary(self, within_s: float = 10.0) -> str:
        """Stable text: how many new pods got traffic, and whether within `within_s`."""
        return checks.pickup_summary(self.result, self.new_pods, self.ready_at_s, within_s)

    def describe(self) -> str:
        """The measured times of this run, in words (they change from run to run)."""
        ready = len(self.before) + len(self.new_pods)
        head = (
            f"scaled at {self.scaled_at_s:.1f} s; {ready}/{ready} ready at "
            f"{self.ready_at_s:.1f} s (load clock)"
        )
        pickup = self.pickup_s()
        if pickup is None:
            served = [pod for pod in self.new_pods if self.result.per_pod.get(pod, 0)]
            return (
                f"{head}; {len(served)} of {len(self.new_pods)} new pods served anything in the "
                f"{self.result.elapsed_s - self.ready_at_s:.1f} s of load after that"
            )
        return (
            f"{head}; every new pod had served {pickup:.1f} s after that "
            f"({self.ready_at_s + pickup:.1f} s into the run; resolution "
            f"{self.result.interval_s(default=DEFAULT_INTERVAL_S):g} s)"
        )


def run_with_scale(
    lab: Cluster,
    spec: LoadSpec,
    replicas: int,
    at_s: float,
    deployment: str = "grpc-server",
    chart: TimelineChart | None = None,
    on_progress: Callable[[LoadResult], None] | None = None,
    timeout: float = 60.0,
) -> ScaleRun:
    """Run `spec` and scale `deployment` to `replicas` once the load has run `at_s` seconds.

    The timing is `grpclab.load.drills.act_during`'s. A `chart` follows the run live: the
    scale and the rollout's end are marked on it, the new pods are drawn (at 0 until they
    serve), and so is their pickup.
    """
    check_timing({"": spec}, at_s)  # before waiting for the pods: nothing could scale
    before = [pod.name for pod in lab.wait_ready(deployment, timeout=timeout)]
    if chart is not None:
        chart.add_pods(before, new=False)

    def scale_and_wait(during: During) -> tuple[list[str], float]:
        lab.scale(deployment, replicas)
        if chart is not None:
            chart.mark(during.started_s, f"scale to {replicas}")
        ready = [pod.name for pod in lab.wait_ready(deployment, timeout=timeout)]
        ready_at_s = during.now()
        if chart is not None:
            chart.add_pods(ready)
            chart.mark(ready_at_s, f"{replicas}/{replicas} ready")
        return ready, ready_at_s

    def progress(snapshot: LoadResult) -> None:
        if chart is not None:
            chart.update(snapshot)
        if on_progress is not None:
            on_progress(snapshot)

    acted = act_during(lab, {"": spec}, at_s, scale_and_wait, {"": progress}, timeout)
    ready, ready_at_s = acted.outcome
    run = ScaleRun(
        result=acted.results[""],
        before=before,
        new_pods=sorted(set(ready) - set(before)),
        scaled_at_s=acted.started_s[""],
        ready_at_s=round(ready_at_s, 3),
    )
    if chart is not None:
        chart.show_pickup(run)
    return run


class Playground:
    """Replicas, channels, LB policy and target controls that run real load into a live chart."""

    def __init__(
        self,
        lab: Cluster,
        deployment: str = "grpc-server",
        services: Mapping[str, str] | None = None,
        rpcs: int = 3000,
        max_replicas: int = 8,
    ) -> None:
        self.lab = lab
        self.deployment = deployment
        self.rpcs = rpcs
        pods = [pod.name for pod in lab.wait_ready(deployment)]
        self.replicas = widgets.IntSlider(
            value=len(pods),
            min=1,
            max=max_replicas,
            description="replicas",
            continuous_update=False,  # one scale per drag, not one per pixel
        )
        self.channels = widgets.IntSlider(value=1, min=1, max=8, description="channels")
        self.policy = widgets.Dropdown(
            options=LB_POLICIES, value="pick_first", description="policy"
        )
        self.service = widgets.Dropdown(
            options=list((services or SERVICES).items()), description="target"
        )
        self.run_button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = widgets.Label("")
        self.progress = ProgressBar(len(pods), "rollout")
        self.progress(len(pods), len(pods))  # the rollout the cluster comes with is done
        self.chart = DistributionChart(pods, "requests per pod (playground)")
        self.replicas.observe(self._on_replicas, names="value")
        self.run_button.on_click(self._on_run)
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.replicas, self.progress.widget]),
                widgets.HBox([self.service, self.policy]),
                widgets.HBox([self.channels, self.run_button]),
                self.status,
                self.chart.widget,
            ]
        )

    def spec(self) -> LoadSpec:
        """The LoadSpec that the controls describe right now."""
        channels = self.channels.value
        return LoadSpec(
            target=self.lab.target(self.service.value),
            rpcs=self.rpcs,
            channels=channels,
            concurrency=max(8, channels),
            lb_policy=self.policy.value,
        )

    def scale(self, replicas: int) -> list[str]:
        """Scale the Deployment and wait for the rollout; returns the ready pods."""
        self.lab.scale(self.deployment, replicas)
        pods = [pod.name for pod in self.lab.wait_ready(self.deployment, on_progress=self.progress)]
        self.chart.set_pods(pods)
        return pods

    def run(self) -> LoadResult:
        """What the Run button does: one load run into the chart."""
        spec = self.spec()
        self.status.value = (
            f"running: {spec.rpcs} calls over {spec.channels} channel(s), {spec.lb_policy}, "
            f"{self.service.label}"
        )
        result = self.lab.run_load(spec, on_progress=self.chart.update)
        self.status.value = self.chart.summary().replace("\n", "; ")
        return result

    def _on_replicas(self, change: Mapping[str, Any]) -> None:
        self._guarded(lambda: self.scale(change["new"]))

    def _on_run(self, _button: widgets.Button) -> None:
        self._guarded(self.run)

    def _guarded(self, action: Callable[[], object]) -> None:
        # A widget callback's exception lands in the log console, where nobody looks.
        self.run_button.disabled = True
        try:
            action()
        except Exception as error:
            self.status.value = f"error: {error}"
        finally:
            self.run_button.disabled = False

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = f"Playground({self.deployment!r})"
        return bundle

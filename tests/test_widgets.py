"""The charts' and controls' logic: snapshots in, bars, lines, marks and summaries out."""

from __future__ import annotations

import pytest
from support import MANIFESTS

import grpclab
from grpclab.load import LoadResult, LoadSpec
from grpclab.measure import checks
from grpclab.widgets import (
    PLOTLY_MIME,
    WIDGET_MIME,
    DistributionChart,
    Playground,
    ProgressBar,
    ScaleRun,
    TimelineChart,
    bar_counts,
    pod_order,
    progress_bar,
    run_with_scale,
    timeline_rates,
)

PODS = [
    "grpc-server-aaaaaaaaaa-00001",
    "grpc-server-aaaaaaaaaa-00002",
    "grpc-server-aaaaaaaaaa-00003",
]


def snapshot(per_pod: dict[str, int], done: bool = False, errors: dict | None = None) -> LoadResult:
    """What the load generator hands on_progress: totals plus a one-bucket timeline."""
    return LoadResult(
        per_pod=dict(per_pod),
        errors=dict(errors or {}),
        timeline=[{"t": 0.0, "per_pod": dict(per_pod), "errors": {}}],
        elapsed_s=0.5,
        done=done,
    )


def test_a_pod_that_served_nothing_gets_a_bar_of_zero():
    result = snapshot({PODS[1]: 300})
    assert bar_counts(PODS, result) == [0, 300, 0]
    assert bar_counts(PODS, None) == [0, 0, 0]


def test_pods_not_listed_but_serving_are_drawn_after_the_listed_ones():
    result = snapshot({"zeta-0000000000-zzzzz": 1, PODS[0]: 2, "alpha-0000000000-aaaaa": 3})
    assert pod_order(PODS[:2], result) == [
        PODS[0],
        PODS[1],
        "alpha-0000000000-aaaaa",
        "zeta-0000000000-zzzzz",
    ]


def test_distribution_chart_draws_every_pod_with_counts_and_labels():
    chart = DistributionChart(PODS, "one channel")
    chart.update(snapshot({PODS[2]: 120}, done=True))
    bars = chart.figure.data[0]
    assert list(bars.x) == PODS
    assert list(bars.y) == [0, 0, 120]
    assert list(bars.text) == ["0 (0%)", "0 (0%)", "120 (100%)"]
    assert "120 OK, 0 failed" in chart.figure.layout.title.text


def test_progress_snapshots_are_throttled_but_the_final_one_is_always_drawn():
    chart = DistributionChart(PODS, "throttled", min_redraw_s=60)
    for count in range(1, 11):
        chart.update(snapshot({PODS[0]: count}))
    assert chart.redraws == 1  # the first snapshot; the other nine came too soon
    assert chart.result.per_pod == {PODS[0]: 10}  # but every snapshot is kept
    chart.update(snapshot({PODS[0]: 11}, done=True))
    assert chart.redraws == 2
    assert list(chart.figure.data[0].y) == [11, 0, 0]


def test_summary_is_the_stable_checks_text_and_needs_a_run_first():
    chart = DistributionChart(PODS, "my chart")
    with pytest.raises(RuntimeError, match="'my chart' has no run yet"):
        chart.summary()
    chart.update(snapshot({PODS[0]: 50}, done=True))
    assert chart.summary() == (
        "pods that served requests: 1 of 3\nmax/min within 1.2: no\nfailed RPCs: none"
    )
    chart.update(snapshot({PODS[0]: 100, PODS[1]: 99, PODS[2]: 101}, errors={"UNAVAILABLE": 2}))
    assert chart.summary() == (
        "pods that served requests: 3 of 3\nmax/min within 1.2: yes\nfailed RPCs: some"
    )


def test_chart_text_repr_is_stable_for_nbval():
    chart = DistributionChart(PODS, "stable")
    bundle = chart._repr_mimebundle_()
    assert bundle["text/plain"] == "DistributionChart('stable', pods=3)"
    assert "application/vnd.jupyter.widget-view+json" in bundle


def timed_result(
    buckets: list[dict[str, int]], interval: float = 0.5, elapsed: float | None = None
):
    timeline = [
        {"t": round(i * interval, 6), "per_pod": dict(b), "errors": {}}
        for i, b in enumerate(buckets)
    ]
    totals: dict[str, int] = {}
    for bucket in buckets:
        for pod, count in bucket.items():
            totals[pod] = totals.get(pod, 0) + count
    return LoadResult(
        per_pod=totals,
        timeline=timeline,
        elapsed_s=elapsed if elapsed is not None else len(buckets) * interval,
        done=True,
    )


def test_timeline_rates_are_per_second_and_skip_the_unfinished_bucket():
    # Three full buckets and a fourth cut short at 1.6 s: drawing it would fake a drop.
    result = timed_result([{"a": 50}, {"a": 50, "b": 10}, {"a": 40, "b": 20}, {"a": 3}], 0.5, 1.6)
    times, rates = timeline_rates(["a", "b", "c"], result)
    assert times == [0.0, 0.5, 1.0]
    assert rates == {"a": [100.0, 100.0, 80.0], "b": [0.0, 20.0, 40.0], "c": [0.0, 0.0, 0.0]}


def test_timeline_chart_draws_idle_pods_and_marks_events():
    result = timed_result([{"a": 5}, {"a": 5}, {"a": 5}])
    chart = TimelineChart(["a"], "scale-up")
    chart.update(result)
    chart.add_pods(["a", "new-1"])
    assert [trace.meta for trace in chart.figure.data] == ["a", "new-1"]
    assert list(chart.figure.data[1].y) == [0.0, 0.0, 0.0]
    chart.mark(1.0, "scale to 5")
    assert chart.marks == [(1.0, "scale to 5")]
    assert len(chart.figure.layout.shapes) == 1 and chart.figure.layout.shapes[0].x0 == 1.0


def test_timeline_labels_pods_by_role_and_gives_each_mark_its_own_row():
    old = ["old-a", "old-b", "old-c"]
    chart = TimelineChart(old, "roles")
    chart.add_pods(["new-x", "new-y"])
    chart.update(timed_result([{"old-a": 5, "old-b": 5, "old-c": 5}, {"old-a": 5}]))
    traces = {trace.meta: trace for trace in chart.figure.data}
    assert {traces[pod].name for pod in old} == {"old pods (3)"}
    assert [traces[pod].showlegend for pod in old] == [True, False, False]  # one entry
    assert {traces[pod].line.color for pod in old} == {"#a8a8a8"}
    assert (traces["new-x"].name, traces["new-y"].name) == ("new pod 4", "new pod 5")
    new_colors = {traces["new-x"].line.color, traces["new-y"].line.color}
    assert len(new_colors) == 2 and "#a8a8a8" not in new_colors
    # Both new pods sit at 0 here: different dashes keep the two lines apart.
    assert traces["new-x"].line.dash != traces["new-y"].line.dash
    assert chart.figure.layout.legend.orientation == "h" and chart.figure.layout.legend.y < 0
    for t, label in [(1.0, "scale to 5"), (1.1, "5/5 ready"), (1.2, "new pods serving")]:
        chart.mark(t, label)
    rows = [note.y for note in chart.figure.layout.annotations]
    assert len(set(rows)) == 3, rows  # close in time, yet on rows of their own
    # The lines stay below the lowest row of labels.
    top = chart.figure.layout.yaxis.range[1]
    assert max(max(trace.y) for trace in chart.figure.data) / top < min(rows) - 0.05


def test_show_pickup_marks_the_time_or_says_never():
    served = timed_result([{"a": 5}, {"a": 5}, {"a": 5, "new": 1}, {"a": 5, "new": 5}])
    chart = TimelineChart(["a"], "picked up")
    chart.show_pickup(ScaleRun(served, ["a"], ["new"], scaled_at_s=0.2, ready_at_s=0.7))
    assert chart.marks == [(1.0, "new pods serving")]
    idle = timed_result([{"a": 5}, {"a": 5}])
    chart = TimelineChart(["a"], "never")
    chart.show_pickup(ScaleRun(idle, ["a"], ["new"], scaled_at_s=0.2, ready_at_s=0.7))
    assert chart.marks == []
    assert chart.figure.layout.annotations[-1].text == "the new pods served nothing"
    assert (
        chart.widget.figure["layout"]["annotations"][-1]["text"]
        == chart.figure.layout.annotations[-1].text
    )


def test_the_widget_holds_the_whole_figure_and_every_chart_shares_one_plotly_js():
    first, second = DistributionChart(PODS, "first"), TimelineChart(PODS, "second")
    first.update(snapshot({PODS[2]: 7}, done=True))
    state = first.widget.figure
    assert (
        state["data"][0]["y"] == [0, 0, 7] and "7 OK, 0 failed" in state["layout"]["title"]["text"]
    )
    assert "template" not in state["layout"]  # it would ride along in every update
    # The opening state names the chart, so a view that renders before any figure arrives
    # is still known by its title (the browser test reads chart.js's registry by title).
    assert first.widget.get_state()["title"] == "first" and second.widget.title == "second"
    assert first.widget.library is second.widget.library
    assert first.widget.library.source.startswith("/**\n* plotly.js v")
    # The chart module itself stays small: plotly.js is not in it.
    assert len(first.widget._esm) < 10_000


def test_a_displayed_chart_is_replaced_by_a_saved_figure_when_its_run_ends():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    chart = DistributionChart(PODS, "saved", min_redraw_s=0)
    with capture_output() as captured:
        display(chart)
        chart.update(snapshot({PODS[0]: 3}))  # running: the live view stays
        chart.update(snapshot({PODS[0]: 9}, done=True))
        chart.update(snapshot({PODS[0]: 10}, done=True))  # a change after the end
        chart.update(snapshot({PODS[0]: 1}))  # another run into the same chart: live again
    live, final, between, changed, again = captured.outputs
    assert WIDGET_MIME in live.data and live.data["text/plain"] == repr(chart)
    display_id = live.transient["display_id"]
    assert final.update and final.transient["display_id"] == display_id
    assert WIDGET_MIME not in final.data and final.data["text/plain"] == repr(chart)
    figure = final.data[PLOTLY_MIME]
    assert figure["data"][0]["y"] == [9, 0, 0] and "(done)" in figure["layout"]["title"]["text"]
    # JupyterLab's plotly renderer draws a figure once: a text output in between makes it
    # draw the changed one.
    assert between.update and list(between.data) == ["text/plain"]
    assert changed.update and changed.data[PLOTLY_MIME]["data"][0]["y"] == [10, 0, 0]
    assert again.update and WIDGET_MIME in again.data


def test_the_front_end_reports_each_rendered_view():
    chart = DistributionChart(PODS, "reported")
    chart.widget._handle_custom_msg({"event": "rendered"}, [])
    chart.widget._handle_custom_msg({"event": "something else"}, [])
    assert chart.widget.views_rendered == 1


def test_scale_run_describes_and_summarises_its_pickup():
    result = timed_result([{"a": 5}, {"a": 5}, {"a": 5, "new": 1}])
    run = ScaleRun(result, ["a"], ["new"], scaled_at_s=0.2, ready_at_s=0.6)
    assert run.pickup_s() == pytest.approx(0.4)
    assert "every new pod had served 0.4 s after that (1.0 s into the run" in run.describe()
    assert run.summary(within_s=10) == (
        "new pods: 1\nnew pods that served requests: 1 of 1\n"
        "every new pod served within 10 s of being ready: yes"
    )


def test_progress_bar_takes_wait_ready_progress():
    bar = progress_bar(3, "rollout", show=False)
    assert isinstance(bar, ProgressBar)
    bar(1, 3)
    assert (bar.done, bar.total, bar.label.value, bar.bar.bar_style) == (1, 3, "1/3", "")
    bar(3, 5)  # a scale during the rollout changes the total
    assert (bar.done, bar.total, bar.label.value) == (3, 5, "3/5")
    bar(5, 5)
    assert bar.bar.bar_style == "success"


def test_progress_bar_counts_steps():
    bar = progress_bar(2, "cluster up", show=False)
    bar.advance("started")
    assert (bar.done, bar.label.value) == (1, "1/2 started")
    bar.advance("namespace")
    assert bar.bar.bar_style == "success"


# -- against a real sandbox ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab():
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(MANIFESTS / "base")
        sandbox.apply(MANIFESTS / "headless" / "service-headless.yaml")
        sandbox.wait_ready("grpc-server", timeout=60)
        yield sandbox


def ready(lab) -> list[str]:
    return [pod.name for pod in lab.wait_ready("grpc-server", timeout=60)]


def test_distribution_chart_follows_a_real_run_through_the_cluster_ip(lab):
    pods = ready(lab)
    chart = DistributionChart(pods, "ClusterIP, one channel", min_redraw_s=0)
    result = lab.run_load(
        LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=1.2, interval_s=0.2),
        on_progress=chart.update,
    )
    assert chart.result is result and chart.redraws >= 3  # live, then the final snapshot
    assert sorted(chart.figure.data[0].y) == [0, 0, result.ok]
    assert chart.summary().startswith("pods that served requests: 1 of 3\n")


def test_playground_scales_and_runs_what_its_controls_say(lab):
    playground = Playground(lab, rpcs=300)
    assert playground.replicas.value == 3 and playground.progress.done == 3
    playground.replicas.value = 2  # the slider's observer scales and waits for the rollout
    assert playground.status.value == "", playground.status.value
    assert len(ready(lab)) == 2 and len(playground.chart.pods) == 2
    assert playground.progress.done == 2
    playground.service.value = "grpc-server-headless"
    playground.policy.value = "round_robin"
    playground.channels.value = 2
    spec = playground.spec()
    assert (spec.channels, spec.lb_policy) == (2, "round_robin")
    assert spec.target == lab.target("grpc-server-headless")
    result = playground.run()
    assert result.ok == 300 and checks.pods_that_served(result) == 2
    assert playground.status.value.startswith("pods that served requests: 2 of 2; ")
    playground.replicas.value = 3
    assert len(ready(lab)) == 3


def test_playground_shows_errors_in_its_status_line(lab):
    playground = Playground(lab, services={"missing": "no-such-service"})
    playground._on_run(playground.run_button)
    assert playground.status.value.startswith("error: ")
    assert "no-such-service" in playground.status.value
    assert not playground.run_button.disabled


def test_run_with_scale_puts_the_scale_on_the_load_clock(lab):
    before = ready(lab)
    chart = TimelineChart(before, "scale 3 to 4")
    spec = LoadSpec(
        lab.target("grpc-server-headless"),
        rpcs=None,
        duration_s=3,
        concurrency=4,
        lb_policy="round_robin",
        interval_s=0.25,
    )
    try:
        run = run_with_scale(lab, spec, replicas=4, at_s=0.5, chart=chart)
    finally:
        lab.scale("grpc-server", 3)
        ready(lab)
    assert sorted(run.before) == sorted(before) and len(run.new_pods) == 1
    assert 0.5 <= run.scaled_at_s < run.ready_at_s
    assert [label for _, label in chart.marks][:2] == ["scale to 4", "4/4 ready"]
    assert run.new_pods[0] in chart.drawn_pods()
    # A round_robin channel that never loses a connection never looks again.
    assert run.result.per_pod.get(run.new_pods[0], 0) == 0
    assert run.summary().splitlines()[1] == "new pods that served requests: 0 of 1"


def test_run_with_scale_refuses_a_run_too_short_to_scale_in(lab):
    spec = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=1)
    with pytest.raises(ValueError, match="duration_s must be longer than at_s=2"):
        run_with_scale(lab, spec, replicas=4, at_s=2)

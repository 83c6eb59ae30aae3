"""The comparison's mechanics on a real sandbox: set-up, skips, steady rounds, memory, summary;
and the notebook's own code fed the result a kind cluster gives (nothing emulated, memory
not measured, a solution skipped)."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from support import MANIFESTS, REPO

import grpclab
from grpclab.cluster import NOT_MEASURED, Cluster, Component
from grpclab.cluster.kube import KubeCluster
from grpclab.cluster.sandbox.components import tree_rss_kb
from grpclab.measure import compare


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    with grpclab.connect("sandbox") as cluster:
        yield cluster


def test_l4_sticks_to_one_pod_round_robin_spreads_and_kube_proxy_has_memory(lab):
    lineup = compare.prepare(lab, MANIFESTS, only=["l4", "round_robin"], out=lambda _: None)
    assert [s.key for s in lineup.solutions()] == ["l4", "round_robin"] and not lineup.skipped
    rows, direct = compare.measure_steady(lineup, rounds=2, latency_s=0.3, out=lambda _: None)
    compare.measure_memory(lineup, rows)

    assert rows["l4"].pods_served == 1 and compare.evenness_word(rows["l4"]) == "one pod"
    assert rows["round_robin"].pods_served == 3
    assert rows["round_robin"].max_min <= compare.EVEN_MAX_MIN  # room for a busy machine
    assert direct["p50"] > 0 and rows["l4"].p50_ms > 0
    assert all(row.extra["steady_failed"] == 0 for row in rows.values())
    # kube-proxy is an Envoy here: tens of MB resident, and a stand-in, so the row says so;
    # the client-side row has no proxy.
    assert rows["l4"].rss_mb > 10 and rows["l4"].rss_note == "shared by every Service"
    assert rows["l4"].emulated and lineup.stand_ins == {"l4": "Envoy tcp_proxy"}
    assert rows["round_robin"].rss_mb is None and rows["round_robin"].rss_note == "no proxy"
    assert not rows["round_robin"].emulated
    comparison = compare.Comparison(rows, lineup.skipped, direct)
    table = comparison.table()
    assert "ClusterIP (L4) [EMULATED: Envoy tcp_proxy]" in table
    assert "direct call to one pod" in table and compare.STAND_IN_NOTE in table
    assert "EMULATED here: Envoy tcp_proxy" in comparison._repr_html_()
    # An emulation is never ranked against real components on memory.
    assert comparison.memory()[-2:] == [
        f"ClusterIP (L4): {rows['l4'].rss_mb:.1f} MB† (shared by every Service), "
        "EMULATED by Envoy tcp_proxy, not ranked",
        "headless + round_robin: no proxy",
    ]
    lesson = next(block for block in comparison.lessons() if "memory" in block)
    assert lesson.endswith("\n  EMULATED here, not counted: ClusterIP (L4)"), lesson

    # The spread runs' calls are slowed on the pods, and the latency runs' are not: each
    # round's latency runs come before its spread runs, and after the last round the pods
    # are quick again. Slowed by 250 ms here, not SPREAD_CALL_MS: a busy machine made quick
    # calls take 66 ms (p50) once, so the line between slow and quick must sit far above that.
    slow_ms = 250
    latency, spread = compare.interleaved_rounds(
        lineup, 2, 0.2, spread_rpcs=30, out=lambda _: None, spread_call_ms=slow_ms
    )
    assert [len(spread[key]) for key in spread] == [0, 2, 2]  # direct, l4, round_robin
    assert all(r.latency_ms["p50"] >= slow_ms for v in spread.values() for r in v)
    assert all(r.latency_ms["p50"] < slow_ms for v in latency.values() for r in v)
    spec = compare.run_spec(lineup.specs["round_robin"], duration_s=0.2, concurrency=1, rate=200)
    quick = lab.run_load(spec)
    assert quick.ok and quick.latency_ms["p50"] < slow_ms

    # The paced spread run still sees a client that does not balance: the headless name
    # with gRPC's default pick_first sends every call to one pod, and the lesson fails.
    lineup.specs["round_robin"] = replace(lineup.specs["round_robin"], lb_policy="pick_first")
    broken, _ = compare.measure_steady(lineup, rounds=1, latency_s=0.3, out=lambda _: None)
    assert broken["round_robin"].pods_served == 1
    with pytest.raises(AssertionError, match="spread calls evenly.*not for headless"):
        compare.Comparison(broken, lineup.skipped, direct).lessons()


def test_server_pods_opt_out_of_both_meshes_and_the_namespace_asks_for_both(lab):
    compare.prepare(lab, MANIFESTS, only=["l4"], out=lambda _: None)
    for path in ("base", "headless/deployment-max-connection-age.yaml"):
        (deployment,) = [o for o in compare.unmeshed(MANIFESTS / path) if o["kind"] == "Deployment"]
        template = deployment["spec"]["template"]["metadata"]
        assert template["labels"]["sidecar.istio.io/inject"] == "false"
        assert template["labels"]["app"] == "grpc-server"  # the selector still matches
        assert template["annotations"]["linkerd.io/inject"] == "disabled"
    pods = lab.pods({"app": "grpc-server"})
    assert pods and all(p.labels["sidecar.istio.io/inject"] == "false" for p in pods)


def test_a_solution_the_cluster_cannot_offer_is_skipped_with_its_reason(lab, tmp_path):
    # The same manifests, but the namespace does not ask for Istio's sidecar.
    manifests = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, manifests)
    namespace = manifests / "compare" / "namespace.yaml"
    namespace.write_text(namespace.read_text().replace("    istio-injection: enabled\n", ""))
    printed: list[str] = []

    lineup = compare.prepare(lab, manifests, only=["mesh", "l4"], out=printed.append)

    assert "mesh" not in lineup.specs and "l4" in lineup.specs
    assert "not in the mesh" in lineup.skipped["mesh"]
    assert any(line.startswith("Istio sidecar: skipped (") for line in printed), printed


def test_unknown_solution_names_are_refused(lab):
    with pytest.raises(ValueError, match="unknown solution.*'consul'.*known: l4"):
        compare.prepare(lab, MANIFESTS, only=["consul"], out=lambda _: None)


def test_tree_rss_counts_the_proxy_and_its_children_but_not_a_wrapper_shell():
    # A shell that waits on a Python child holding 40 MB: like nginx under its guard shell.
    child_code = "import time; block = bytearray(40_000_000); time.sleep(60)"
    shell = subprocess.Popen(
        ["sh", "-c", f"'{sys.executable}' -c '{child_code}' & wait"], start_new_session=True
    )
    try:
        deadline = time.monotonic() + 20
        while tree_rss_kb(shell.pid) < 40_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
        (child,) = map(int, children)
        # The child may still be touching pages: compare once its own figure holds still.
        before = -1
        while tree_rss_kb(child) != before and time.monotonic() < deadline:
            before = tree_rss_kb(child)
            time.sleep(0.3)
        total = tree_rss_kb(shell.pid)
        assert total >= 40_000
        assert total == tree_rss_kb(child)  # the shell's own pages are left out
    finally:
        os.killpg(shell.pid, signal.SIGKILL)  # the group this test started, by its id
        shell.wait()


def _row(key: str, **fields) -> compare.Row:
    solution = next(s for s in (*compare.SOLUTIONS, compare.MAX_AGE) if s.key == key)
    return compare.Row(solution, **fields)


def test_the_stable_summary_says_classes_and_thresholds_not_numbers():
    rows = {
        "l4": _row(
            "l4",
            max_min=float("inf"),
            pods_served=1,
            p50_over_ms=0.04,
            pickup_s=None,
            pickup_window_s=12.0,
            crash_failed=6,
            served_after_crash=True,
            rss_mb=74.1,
            stand_in="Envoy tcp_proxy",
            extra={"steady_failed": 0},
        ),
        "mesh": _row(
            "mesh",
            max_min=1.9,
            pods_served=3,
            p50_over_ms=6.5,
            pickup_s=0.0,
            pickup_window_s=12.0,
            crash_failed=0,
            served_after_crash=True,
            rss_mb=75.0,
            extra={"steady_failed": 2},
        ),
        "ingress": _row(
            "ingress",
            max_min=1.01,
            pods_served=3,
            p50_over_ms=0.3,
            pickup_s=11.0,
            pickup_window_s=12.0,
            crash_failed=2,
            served_after_crash=False,
            rss_mb=13.5,
        ),
        "max_age": _row("max_age", pickup_s=2.5, pickup_window_s=10.0),
    }
    summary = compare.Comparison(rows, {"linkerd": "KubeError: no linkerd"}).summary()
    lines = summary.splitlines()
    cells = [line.split("  ") for line in lines[1:5]]
    cells = [[c.strip() for c in line if c.strip()] for line in cells]
    assert cells == [
        ["ClusterIP (L4)", "one pod", "no", "yes"],
        ["Istio sidecar", "uneven", "yes", "yes"],
        ["NGINX Ingress", "even", "no", "no"],
        ["headless + rr + max age", "-", "yes", "-"],
    ]
    assert lines[5:] == ["failed calls under steady load: Istio sidecar", "skipped: Linkerd proxy"]


def kind_shaped() -> compare.Comparison:
    """What notebook 10 gets on kind: every row real, no memory, Linkerd not installed."""
    pods = ["grpc-server-a", "grpc-server-b", "grpc-server-c"]
    lab = KubeCluster.__new__(KubeCluster)  # the interface's own answers; no API server here
    lineup = compare.Lineup(
        lab, {}, {"linkerd": "KubeError: needs the linkerd add-on"}, pods, MANIFESTS
    )
    measured = dict(pods_served=3, max_min=1.1, cv=0.04, p50_ms=2.0, p99_ms=5.0)
    rows = {
        "l4": _row("l4", pods_served=1, max_min=math.inf, cv=1.41, p50_ms=2.0, p99_ms=4.0),
        "round_robin": _row("round_robin", **measured),
        **{key: _row(key, **measured) for key in ("mesh", "xds", "ingress", "gateway")},
    }
    for row in rows.values():
        row.p50_over_ms, row.p99_over_ms = 0.5, 1.0
        row.pickup_s, row.pickup_window_s = (
            (None, 12.0) if row.solution.key in ("l4", "round_robin") else (0.0, 12.0)
        )
        row.crash_failed, row.crash_total, row.served_after_crash = 3, 900, True
        row.extra["steady_failed"] = 0
    compare.measure_memory(lineup, rows)
    rows["max_age"] = _row("max_age", pickup_s=2.0, pickup_window_s=10.0, rss_note="no proxy")
    return compare.Comparison(rows, lineup.skipped, {"p50": 1.5, "p99": 3.0})


def test_kube_reports_memory_as_not_measured_through_the_interface():
    assert KubeCluster.component is Cluster.component  # no backend of its own yet
    assert KubeCluster.__new__(KubeCluster).component("istio") == Component("istio")
    assert Component("istio").memory_mb is None and Component("istio").memory_note == NOT_MEASURED


def test_the_notebooks_code_takes_a_kind_shaped_result_without_a_type_or_key_error():
    comparison = kind_shaped()
    rows = comparison.rows
    assert rows["mesh"].rss_mb is None and rows["mesh"].rss_note == NOT_MEASURED
    assert rows["xds"].rss_note == "no proxy" and not any(r.emulated for r in rows.values())

    table = comparison.table()
    mesh_line = next(line for line in table.splitlines() if line.startswith("Istio sidecar"))
    assert mesh_line.endswith(NOT_MEASURED)
    assert "skipped: Linkerd proxy: KubeError: needs the linkerd add-on" in table
    assert "EMULATED" not in table and compare.STAND_IN_NOTE not in table
    assert NOT_MEASURED in comparison._repr_html_()
    assert comparison.memory()[0] == f"ClusterIP (L4): {NOT_MEASURED}"

    lessons = comparison.lessons()  # the notebook's assert cell: no TypeError, no KeyError
    memory = next(block for block in lessons if "proxy's memory" in block).splitlines()
    assert memory[1:] == [
        f"  {NOT_MEASURED}: ClusterIP (L4), Istio sidecar, NGINX Ingress, Envoy Gateway",
        "  skipped: Linkerd proxy",
    ]
    assert all("DOES NOT HOLD" not in block for block in lessons)
    spread = next(block for block in lessons if block.startswith("per-call clients")).splitlines()
    assert spread[-1] == "  skipped: Linkerd proxy"
    assert "headless + round_robin" in spread[1] and "Envoy Gateway" in spread[-2]
    assert max(len(line) for block in lessons for line in block.splitlines()) <= 96
    summary = comparison.summary().splitlines()
    assert summary[-2:] == ["failed calls under steady load: none", "skipped: Linkerd proxy"]
    # The chart's order: even and quick first (ties to 0.1 s go to the smaller sd/mean),
    # the max-age client (no spread measured) before the headless one that never picked up.
    comparison.rows["gateway"].cv = 0.02
    order = [row.solution.key for row in compare.ranked(comparison)]
    assert order == ["gateway", "mesh", "xds", "ingress", "max_age", "round_robin", "l4"]
    bundle = comparison.ranking()._repr_mimebundle_()
    bars = bundle["application/vnd.plotly.v1+json"]["data"]
    assert [bar["y"] for bar in bars] == [
        [compare._label(r) for r in compare.ranked(comparison)]
    ] * 2
    assert bars[1]["text"][-1] == "never in 12 s" and "Linkerd" not in str(bundle)
    assert bundle["text/plain"].splitlines()[0] == "1. Envoy Gateway: sd/mean 0.02, new pod < 0.1 s"


def test_a_lesson_that_does_not_hold_fails_and_names_the_row():
    comparison = kind_shaped()
    comparison.rows["gateway"].max_min = 3.0
    with pytest.raises(AssertionError, match="spread calls evenly.*not for Envoy Gateway"):
        comparison.lessons()


def test_the_notebooks_own_cells_run_on_a_kind_shaped_result(capsys):
    """Notebook 10's cells after the measurements, run as they are stored, on a kind result."""
    notebook = nbformat.read(REPO / "notebooks" / "10-compare-solutions.ipynb", as_version=4)
    cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    after_crash = next(i for i, source in enumerate(cells) if "measure_crash" in source) + 1
    # The max-age cell and lab.down() talk to a cluster; the rest only read the rows.
    reading = [s for s in cells[after_crash:] if "measure_max_age" not in s and "lab.down" not in s]
    assert any("lessons()" in source for source in reading), "the lessons cell moved"
    comparison = kind_shaped()
    lineup = compare.Lineup(KubeCluster.__new__(KubeCluster), {}, comparison.skipped, [], MANIFESTS)
    namespace = {"compare": compare, "rows": comparison.rows, "direct": comparison.direct}
    namespace["lineup"] = lineup
    for source in reading:
        exec(compile(source, "notebook 10", "exec"), namespace)  # noqa: S102
    printed = capsys.readouterr().out
    assert f"Istio sidecar: {NOT_MEASURED}" in printed  # the memory cell
    assert f"  {NOT_MEASURED}: ClusterIP (L4), Istio sidecar" in printed  # the lessons cell
    assert "skipped: Linkerd proxy" in printed  # the summary
    assert NOT_MEASURED in namespace["comparison"]._repr_html_()  # the table cell

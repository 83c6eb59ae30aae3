"""The comparison's mechanics on a real sandbox: set-up, skips, steady rounds, memory, summary."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import grpclab
from grpclab import compare
from grpclab.cluster import Cluster

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "cluster" / "manifests"


@pytest.fixture(scope="module")
def lab() -> Iterator[Cluster]:
    with grpclab.connect("sandbox") as cluster:
        yield cluster


def test_l4_sticks_to_one_pod_round_robin_spreads_and_kube_proxy_has_memory(lab):
    lineup = compare.prepare(lab, MANIFESTS, only=["l4", "round_robin"], out=lambda _: None)
    assert [s.key for s in lineup.solutions()] == ["l4", "round_robin"] and not lineup.skipped
    rows, direct = compare.measure_steady(
        lineup, rounds=2, latency_s=0.3, spread_rpcs=300, out=lambda _: None
    )
    compare.measure_memory(lineup, rows)

    assert rows["l4"].pods_served == 1 and compare.evenness_word(rows["l4"]) == "one pod"
    assert rows["round_robin"].pods_served == 3 and rows["round_robin"].max_min <= 1.2
    assert direct["p50"] > 0 and rows["l4"].p50_ms > 0
    assert all(row.extra["steady_failed"] == 0 for row in rows.values())
    # kube-proxy is a real Envoy: tens of MB resident; the client-side row has no proxy.
    assert rows["l4"].rss_mb > 10 and rows["l4"].rss_note == "shared"
    assert rows["round_robin"].rss_mb is None and rows["round_robin"].rss_note == "n/a (no proxy)"
    table = compare.Comparison(rows, lineup.skipped, direct).table()
    assert "ClusterIP (L4)" in table and "direct call to one pod" in table


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
        while compare.tree_rss_kb(shell.pid) < 40_000 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = Path(f"/proc/{shell.pid}/task/{shell.pid}/children").read_text().split()
        (child,) = map(int, children)
        total = compare.tree_rss_kb(shell.pid)
        assert total >= 40_000
        assert total == compare.tree_rss_kb(child)  # the shell's own pages are left out
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
    summary = compare.Comparison(rows, {}).summary().splitlines()
    cells = [line.split("  ") for line in summary[1:5]]
    cells = [[c.strip() for c in line if c.strip()] for line in cells]
    assert cells == [
        ["ClusterIP (L4)", "one pod", "yes", "no", "yes"],
        ["Istio sidecar", "uneven", "no", "yes", "yes"],
        ["NGINX Ingress", "even", "yes", "no", "no"],
        ["headless + rr + max age", "-", "-", "yes", "-"],
    ]
    assert summary[5:] == [
        "failed calls under steady load: Istio sidecar",
        "smallest proxy in memory: NGINX Ingress",
    ]

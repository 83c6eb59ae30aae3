"""Drills on a sandbox: the action runs on the load's clock, and says so when it never ran."""

from __future__ import annotations

import time

import pytest
from support import wait_until

from grpclab.load import LoadSpec, drills


def test_the_action_runs_at_s_into_the_load_on_the_loads_own_clock(lab):
    spec = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=2.0, interval_s=0.1, rate=100)
    seen = []
    run = drills.drill(lab, spec, at_s=1.0, action=lambda: seen.append("acted"))
    assert seen == ["acted"]
    assert 1.0 <= run.action_started_s <= run.action_done_s
    # The clock started with calls flowing: the load counted calls before the action.
    assert run.result.between(0, run.action_started_s).ok > 0


def test_a_load_that_ends_before_the_action_is_refused_before_it_runs(lab):
    seen = []
    for spec in (
        LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=0.5, interval_s=0.1),
        LoadSpec(lab.target("grpc-server"), rpcs=100),  # no known length
    ):
        with pytest.raises(ValueError, match=r"LoadSpec.duration_s must be longer than at_s=3"):
            drills.drill(lab, spec, at_s=3.0, action=lambda: seen.append("acted"))
    assert seen == []


def test_a_load_stopped_early_runs_no_action_and_says_why(lab):
    # The load stops 0.3 s in (its progress callback raises), before the action is due.
    spec = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=3.0, interval_s=0.1, rate=100)

    class Stop(Exception):
        pass

    def stop_early(snapshot):
        if snapshot.elapsed_s > 0.3:
            raise Stop

    seen = []
    with pytest.raises(Stop):
        drills.drill(lab, spec, 2.0, lambda: seen.append("acted"), on_progress=stop_early)
    assert seen == []


def test_the_actions_own_error_is_raised(lab):
    spec = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=1.0, interval_s=0.1, rate=100)

    def fail() -> None:
        raise KeyError("no such pod")

    with pytest.raises(KeyError, match="no such pod"):
        drills.drill(lab, spec, at_s=0.3, action=fail)


def test_repeated_crashes_spread_over_the_pods_least_restarted_first(lab):
    pods = [pod.name for pod in lab.wait_ready("grpc-server", timeout=60)]
    first = drills.least_restarted(lab, pods)
    lab.crash_pod(first)
    wait_until(
        lambda: any(p.name == first and p.ready and p.restarts for p in lab.pods()),
        "the crashed pod to come back",
    )
    second = drills.least_restarted(lab, pods)
    assert second != first and second in pods
    with pytest.raises(KeyError, match="is a ready pod"):
        drills.least_restarted(lab, ["no-such-pod"])


class LateSecondLoad:
    """The sandbox, with the second load starting 1.5 s late: a Job that a cluster starts
    after the first one (scheduling, container start)."""

    def __init__(self, lab, late_target: str) -> None:
        self.lab, self.late_target = lab, late_target

    def run_load(self, spec, on_progress=None):
        if spec.target == self.late_target:
            time.sleep(1.5)
        return self.lab.run_load(spec, on_progress)


def test_the_action_waits_for_every_load_to_run_and_comes_at_s_into_the_last(lab):
    first = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=4.0, interval_s=0.1, rate=100)
    late = LoadSpec(
        lab.target("grpc-server", via="clusterip"),
        rpcs=None,
        duration_s=3.0,
        interval_s=0.1,
        rate=100,
    )
    assert first.target != late.target
    run = drills.act_during(
        LateSecondLoad(lab, late.target), {"first": first, "late": late}, 0.5, lambda _: None
    )
    # On the late load's own clock the action came at_s in, with its calls flowing before.
    assert run.started_s["late"] >= 0.5
    assert run.results["late"].between(0, run.started_s["late"]).ok > 0
    # The first load had run about 1.5 s longer by then (less its own start-up).
    assert run.started_s["first"] - run.started_s["late"] > 1.0


def test_a_load_that_starts_after_the_first_is_over_is_named(lab):
    first = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=1.0, interval_s=0.1, rate=100)
    late = LoadSpec(
        lab.target("grpc-server", via="clusterip"),
        rpcs=None,
        duration_s=3.0,
        interval_s=0.1,
        rate=100,
    )
    seen = []
    with pytest.raises(drills.DrillError, match=r"before 'late' completed a call"):
        drills.act_during(
            LateSecondLoad(lab, late.target),
            {"first": first, "late": late},
            0.5,
            lambda _: seen.append("acted"),
        )
    assert seen == []

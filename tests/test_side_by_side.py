"""Several clients through one event, against real pods."""

from __future__ import annotations

import pytest
from support import REPO

import grpclab
from grpclab.load import LoadSpec
from grpclab.measure import checks
from grpclab.side_by_side import run_side_by_side


@pytest.fixture(scope="module")
def lab():
    with grpclab.connect("sandbox") as sandbox:
        sandbox.apply(REPO / "cluster" / "manifests" / "base")
        sandbox.apply(REPO / "cluster" / "manifests" / "headless" / "service-headless.yaml")
        sandbox.wait_ready("grpc-server")
        yield sandbox


def test_the_event_sees_every_client_and_happens_on_each_clients_clock(lab):
    loads = {
        "pinned": LoadSpec(
            lab.target("grpc-server"), rpcs=None, duration_s=4, concurrency=2, rate=200
        ),
        "spread": LoadSpec(
            lab.target("grpc-server-headless"),
            rpcs=None,
            duration_s=4,
            concurrency=2,
            rate=200,
            lb_policy="round_robin",
            service_config={
                "loadBalancingConfig": [{"round_robin": {}}],
                "healthCheckConfig": {"serviceName": "mypackage.MyService"},
            },
        ),
    }

    def flip_the_pinned_pod(snapshots):
        assert set(snapshots) == {"pinned", "spread"}
        (victim,) = snapshots["pinned"].per_pod  # one channel through the ClusterIP: one pod
        lab.set_fault(victim, not_serving=True)
        return victim

    try:
        run = run_side_by_side(lab, loads, at_s=1.0, event=flip_the_pinned_pod)
    finally:
        for pod in lab.pods():
            lab.set_fault(pod.name)
    victim = run.outcome
    assert set(run.results) == {"pinned", "spread"}
    assert run.event_s["pinned"] >= 1.0
    assert all(run.event_done_s[n] >= run.event_s[n] for n in loads)
    # The pinned connection stays on its pod; the health-checking client leaves it.
    assert checks.drain_time(run.results["pinned"], victim, run.event_s["pinned"]) is None
    drained = checks.drain_time(run.results["spread"], victim, run.event_s["spread"])
    assert drained is not None


def test_an_error_in_the_event_is_raised_after_the_run(lab):
    spec = LoadSpec(lab.target("grpc-server"), rpcs=None, duration_s=1.5, concurrency=1, rate=100)

    def fail(_):
        raise KeyError("no such pod")

    with pytest.raises(KeyError, match="no such pod"):
        run_side_by_side(lab, {"client": spec}, at_s=0.5, event=fail)


def test_a_load_that_ends_before_the_event_is_refused(lab):
    spec = LoadSpec(lab.target("grpc-server"), rpcs=10)
    with pytest.raises(ValueError, match=r"loads\['client'\].duration_s must be longer"):
        run_side_by_side(lab, {"client": spec}, at_s=1.0, event=lambda _: None)


def test_share_over_time_skips_the_bucket_cut_short_by_the_end_of_the_run():
    from grpclab.load import LoadResult
    from grpclab.side_by_side import share_over_time

    result = LoadResult(
        per_pod={"a": 6, "b": 3},
        timeline=[
            {"t": 0.0, "per_pod": {"a": 2, "b": 2}, "errors": {}},
            {"t": 0.5, "per_pod": {"a": 3}, "errors": {}},
            {"t": 1.0, "per_pod": {}, "errors": {"UNAVAILABLE": 1}},
            {"t": 1.5, "per_pod": {"a": 1, "b": 1}, "errors": {}},
        ],
        elapsed_s=1.6,
    )
    assert share_over_time(result, "b") == ([0.0, 0.5, 1.0], [0.5, 0.0, None])

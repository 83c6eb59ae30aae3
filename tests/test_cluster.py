"""The Cluster interface's own code: wait_ready's one poll loop over a backend's _rollout."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest

from grpclab.cluster import Cluster, Pod, Rollout


class ScriptedRollout(Cluster):
    """A backend whose rollout goes through the given states, one per poll."""

    backend = "scripted"
    namespace = "production"

    def __init__(self, states: Iterable[Rollout]) -> None:
        self.states, self.asked = states, []

    def _rollout(self, deployment: str, namespace: str) -> Iterator[Rollout]:
        self.asked.append((deployment, namespace))
        yield from self.states


for _name in list(ScriptedRollout.__abstractmethods__):
    if _name != "_rollout":
        setattr(ScriptedRollout, _name, lambda self, *a, **k: None)
ScriptedRollout.__abstractmethods__ = frozenset()

POD = Pod("grpc-server-a", "production", "127.42.0.2", True, "Running")


def test_progress_is_reported_once_per_change_and_the_ready_pods_are_returned():
    states = [Rollout(0, 2), Rollout(0, 2), Rollout(1, 2), Rollout(1, 3), Rollout(3, 3, [POD])]
    lab, seen = ScriptedRollout(states), []
    assert lab.wait_ready("grpc-server", on_progress=lambda *p: seen.append(p)) == [POD]
    assert seen == [(0, 2), (1, 2), (1, 3), (3, 3)]
    assert lab.asked == [("grpc-server", "production")]  # the namespace defaults to the lab's


def test_a_failure_that_waiting_cannot_mend_is_raised_at_once():
    stuck = RuntimeError('ProgressDeadlineExceeded: ReplicaSet "x" has timed out progressing')
    lab = ScriptedRollout([Rollout(1, 2, failure=stuck), Rollout(2, 2, [POD])])
    with pytest.raises(RuntimeError, match="ProgressDeadlineExceeded"):
        lab.wait_ready("grpc-server", timeout=60)


def test_time_running_out_says_how_far_the_rollout_got_and_what_the_backend_saw():
    def forever() -> Iterator[Rollout]:
        while True:
            yield Rollout(1, 3, report=lambda: "  grpc-server-b Pending ready=False")

    lab = ScriptedRollout(forever())
    with pytest.raises(TimeoutError) as raised:
        lab.wait_ready("grpc-server", namespace="alice", timeout=0)
    assert str(raised.value) == (
        "deployment alice/grpc-server: 1/3 ready after 0 s\n  grpc-server-b Pending ready=False"
    )

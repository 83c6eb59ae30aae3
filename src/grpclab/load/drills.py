"""Things done to a cluster while load runs (crash a pod, stop a control plane), timed.

Each drill runs `lab.run_load(spec)` and acts `at_s` seconds into it, so the
load's per-interval timeline shows what the clients saw around that moment.
(A scale-up during load is `grpclab.widgets.run_with_scale`.)

The action's clock is the load's own: it starts with the first progress snapshot in which
the client has completed calls, so that a slow start (a Job's pod, a sidecar, a first
connection on a real cluster) does not eat into `at_s`. The action itself takes time: an
exec into a pod (set_fault, crash_pod) takes about a second on a real cluster. `drill`
reports when it began and ended on the load clock, and a drill whose action never ran, or
never finished, raises DrillError instead of returning a result that shows no event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.xds.dumps import dumped_virtual_host


class DrillError(RuntimeError):
    """The drill's action did not happen during the load; the message says why."""


@dataclass(frozen=True)
class DrillRun:
    """A load run and, on its clock, when the action began and ended."""

    result: LoadResult
    action_started_s: float
    action_done_s: float


def drill(
    lab: Cluster,
    spec: LoadSpec,
    at_s: float,
    action: Callable[[], object],
    on_progress: Callable[[LoadResult], None] | None = None,
) -> DrillRun:
    """Run the load and call `action()` at_s seconds into it; `on_progress` sees every snapshot.

    DrillError when the action did not run during the load (no call completed, or the load
    ended before at_s); the action's own exception is raised as it is. `action_done_s`
    past `result.elapsed_s` means the load ended before the action did.
    """
    if spec.interval_s > at_s:
        # The load's clock is read from its first progress snapshot, one interval in.
        raise ValueError(f"at_s ({at_s}) must be >= the spec's interval_s ({spec.interval_s})")
    started = threading.Event()
    origin: dict[str, float] = {}
    times: dict[str, float] = {}
    failure: list[BaseException] = []
    finished = threading.Event()

    def progress(snapshot: LoadResult) -> None:
        if not started.is_set() and snapshot.total > 0:
            # The client runs (its calls complete). Anchor our clock to the load's:
            # the snapshot's elapsed_s is on the load generator's clock.
            origin["t0"] = time.perf_counter() - snapshot.elapsed_s
            started.set()
        if on_progress is not None:
            on_progress(snapshot)

    def now() -> float:
        return time.perf_counter() - origin["t0"]

    def act() -> None:
        try:
            while not started.wait(timeout=0.1):
                if finished.is_set():
                    return
            delay = max(0.0, at_s - now())
            if finished.wait(timeout=delay):
                return
            times["started"] = now()
            action()
            times["done"] = now()
        except BaseException as error:  # handed to the caller below
            failure.append(error)

    worker = threading.Thread(target=act, name="grpclab-drill", daemon=True)
    worker.start()
    try:
        result = lab.run_load(spec, progress)
    finally:
        finished.set()
        # An action that started runs to its end (an exec can take seconds on a cluster).
        worker.join(timeout=60)
    if failure:
        raise failure[0]
    if "started" not in times:
        why = (
            "no call of the load completed"
            if not started.is_set()
            else f"the load ended after {result.elapsed_s:.1f} s, before at_s={at_s}"
        )
        raise DrillError(f"the drill's action never ran: {why}; the result shows no event")
    if "done" not in times:
        raise DrillError("the drill's action did not finish within 60 s of the load's end")
    return DrillRun(result, round(times["started"], 3), round(times["done"], 3))


def during_load(
    lab: Cluster,
    spec: LoadSpec,
    at_s: float,
    action: Callable[[], object],
    on_progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """`drill(...)`'s load result alone: the action ran at_s seconds into the load."""
    return drill(lab, spec, at_s, action, on_progress).result


def least_restarted(lab: Cluster, pods: Sequence[str], namespace: str | None = None) -> str:
    """Of `pods`, the ready one whose containers restarted least (first in order on a tie).

    Crashing the same pod again and again walks its container into the kubelet's
    crash-loop back-off (10 s, then 20 s, 40 s, ... before each restart, up to 5 min),
    so a drill that repeats should spread its crashes.
    """
    live = {pod.name: pod for pod in lab.pods(namespace=namespace) if pod.ready}
    candidates = [name for name in pods if name in live]
    if not candidates:
        raise KeyError(f"none of {', '.join(pods)} is a ready pod")
    return min(candidates, key=lambda name: live[name].restarts)


def crash_pod_during_load(
    lab: Cluster,
    spec: LoadSpec,
    pod: str,
    at_s: float,
    namespace: str | None = None,
    on_progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Crash `pod` (no drain, as SIGKILL) at_s seconds into the load; what the clients saw."""
    return during_load(lab, spec, at_s, lambda: lab.crash_pod(pod, namespace), on_progress)


def use_mesh_rules(
    lab: Cluster, folder: Path, destination_rule: str | None, virtual_service: str | None
) -> None:
    """Leave just these rule files of `folder` applied; None leaves no object of that kind.

    With neither, Istio's defaults apply: LEAST_REQUEST, and two retries on
    connect-failure, refused-stream, unavailable, cancelled and HTTP 503.
    """
    # Every rule file in cluster/manifests/istio/ names its object grpc-server, so deleting
    # by the plain file removes whichever is there. The rule goes first, so a sidecar never
    # carries one row's outlier ejections into the next.
    lab.delete(folder / "destinationrule.yaml")
    if destination_rule:
        lab.apply(folder / destination_rule)
    if virtual_service:
        lab.apply(folder / virtual_service)
    else:
        lab.delete(folder / "virtualservice.yaml")


def sidecar_retry_on(lab: Cluster, host: str) -> str:
    """When the client's sidecar retries calls to `host` (host:port): the retry_on of the
    route it uses, from its own config dump; "none" when the route has no retry policy."""
    route = dumped_virtual_host(lab.mesh_config_dump(), host)["routes"][0]["route"]
    return route.get("retry_policy", {}).get("retry_on", "none")

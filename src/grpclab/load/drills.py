"""Things done to a cluster while load runs (crash a pod, scale, fault, roll out), timed.

`act_during` is the one home of "do something N seconds into a load run": it runs one or
more `lab.run_load(spec)` at once and calls the action `at_s` seconds into the first one,
so that each load's per-interval timeline shows what its client saw around that moment.
`drill` is its one-load form (`drill(...).result` is what the clients saw); the widgets' scale-up
(`grpclab.widgets.run_with_scale`), the side-by-side view (`grpclab.side_by_side`), the
labs and the notebooks all use it.

The action's clock is the first load's own (seconds since its load generator started), and
the action waits for the first progress snapshot in which that client has completed calls,
so that a slow start (a Job's pod, a sidecar, a first connection on a real cluster) does
not eat into `at_s`. The action runs in a thread of its own, so a slow one (an exec into a
pod takes about a second on a real cluster, a rollout longer) does not stall the clients.
When it began and ended is given on every load's clock. An action that never ran, or never
finished, raises DrillError instead of returning a result that shows no event; the
action's own exception is raised as it is, after the loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.xds.dumps import dumped_virtual_host

Progress = Callable[[LoadResult], None]


class DrillError(RuntimeError):
    """The drill's action did not happen during the load; the message says why."""


@dataclass(frozen=True)
class During:
    """What the action sees when it starts: each load's latest snapshot, and the clock."""

    snapshots: Mapping[str, LoadResult]
    started_s: float  # when the action began, on the first load's clock
    now: Callable[[], float]  # seconds on the first load's clock, whenever it is asked


@dataclass(frozen=True)
class ActedRun:
    """Loads run at once, and when the action began and ended on each load's clock."""

    results: dict[str, LoadResult]  # in the caller's order
    started_s: dict[str, float]
    done_s: dict[str, float]
    outcome: Any  # what the action returned
    started_at: float  # Unix time just before the loads started (for Prometheus)


def act_during(
    lab: Cluster,
    loads: Mapping[str, LoadSpec],
    at_s: float,
    action: Callable[[During], Any],
    on_progress: Mapping[str, Progress] | None = None,
    timeout: float = 60.0,
) -> ActedRun:
    """Run every load at once; `at_s` seconds into the first one, call `action(during)`.

    The action waits until every load has completed a call (or ended), and then until `at_s`
    into the one that started last: on a cluster each load is a Job, and one can start
    seconds after another, which would otherwise meet the action already done.
    `on_progress[name]` sees every snapshot of that load. The first load runs in the
    caller's thread (Ctrl-C cancels it as it cancels `lab.run_load`), the others in threads
    of their own. DrillError when the action did not run during the first load, or did not
    finish within `timeout` s of the loads' end.
    """
    check_timing(loads, at_s)
    first = next(iter(loads))
    callbacks = dict(on_progress or {})
    clocks: dict[str, float] = {}  # perf_counter at each load's t=0
    latest: dict[str, LoadResult] = {}
    calling: set[str] = set()  # loads with a completed call (or over)
    lock = threading.Lock()
    running, first_ended = threading.Event(), threading.Event()
    all_running = threading.Event()  # every load has completed a call, or has ended
    times: dict[str, float] = {}
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def now() -> float:
        return time.perf_counter() - clocks[first]

    def progress_of(name: str) -> Progress:
        def progress(snapshot: LoadResult) -> None:
            with lock:
                # The snapshot's elapsed_s is on the load generator's clock: this anchors
                # our clock to it.
                clocks.setdefault(name, time.perf_counter() - snapshot.elapsed_s)
                latest[name] = snapshot
                if snapshot.total > 0 or snapshot.done:
                    calling.add(name)
                if calling == set(loads):
                    all_running.set()
            if name == first and snapshot.total > 0 and not snapshot.done:
                running.set()  # the client runs: its calls complete, and more will
            if name in callbacks:
                callbacks[name](snapshot)

        return progress

    def act() -> None:
        try:
            while not (running.is_set() and all_running.is_set()):
                if first_ended.wait(timeout=0.05):
                    return
            with lock:
                last_start = max(clocks.values())
            if first_ended.wait(timeout=max(0.0, at_s - (time.perf_counter() - last_start))):
                return
            with lock:
                snapshots = dict(latest)
            times["started"] = time.perf_counter()
            outcome.append(action(During(snapshots, times["started"] - clocks[first], now)))
            times["done"] = time.perf_counter()
        except BaseException as error:  # handed to the caller below
            failure.append(error)

    results: dict[str, LoadResult] = {}
    failures: dict[str, BaseException] = {}

    def drive(name: str) -> None:
        try:
            results[name] = lab.run_load(loads[name], progress_of(name))
        except BaseException as error:  # handed to the caller below
            failures[name] = error

    worker = threading.Thread(target=act, name="grpclab-action", daemon=True)
    others = [
        threading.Thread(target=drive, args=(name,), name=f"grpclab-load-{name}", daemon=True)
        for name in list(loads)[1:]
    ]
    started_at = time.time()
    worker.start()
    for thread in others:
        thread.start()
    try:
        results[first] = lab.run_load(loads[first], progress_of(first))
    finally:
        first_ended.set()
        with lock:
            late = [name for name in loads if name not in calling]  # none of its calls yet
        for thread in others:
            thread.join()
        # An action that started runs to its end (an exec can take seconds on a cluster).
        worker.join(timeout=timeout)
    if failures:
        name, error = next(iter(failures.items()))
        raise RuntimeError(f"the load {name!r} failed: {error}") from error
    if failure:
        raise failure[0]
    if "started" not in times:
        if not running.is_set():
            why = "no call of the load completed"
        elif late:
            # On a cluster each load is a Job; one that starts late meets the first one over.
            why = (
                f"the load {first!r} ended after {results[first].elapsed_s:.1f} s, before "
                f"{', '.join(map(repr, late))} completed a call (make the loads longer)"
            )
        else:
            why = f"the load ended after {results[first].elapsed_s:.1f} s, before at_s={at_s}"
        raise DrillError(f"the drill's action never ran: {why}; the result shows no event")
    if "done" not in times:
        raise DrillError(
            f"the drill's action did not finish within {timeout:g} s of the load's end"
        )
    return ActedRun(
        results={name: results[name] for name in loads},
        started_s={name: round(times["started"] - clocks[name], 3) for name in loads},
        done_s={name: round(times["done"] - clocks[name], 3) for name in loads},
        outcome=outcome[0],
        started_at=started_at,
    )


def check_timing(loads: Mapping[str, LoadSpec], at_s: float) -> None:
    """ValueError unless every load lasts past `at_s` and reads its clock by then."""
    if not loads:
        raise ValueError("loads is empty; name at least one LoadSpec")
    for name, spec in loads.items():
        field = "LoadSpec" if name == "" else f"loads[{name!r}]"
        if spec.duration_s is None or spec.duration_s <= at_s:
            raise ValueError(
                f"{field}.duration_s must be longer than at_s={at_s} (got "
                f"{spec.duration_s!r}); the action happens during the run"
            )
        if spec.interval_s > at_s:
            # The load's clock is read from its first progress snapshot, one interval in.
            raise ValueError(f"at_s ({at_s}) must be >= {field}.interval_s ({spec.interval_s})")


@dataclass(frozen=True)
class DrillRun:
    """A load run and, on its clock, when the action began and ended, and what it returned."""

    result: LoadResult
    action_started_s: float
    action_done_s: float
    outcome: Any = None


def drill(
    lab: Cluster,
    spec: LoadSpec,
    at_s: float,
    action: Callable[[], object],
    on_progress: Progress | None = None,
) -> DrillRun:
    """Run the load and call `action()` at_s seconds into it (`act_during` with one load).

    `action_done_s` past `result.elapsed_s` means the load ended before the action did.
    """
    run = act_during(
        lab, {"": spec}, at_s, lambda _: action(), {"": on_progress} if on_progress else None
    )
    return DrillRun(run.results[""], run.started_s[""], run.done_s[""], run.outcome)


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


@contextmanager
def calls_take(lab: Cluster, pods: Sequence[str], ms: int) -> Iterator[None]:
    """Within the block, every call to each of `pods` takes `ms` longer (their fault knob);
    quick again after it, however it ends.

    The demo's calls take well under a millisecond, so a paced client hardly ever has two
    in flight: a least-request balancer then compares ties and picks at random. Calls that
    last give it real counts, and a client has rate x ms calls in flight.
    """
    for pod in pods:
        lab.set_fault(pod, added_latency_ms=ms)
    try:
        yield
    finally:
        for pod in pods:
            lab.set_fault(pod)


def crash_least_restarted(
    lab: Cluster,
    spec: LoadSpec,
    at_s: float,
    added_latency_ms: int = 0,
    deployment: str = "grpc-server",
) -> LoadResult:
    """Crash the ready pod of `deployment` that restarted least, at_s seconds into the load.

    `added_latency_ms` on every ready pod first keeps calls in flight on the victim when it
    goes (the demo's calls take well under a millisecond). The crashed pod comes back
    without it.
    """
    ready = [pod.name for pod in lab.wait_ready(deployment)]
    for pod in ready:
        lab.set_fault(pod, added_latency_ms=added_latency_ms)
    return crash_pod_during_load(lab, spec, least_restarted(lab, ready), at_s)


def crash_pod_during_load(
    lab: Cluster,
    spec: LoadSpec,
    pod: str,
    at_s: float,
    namespace: str | None = None,
    on_progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Crash `pod` (no drain, as SIGKILL) at_s seconds into the load; what the clients saw."""
    return drill(lab, spec, at_s, lambda: lab.crash_pod(pod, namespace), on_progress).result


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


@dataclass(frozen=True)
class RuleRun:
    """A load under one row of mesh rules, and what the client's sidecar did meanwhile."""

    result: LoadResult
    # From the client's sidecar (LoadSpec.proxy_admin; None when the run did not read it):
    retries: int | None  # calls it retried on the client's behalf
    ejections: int | None  # backends its outlier detection ejected
    retry_on: str  # the retry conditions its route had in force (`sidecar_retry_on`)


def under_each_rule(
    lab: Cluster,
    folder: Path,
    rows: Mapping[str, tuple[str | None, str | None]],
    host: str,
    run: Callable[[], LoadResult],
) -> dict[str, RuleRun]:
    """For each row (destination rule file, virtual service file): apply it, then `run()`.

    The rows run in order, each with only its own rule files applied (`use_mesh_rules`).
    """
    runs = {}
    for name, (destination_rule, virtual_service) in rows.items():
        use_mesh_rules(lab, folder, destination_rule, virtual_service)
        result = run()
        counted = result.proxy_counters
        runs[name] = RuleRun(
            result,
            retries=counted.get("retries"),
            ejections=counted.get("ejections"),
            retry_on=sidecar_retry_on(lab, host),
        )
    return runs


def rule_table(runs: Mapping[str, RuleRun]) -> str:
    """Failed calls, calls, sidecar retries and ejections for each row, as a text table."""
    width = max(len("configuration"), *(len(name) for name in runs)) + 1
    rows: list[tuple[object, ...]] = [
        ("configuration", "failed", "of calls", "retries", "ejections")
    ]
    for name, row in runs.items():
        sidecar = ["-" if count is None else count for count in (row.retries, row.ejections)]
        rows.append((name, row.result.failed, row.result.total, *sidecar))
    return "\n".join(
        f"{name:<{width}} {failed:>7} {calls:>9} {retries:>8} {ejections:>10}"
        for name, failed, calls, retries, ejections in rows
    )


def sidecar_retry_on(lab: Cluster, host: str) -> str:
    """When the client's sidecar retries calls to `host` (host:port): the retry_on of the
    route it uses, from its own config dump; "none" when the route has no retry policy."""
    route = dumped_virtual_host(lab.mesh_config_dump(), host)["routes"][0]["route"]
    return route.get("retry_policy", {}).get("retry_on", "none")

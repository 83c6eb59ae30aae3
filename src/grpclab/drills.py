"""Things done to a cluster while load runs (crash a pod, stop a control plane), timed.

Each drill runs `lab.run_load(spec)` and acts `at_s` seconds into it, so the
load's per-interval timeline shows what the clients saw around that moment.
(A scale-up during load is `grpclab.widgets.run_with_scale`.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from grpclab.cluster import Cluster
from grpclab.load import LoadResult, LoadSpec
from grpclab.xds.dumps import dumped_virtual_host


def during_load(
    lab: Cluster,
    spec: LoadSpec,
    at_s: float,
    action: Callable[[], object],
    on_progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Run the load and call `action()` at_s seconds into it; `on_progress` sees every snapshot."""
    started = threading.Event()
    origin: dict[str, float] = {}
    failure: list[BaseException] = []

    def progress(snapshot: LoadResult) -> None:
        if not started.is_set():
            # The snapshot's elapsed_s is on the load generator's clock: anchor ours to it.
            origin["t0"] = time.perf_counter() - snapshot.elapsed_s
            started.set()
        if on_progress is not None:
            on_progress(snapshot)

    def now() -> float:
        return time.perf_counter() - origin["t0"]

    def act() -> None:
        try:
            if not started.wait(timeout=spec.deadline_s + 30):
                return
            time.sleep(max(0.0, at_s - now()))
            action()
        except BaseException as error:  # handed to the caller below
            failure.append(error)

    if spec.interval_s > at_s:
        # The load's clock is read from its first progress snapshot, one interval in.
        raise ValueError(f"at_s ({at_s}) must be >= the spec's interval_s ({spec.interval_s})")
    worker = threading.Thread(target=act, name="grpclab-drill", daemon=True)
    worker.start()
    result = lab.run_load(spec, progress)
    worker.join(timeout=30)
    if failure:
        raise failure[0]
    return result


def crash_pod_during_load(
    lab: Cluster,
    spec: LoadSpec,
    pod: str,
    at_s: float,
    namespace: str | None = None,
    on_progress: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Crash `pod` (SIGKILL) at_s seconds into the load; returns what the clients saw."""
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

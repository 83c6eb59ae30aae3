"""Reading the API server's objects: apply outcomes, pods, rollouts, Service and container ports.

Pure functions over kubernetes.client models (or their dicts); nothing here talks to a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from grpclab.cluster import Pod

FIELD_MANAGER = "grpclab"
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


def apply_outcome(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """created / configured / unchanged, from the object before and after an apply."""
    if before is None:
        return "created"
    old = before.get("metadata", {}).get("resourceVersion")
    new = after.get("metadata", {}).get("resourceVersion")
    # A server-side apply that changes nothing does not write, so the version stays.
    return "unchanged" if old == new else "configured"


def pod_from_model(pod: Any) -> Pod:
    """A `Pod` from a kubernetes.client V1Pod: readiness from conditions, restarts summed."""
    status = pod.status
    conditions = (status.conditions if status else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    if pod.metadata.deletion_timestamp is not None:
        phase, ready = "Terminating", False
    else:
        phase = (status.phase if status else None) or "Pending"
    statuses = (status.container_statuses if status else None) or []
    return Pod(
        name=pod.metadata.name,
        namespace=pod.metadata.namespace,
        ip=(status.pod_ip if status else None) or "",
        ready=ready,
        phase=phase,
        restarts=sum(s.restart_count or 0 for s in statuses),
        labels=dict(pod.metadata.labels or {}),
    )


def rollout_status(deployment: Any) -> tuple[int, int, bool]:
    """(ready, desired, done) for a V1Deployment, judged as `kubectl rollout status` does."""
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if status is None:
        return 0, spec_replicas, False
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    total = status.replicas or 0
    observed = (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
    ready = min(updated, available)
    done = observed and updated >= spec_replicas and total <= updated and available >= updated
    return ready, spec_replicas, done


def progress_deadline_exceeded(deployment: Any) -> str | None:
    """The Progressing condition's message when the rollout has given up, else None."""
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return condition.message or "progress deadline exceeded"
    return None


def _controlled_by(obj: Any, owner_uid: str | None) -> bool:
    refs = obj.metadata.owner_references or []
    return owner_uid is not None and any(ref.uid == owner_uid and ref.controller for ref in refs)


def current_replicaset(deployment: Any, replicasets: Iterable[Any]) -> Any | None:
    """The ReplicaSet of the Deployment's current revision, or None while it has none yet.

    A selector matches more than one Deployment's pods (notebook 08 runs two Deployments
    whose pods share `app: grpc-server`), and during a rollout the old ReplicaSet's pods
    match too. The Deployment controller writes the current ReplicaSet's revision into
    the Deployment's own `deployment.kubernetes.io/revision` annotation.
    """
    revision = (deployment.metadata.annotations or {}).get(REVISION_ANNOTATION)
    if revision is None:
        return None
    for replicaset in replicasets:
        if _controlled_by(replicaset, deployment.metadata.uid) and (
            (replicaset.metadata.annotations or {}).get(REVISION_ANNOTATION) == revision
        ):
            return replicaset
    return None


def replicaset_pods(replicaset: Any, pods: Iterable[Any]) -> list[Any]:
    """The pods among `pods` that `replicaset` controls."""
    return [pod for pod in pods if _controlled_by(pod, replicaset.metadata.uid)]


def service_port(service: Any, port: int | str) -> int:
    """The port number of a V1Service's port given by name or number; KeyError when absent."""
    ports = service.spec.ports or []
    for item in ports:
        if port == item.name or str(port) == str(item.port):
            return int(item.port)
    have = ", ".join(f"{p.name or '(unnamed)'}={p.port}" for p in ports) or "no ports"
    raise KeyError(f"service {service.metadata.name} has no port {port!r} (it has {have})")


def is_headless(service: Any) -> bool:
    return service.spec.cluster_ip == "None"


def container_port(pod: Any, port: int | str) -> int:
    """The number of a V1Pod's container port given by name or number; KeyError when absent."""
    declared = [
        (item.name, item.container_port) for c in pod.spec.containers for item in c.ports or []
    ]
    for name, number in declared:
        if port == name or str(port) == str(number):
            return int(number)
    if isinstance(port, int):
        return port  # an undeclared port may still be open; kubectl forwards it
    have = ", ".join(f"{name or '(unnamed)'}={number}" for name, number in declared) or "none"
    raise KeyError(f"pod {pod.metadata.name} has no container port {port!r} (it has {have})")

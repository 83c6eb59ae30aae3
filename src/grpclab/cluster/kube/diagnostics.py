"""Why a pod is not ready or a Job does not start, as `kubectl describe` would say it.

Reads pods, probes and events; used in the kube backend's timeout and failure messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from grpclab.cluster.kube.errors import api_error_message, api_exception, status_code
from grpclab.cluster.kube.objects import pod_from_model


def probes(pod: Any) -> list[str]:
    """The pod's probes as `kubectl describe` sums them up: which container, kind, where."""
    found = []
    for container in pod.spec.containers if pod.spec else []:
        for which in ("startup", "readiness", "liveness"):
            probe = getattr(container, f"{which}_probe", None)
            if probe is None:
                continue
            if probe.grpc is not None:
                how = f"grpc :{probe.grpc.port}" + (
                    f" service={probe.grpc.service}" if probe.grpc.service else ""
                )
            elif probe.http_get is not None:
                how = f"http-get :{probe.http_get.port}{probe.http_get.path or '/'}"
            elif probe.tcp_socket is not None:
                how = f"tcp-socket :{probe.tcp_socket.port}"
            elif probe._exec is not None:
                how = f"exec {probe._exec.command}"
            else:
                how = "(no handler)"
            found.append(f"{container.name}: {which} probe {how}")
    return found


def waiting_reasons(pod: Any) -> list[str]:
    reasons = []
    for status in (pod.status.container_statuses or []) if pod.status else []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason:
            reasons.append(f"{status.name}: {waiting.reason} {waiting.message or ''}".strip())
    for condition in (pod.status.conditions or []) if pod.status else []:
        if condition.type == "PodScheduled" and condition.status == "False":
            reasons.append(f"unschedulable: {condition.message}")
    return reasons


def events(
    core: Any,
    names: Iterable[str],
    namespace: str,
    last: int = 8,
    reason: str | None = None,
) -> list[str]:
    """The latest events about the named objects in the namespace, as kubectl shows them."""
    wanted = set(names)
    try:
        items = core.list_namespaced_event(namespace).items
    except api_exception() as error:
        if status_code(error) == 403:
            return []  # no permission to read events: the message stands without them
        code, message = status_code(error), api_error_message(error)
        return [f"  (the events could not be read: {code}: {message})"]
    mine = [
        e
        for e in items
        if e.involved_object and e.involved_object.name in wanted and reason in (None, e.reason)
    ]
    mine.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
    return [
        f"  {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
        + (f" (x{e.count})" if (e.count or 0) > 1 else "")
        for e in mine[-last:]
    ]


def deployment_report(core: Any, deployment: Any) -> str:
    """Pod by pod: phase, readiness and why a container waits (ImagePullBackOff...)."""
    namespace = deployment.metadata.namespace
    selector = ",".join(
        f"{k}={v}" for k, v in (deployment.spec.selector.match_labels or {}).items()
    )
    lines = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        view = pod_from_model(pod)
        why = "; ".join(waiting_reasons(pod))
        state = f"{view.phase} ready={view.ready} restarts={view.restarts}"
        lines.append(f"  {view.name} {state} {why}")
        if not view.ready:  # which probe, and the kubelet's last word on it
            lines += [f"    {probe}" for probe in probes(pod)]
            unhealthy = events(core, [view.name], namespace, reason="Unhealthy")
            lines += [f"  {event}" for event in unhealthy]
    return "\n".join(lines) or "  (no pods)"

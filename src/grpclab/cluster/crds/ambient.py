"""Istio ambient mode's labels on Kubernetes' own kinds: what the sandbox cannot emulate.

The Gateway of class istio-waypoint is checked with the Gateway API kinds (its own rules
live in grpclab.xds.ambient); here are the enrollment labels on Services, Namespaces and
pod templates, which sandbox_rules asks about only when an object carries one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpclab.xds.ambient import (
    USE_WAYPOINT_LABEL,
    USE_WAYPOINT_NAMESPACE_LABEL,
    check_enrollment_labels,
)

__all__ = ["USE_WAYPOINT_LABEL", "enrollment_problem", "pod_waypoint_problem"]


def enrollment_problem(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(label, reason) when a Service's or Namespace's ambient labels are not emulated."""
    reason = check_enrollment_labels(obj)
    return None if reason is None else (USE_WAYPOINT_NAMESPACE_LABEL, reason)


def pod_waypoint_problem(labels: Mapping[str, Any]) -> str | None:
    """Why a pod template's use-waypoint label is refused (workload waypoints), or None."""
    if USE_WAYPOINT_LABEL not in labels:
        return None
    return (
        "a waypoint for pods (workload-addressed traffic) is not emulated by the sandbox: its "
        "ztunnel stand-in knows Service ports only. Label the Service instead"
    )

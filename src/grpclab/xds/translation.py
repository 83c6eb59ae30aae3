"""What every translator of Kubernetes objects into proxy config shares (Istio, Gateway API,
Traefik, Linkerd, ingress-nginx): its error, how it names an object, and Go durations."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2

_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_UNITS_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


class TranslationError(ValueError):
    """A value the sandbox cannot translate; names the object and the field."""

    def __init__(self, object_label: str, field: str, reason: str) -> None:
        self.object = object_label
        self.field = field
        self.reason = reason
        super().__init__(f"{object_label}: {field}: {reason}")


def object_label(obj: Mapping[str, Any]) -> str:
    """ "Kind namespace/name", as the translators' errors name an object."""
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name', '')}"


def go_duration_seconds(text: Any) -> float | None:
    """A Go duration ("2s", "300ms", "1m30s") in seconds; None when `text` is not one."""
    if not isinstance(text, str) or not text or _GO_DURATION.sub("", text):
        return None
    return sum(float(n) * _UNITS_S[unit] for n, unit in _GO_DURATION.findall(text))


def as_duration(seconds: float) -> duration_pb2.Duration:
    """`seconds` (>= 0) as a protobuf Duration."""
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))

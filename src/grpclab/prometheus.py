"""Prometheus's HTTP query API: instant and range queries at a base URL, and their answers.

A leaf module (it imports only grpclab.local_http), so that the `Cluster` interface can
answer PromQL without importing grpclab.measure, which reads clusters. The guide's queries,
ours and the charts are in grpclab.measure.monitoring.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from grpclab.local_http import open_local


class PrometheusError(RuntimeError):
    """Prometheus refused a query or could not be reached; the message says which."""


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector (or a scalar, with no labels)."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series of a range query: its labels, and values at Unix times."""

    labels: Mapping[str, str]
    times: Sequence[float] = field(default_factory=list)
    values: Sequence[float] = field(default_factory=list)


class HasPrometheus(Protocol):
    """Whatever says where its Prometheus is: a `Cluster`, for one."""

    def prometheus_url(self) -> str: ...


def query(where: str | HasPrometheus, promql: str, at: float | None = None) -> list[Sample]:
    """Evaluate `promql` at Unix time `at` (default: now); a scalar is one unlabelled Sample."""
    params = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = _get(where, "/api/v1/query", params)
    if data["resultType"] == "scalar":
        return [Sample({}, float(data["result"][1]))]
    if data["resultType"] != "vector":
        raise PrometheusError(f"{promql!r} gave a {data['resultType']}, not an instant vector")
    return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]


def query_range(
    where: str | HasPrometheus, promql: str, start: float, end: float, step: float = 1.0
) -> list[Series]:
    """Evaluate `promql` every `step` seconds from `start` to `end` (Unix times)."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    data = _get(where, "/api/v1/query_range", params)
    return [
        Series(
            item["metric"],
            [float(t) for t, _ in item["values"]],
            [float(v) for _, v in item["values"]],
        )
        for item in data["result"]
    ]


def _get(where: str | HasPrometheus, path: str, params: Mapping[str, str]) -> Any:
    base = where if isinstance(where, str) else where.prometheus_url()
    url = f"{base.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with open_local(url, timeout=10) as reply:
            body = json.loads(reply.read())
    except urllib.error.HTTPError as error:
        # Prometheus answers a bad query with 400 and a JSON body that says what is wrong.
        try:
            body = json.loads(error.read())
        except ValueError:
            raise PrometheusError(f"Prometheus at {base}: HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise PrometheusError(f"cannot reach Prometheus at {base}: {error}") from None
    if body.get("status") != "success":
        raise PrometheusError(
            f"Prometheus refused {params.get('query')!r}: "
            f"{body.get('errorType', 'error')}: {body.get('error', body)}"
        )
    return body["data"]

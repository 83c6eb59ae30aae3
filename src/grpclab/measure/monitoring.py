"""Prometheus from a notebook: its HTTP query API, the guide's queries and ours, and charts.

Every function takes a Prometheus base URL, or a Cluster (whose `prometheus_url()` says
where its Prometheus is), so the same cell works on every backend.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

# The HTTP query API has its home in grpclab.prometheus (the Cluster interface uses it too);
# a notebook finds it here, beside the queries.
from grpclab.prometheus import (
    HasPrometheus,
    PrometheusError,
    Sample,
    Series,
    query,
    query_range,
)

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "PrometheusError",
    "Sample",
    "Series",
    "corrected_queries",
    "guide_queries",
    "query",
    "query_range",
    "series_chart",
    "series_name",
    "value",
    "wait_for_scrape",
]

SERVICE = "mypackage.MyService"
# production: 5m, as in the guide. A notebook's runs last seconds, and a window must hold
# a few scrapes (1 s apart here) for rate() to have two samples or more.
WINDOW = "5s"


def value(samples: Sequence[Sample]) -> float:
    """The one value of a query that yields one sample; NaN when it yielded none."""
    if len(samples) > 1:
        raise PrometheusError(f"expected one sample, got {len(samples)}: {samples}")
    return samples[0].value if samples else math.nan


def wait_for_scrape(
    where: str | HasPrometheus,
    pods: Iterable[str],
    after: float | None = None,
    timeout: float = 20.0,
) -> None:
    """Wait until Prometheus has scraped each pod, successfully, at or after Unix time `after`."""
    wanted = set(pods)
    after = time.time() if after is None else after
    deadline = time.monotonic() + timeout
    while True:
        samples = query(where, 'timestamp(up{job="pods"} == 1)')
        fresh = {s.labels.get("pod") for s in samples if s.value >= after}
        if wanted <= fresh:
            return
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(wanted - fresh))
            raise TimeoutError(f"Prometheus has not scraped {missing} within {timeout:.0f} s")
        time.sleep(0.2)


def guide_queries(window: str = WINDOW) -> dict[str, str]:
    """The guide's four queries, unchanged but for the rate window."""
    handled = f"rate(grpc_server_handled_total[{window}])"
    return {
        "request rate per pod": f"sum by (grpc_server_method, instance) ({handled})",
        "evenness": (
            f"stddev by (grpc_server_method) ({handled})\n"
            f"  / avg by (grpc_server_method) ({handled})"
        ),
        "p99 latency": (
            "histogram_quantile(0.99, sum(rate(grpc_server_handling_seconds_bucket"
            f"[{window}])) by (le, grpc_method))"
        ),
        "error rate": (
            f'sum(rate(grpc_server_handled_total{{grpc_code!="OK"}}[{window}]))\n  / sum({handled})'
        ),
    }


def corrected_queries(window: str = WINDOW, service: str = SERVICE) -> dict[str, str]:
    """The same four questions asked so that the answers mean what the guide says they mean."""
    calls = f'grpc_server_handled_total{{job="pods", grpc_service="{service}"}}'
    # A pod that has served nothing has no grpc_server_* series at all; `up` gives every
    # scraped pod a 0 to stand in for it, or stddev and avg would never see idle pods.
    per_pod = (
        f"(sum by (pod) (rate({calls}[{window}]))\n"
        f'   or on (pod) 0 * max by (pod) (up{{job="pods"}}))'
    )
    errors = f'grpc_server_handled_total{{job="pods", grpc_service="{service}", grpc_code!="OK"}}'
    return {
        "request rate per pod": per_pod,
        "evenness": f"stddev({per_pod})\n  / avg({per_pod})",
        "p99 latency": (
            "histogram_quantile(0.99, sum by (le, grpc_method) (rate("
            f'grpc_server_handling_seconds_bucket{{job="pods", grpc_service="{service}"}}'
            f"[{window}])))"
        ),
        "error rate": (
            f"(sum(rate({errors}[{window}])) or vector(0))\n  / sum(rate({calls}[{window}]))"
        ),
    }


def series_name(labels: Mapping[str, str], keys: Sequence[str] = ("pod", "grpc_method")) -> str:
    """A legend entry: the values of the first label keys present, else every label."""
    parts = [labels[key] for key in keys if key in labels]
    if parts:
        return " ".join(parts)
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"


def series_chart(
    series: Sequence[Series],
    title: str,
    y_title: str,
    start: float,
    marks: Sequence[tuple[float, str]] = (),
    keys: Sequence[str] = ("pod", "grpc_method"),
) -> go.Figure:
    """Lines of a range query against seconds since `start`; `marks` are (Unix time, label)."""
    from grpclab.widgets import line_chart

    figure = line_chart(
        title, "seconds since the first run started", {"title": y_title}, height=320
    )
    for item in sorted(series, key=lambda s: series_name(s.labels, keys)):
        figure.add_scatter(
            x=[round(t - start, 3) for t in item.times],
            y=[None if math.isnan(v) else round(v, 6) for v in item.values],
            name=series_name(item.labels, keys),
            mode="lines",
        )
    for t, label in marks:
        figure.add_vline(
            x=round(t - start, 3), line_dash="dash", line_color="grey", annotation_text=label
        )
    return figure

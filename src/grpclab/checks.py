"""Measures of where requests went, shared by notebooks, labs and tests."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping

from grpclab.load import LoadResult


def counts_for(
    result: LoadResult | Mapping[str, int], pods: Iterable[str] | None = None
) -> list[int]:
    """Requests per pod, with 0 for each named pod that served nothing."""
    per_pod = result.per_pod if isinstance(result, LoadResult) else result
    names = sorted(set(per_pod) | set(pods or ()))
    return [per_pod.get(name, 0) for name in names]


def max_min_ratio(
    result: LoadResult | Mapping[str, int], pods: Iterable[str] | None = None
) -> float:
    """Busiest pod over idlest pod; infinite when some pod served nothing."""
    counts = counts_for(result, pods)
    if not counts or max(counts) == 0:
        return math.inf
    return max(counts) / min(counts) if min(counts) else math.inf


def evenness(result: LoadResult | Mapping[str, int], pods: Iterable[str] | None = None) -> float:
    """Population stddev over mean of requests per pod: 0 is perfectly even.

    It is the same measure as PromQL's `stddev(...) / avg(...)` (PromQL's stddev
    is the population one), so notebook and Prometheus numbers agree.
    """
    counts = counts_for(result, pods)
    if not counts or sum(counts) == 0:
        return math.inf
    return statistics.pstdev(counts) / statistics.fmean(counts)


def busiest_share(result: LoadResult | Mapping[str, int]) -> float:
    counts = counts_for(result)
    return max(counts) / sum(counts) if counts and sum(counts) else 0.0


def pods_that_served(result: LoadResult | Mapping[str, int]) -> int:
    return sum(1 for count in counts_for(result) if count > 0)


def summary(result: LoadResult, pods: Iterable[str], max_ratio: float = 1.2) -> str:
    """A rounded summary that stays the same from run to run (nbval checks it)."""
    names = list(pods)
    ratio = max_min_ratio(result, names)
    return "\n".join(
        [
            f"pods that served requests: {pods_that_served(result)} of {len(names)}",
            f"max/min within {max_ratio}: {'yes' if ratio <= max_ratio else 'no'}",
            f"failed RPCs: {'none' if result.failed == 0 else 'some'}",
        ]
    )


def assert_even(result: LoadResult, pods: Iterable[str], max_ratio: float = 1.2) -> None:
    """Every pod served, and the busiest served at most `max_ratio` times the idlest."""
    names = list(pods)
    ratio = max_min_ratio(result, names)
    assert ratio <= max_ratio, (
        f"uneven: max/min = {ratio:.2f} > {max_ratio} over {len(names)} pods: "
        f"{dict(result.per_pod)}"
    )


def assert_single_pod(result: LoadResult) -> None:
    """Every successful request went to one pod (what L4 balancing does to one channel)."""
    assert pods_that_served(result) == 1, (
        f"expected one pod to serve everything: {dict(result.per_pod)}"
    )

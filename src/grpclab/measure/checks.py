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


def pickup_time(result: LoadResult, new_pods: Iterable[str], since_s: float = 0.0) -> float | None:
    """Seconds from `since_s` until every pod in `new_pods` had served; None if one never did.

    The resolution is one timeline interval (LoadSpec.interval_s); 0 means within the
    interval in which the pods became ready.
    """
    names = list(new_pods)
    if not names:
        raise ValueError("pickup_time: new_pods is empty (did the scale add any pod?)")
    firsts = [result.first_reply_s(pod) for pod in names]
    if any(t is None for t in firsts):
        return None
    return max(0.0, max(firsts) - since_s)


def pickup_summary(
    result: LoadResult, new_pods: Iterable[str], since_s: float, within_s: float = 10.0
) -> str:
    """A stable summary of a scale-up: did the new pods get traffic, and soon enough?"""
    names = list(new_pods)
    served = sum(1 for pod in names if result.per_pod.get(pod, 0) > 0)
    pickup = pickup_time(result, names, since_s) if names else None
    return "\n".join(
        [
            f"new pods: {len(names)}",
            f"new pods that served requests: {served} of {len(names)}",
            f"every new pod served within {within_s:g} s of being ready: "
            f"{'yes' if pickup is not None and pickup <= within_s else 'no'}",
        ]
    )


def leftover_sandbox_processes() -> list[int]:
    """PIDs still running that a sandbox started whose owner has died (`grpclab down` ends them)."""
    from grpclab.cluster.sandbox.processes import leftover_children, pid_alive, recorded_sandboxes

    left = []
    for _, owner, children in recorded_sandboxes():
        if not pid_alive(owner):  # a live owner (another notebook, a test run): not left over
            left += leftover_children(children)
    return left


def lost_requests(result: LoadResult, since_s: float = 0.0, until_s: float = math.inf) -> int:
    """Calls that failed, whatever their status code, in timeline intervals overlapping the window.

    With the defaults it is every failed call of the run (`result.failed`).
    """
    if since_s <= 0 and until_s == math.inf:
        return result.failed
    return result.between(since_s, until_s, touching=True).failed


# Calls that must go elsewhere after a pod's last one before it counts as drained: round
# robin over up to ten pods gives each of them one of any ten calls in a row.
DRAIN_EVIDENCE_CALLS = 10


def drain_time(result: LoadResult, pod: str, since_s: float) -> float | None:
    """Seconds from `since_s` until `pod` served its last call of the run.

    None when it still served in the run's last complete interval (it never drained), or
    when fewer than DRAIN_EVIDENCE_CALLS calls came after its last one. The resolution is
    one interval: the end of the last interval in which it served counts.
    """
    width = result.interval_s()
    # The run's end cuts the last interval short: a few calls in it say nothing about a drain.
    complete = result.complete_intervals()
    served = [interval["t"] for interval in complete if interval["per_pod"].get(pod, 0) > 0]
    if not served or served[-1] + width <= since_s:
        return 0.0
    later = [interval for interval in complete if interval["t"] > served[-1]]
    calls_after = sum(
        sum(interval["per_pod"].values()) + sum(interval["errors"].values()) for interval in later
    )
    # A client stalled by a busy machine near the end makes few calls there, and those few
    # may all miss the pod: a notebook 08 run saw plain round_robin "drain" that way.
    if calls_after < DRAIN_EVIDENCE_CALLS:
        return None
    return max(0.0, served[-1] + width - since_s)


def drain_summary(result: LoadResult, pod: str, since_s: float, within_s: float) -> str:
    """Stable text: did `pod` stop getting calls, and within `within_s` of `since_s`?"""
    drained = drain_time(result, pod, since_s)
    if drained is None:
        return "the pod stopped getting calls: no (it still served at the end of the run)"
    return (
        "the pod stopped getting calls: yes, "
        f"within {within_s:g} s: {'yes' if drained <= within_s else 'no'}"
    )


def recovery_time(result: LoadResult, since_s: float) -> float | None:
    """Seconds from `since_s` (an event: a pod froze) until calls stopped failing for good.

    The end of the last bucket with a failed call, when OK replies came after it; 0.0 when
    nothing failed after `since_s`; None when calls still failed at the end of the run (the
    client never recovered). The resolution is one bucket.
    """
    width = result.interval_s()
    buckets = [b for b in result.timeline if b["t"] + width > since_s]
    failing = [i for i, bucket in enumerate(buckets) if bucket["errors"]]
    if not failing:
        return 0.0
    later = buckets[failing[-1] + 1 :]
    if not any(bucket["per_pod"] for bucket in later):
        return None
    return max(0.0, buckets[failing[-1]]["t"] + width - since_s)


def recovery_summary(result: LoadResult, since_s: float, within_s: float) -> str:
    """Stable text: did the client's calls stop failing, and within `within_s` of `since_s`?"""
    recovered = recovery_time(result, since_s)
    if recovered is None:
        return "calls stopped failing: no (they still failed at the end of the run)"
    within = "yes" if recovered <= within_s else "no"
    return f"calls stopped failing: yes, within {within_s:g} s: {within}"


def ok_rate(result: LoadResult, since_s: float = 0.0, until_s: float = math.inf) -> float:
    """OK replies per second in the complete timeline buckets that lie inside the window."""
    width = result.interval_s()
    until = min(until_s, result.elapsed_s)
    inside = [b for b in result.timeline if b["t"] >= since_s and b["t"] + width <= until + 1e-6]
    if not inside:
        return 0.0
    return sum(sum(b["per_pod"].values()) for b in inside) / (width * len(inside))

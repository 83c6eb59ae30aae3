"""Long-lived streams: which pods their messages reached, and how a server's connection age
ended them. Stable summaries for notebook 13, read from LoadResults in stream mode."""

from __future__ import annotations

from collections.abc import Iterable

from grpclab.load import LoadResult

# How grpcio's asyncio client reports a stream cut under it: UNAVAILABLE when the cut meets
# a read, INTERNAL ("Internal error from Core") when it meets a write (grpc/grpc#36066).
CUT_CODES = ("UNAVAILABLE", "INTERNAL")


def reached(result: LoadResult, pods: Iterable[str]) -> list[str]:
    """Those of `pods` that answered at least one message of `result`."""
    return [pod for pod in pods if result.per_pod.get(pod, 0) > 0]


def cut_streams(result: LoadResult) -> list[dict]:
    """The streams that ended with an error status rather than closed by the client."""
    return [stream for stream in result.streams if stream["code"] != "OK"]


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def pinned_summary(results: dict[str, LoadResult], new_pods: Iterable[str]) -> str:
    """Stable lines: did each client's streams reach a new pod, did any stream change pod."""
    new_pods = list(new_pods)
    lines = [
        f"{name}: reached a new pod: {yes_no(bool(reached(result, new_pods)))}"
        for name, result in results.items()
    ]
    moved = sum(result.most_pods_on_one_stream() > 1 for result in results.values())
    lines.append(f"streams answered by more than one pod: {'none' if not moved else 'some'}")
    return "\n".join(lines)


def first_cuts_s(result: LoadResult, opened_before_s: float) -> list[float]:
    """When the streams opened before `opened_before_s` were cut, on the load's clock."""
    return sorted(
        stream["closed_s"] for stream in cut_streams(result) if stream["opened_s"] < opened_before_s
    )


def cut_after(result: LoadResult, after_s: float) -> list[dict]:
    """The streams cut after `after_s` on the load's clock (after new pods were ready, say):
    only those are reopened with the new pods among the picks."""
    return [stream for stream in cut_streams(result) if stream["closed_s"] > after_s]


def cut_summary(result: LoadResult) -> str:
    """Stable text: were streams cut, how did they end, and were they all reopened."""
    cut = cut_streams(result)
    if not cut:
        return "streams cut: none"
    codes = sorted({stream["code"] for stream in cut})
    how = (
        "UNAVAILABLE, or INTERNAL when the cut met a write"
        if set(codes) <= set(CUT_CODES)
        else ", ".join(codes)
    )
    # Each cut leaves a worker without a stream: it should open the next one at once.
    reopened = all(
        any(0 <= later["opened_s"] - stream["closed_s"] < 1.0 for later in result.streams)
        for stream in cut
        if stream["closed_s"] < result.elapsed_s - 1.0
    )
    return f"streams cut: some; ended with: {how}; reopened: {yes_no(reopened)}"

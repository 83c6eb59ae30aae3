"""Latency of each way to reach the Service against a direct call to one pod, in one run.

Usage: .venv/bin/python bench/bench_proxies.py [--rounds 10] [--seconds 1.0]

One sandbox, the same set-up as notebook 10 (`grpclab.measure.compare.prepare`): L4 through
kube-proxy, the client-side and proxyless clients, the Istio and Linkerd stand-ins, nginx
and the gateway. Each run keeps one call in flight, so that no pod queues calls and what
differs from the direct call is the path. Rounds run every path once, the order turned by
one and reversed every other round, so that drifting machine load hits all alike; each
round gives one p50 and one p99 ratio per path against that round's direct call.
It prints, it does not gate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import grpclab
from grpclab.measure import compare

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one run")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    started = time.monotonic()
    with grpclab.connect() as lab:
        lineup = compare.prepare(lab, REPO / "cluster" / "manifests", out=lambda _: None)
        for key, reason in lineup.skipped.items():
            print(f"skipped {key}: {reason}")
        names = {s.key: s.name for s in lineup.solutions()}
        latency, _ = compare.interleaved_rounds(
            lineup, args.rounds, args.seconds, out=lambda line: print(line, file=sys.stderr)
        )
    direct = latency[compare.DIRECT]
    print(
        f"{args.rounds} rounds of {args.seconds:g} s per path, one call in flight; "
        f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; "
        f"{time.monotonic() - started:.0f} s in all"
    )
    print(
        f"direct call to one pod: p50 {median_of(direct, 'p50'):.3f} ms, "
        f"p99 {median_of(direct, 'p99'):.3f} ms (median of rounds)"
    )
    header = (
        f"{'path':<24} {'p50 ms':>7} {'p99 ms':>7} {'median p50/direct':>18} "
        f"{'median p99/direct':>18} {'p50 ratio range':>16}"
    )
    print(header)
    print("-" * len(header))
    for key, name in names.items():
        runs = latency[key]
        p50 = [r.latency_ms["p50"] / d.latency_ms["p50"] for r, d in zip(runs, direct, strict=True)]
        p99 = [r.latency_ms["p99"] / d.latency_ms["p99"] for r, d in zip(runs, direct, strict=True)]
        print(
            f"{name:<24} {median_of(runs, 'p50'):>7.3f} {median_of(runs, 'p99'):>7.3f} "
            f"{statistics.median(p50):>18.2f} {statistics.median(p99):>18.2f} "
            f"{min(p50):>7.2f}..{max(p50):<7.2f}"
        )
    return 0


def median_of(runs, key: str) -> float:
    return statistics.median(r.latency_ms[key] for r in runs)


if __name__ == "__main__":
    sys.exit(main())

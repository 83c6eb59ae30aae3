"""Why traffic dips at a scale-up: the scale-up, the same two servers started outside the
cluster, and nothing at all, side by side in one run.

Usage: .venv/bin/python bench/bench_scale_dip.py [--rounds 3]

Each round runs notebook 03's load (headless Service, round_robin, 4 calls in flight, 7 s)
three ways and prints the mean replies/s before and during the event:
- scale: `run_with_scale` from 3 to 5 replicas at 1 s (during: from the scale to 5/5 ready);
- control: at 1 s, two `python -m grpclab.demo.server` processes start on free loopback ports,
  outside the cluster: the CPU a pod's start costs, without a pod (during: 1 to 4 s);
- nothing: the same load, no event (during: 1 to 4 s).
A closed-loop client's rate is calls in flight / latency, so CPU taken from the shared
cores lowers it. It prints, it does not gate.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpclab
from grpclab.load import LoadResult, LoadSpec
from grpclab.widgets import run_with_scale

MANIFESTS = Path(__file__).resolve().parents[1] / "cluster" / "manifests"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def mean_rate(result: LoadResult, start: float, end: float) -> float:
    width = result.timeline[1]["t"] - result.timeline[0]["t"]
    rates = [
        sum(bucket["per_pod"].values()) / width
        for bucket in result.timeline
        if start <= bucket["t"] and bucket["t"] + width <= end
    ]
    return sum(rates) / len(rates) if rates else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    with grpclab.connect("sandbox") as lab:
        lab.apply(MANIFESTS / "base")
        lab.apply(MANIFESTS / "headless" / "service-headless.yaml")
        spec = LoadSpec(
            lab.target("grpc-server-headless"),
            rpcs=None,
            duration_s=7,
            concurrency=4,
            lb_policy="round_robin",
        )
        print(f"{'round':<6} {'run':<8} {'before /s':>10} {'during /s':>10} {'during/before':>14}")
        for number in range(1, rounds + 1):
            lab.scale("grpc-server", 3)
            lab.wait_ready("grpc-server", timeout=60)
            scaled = run_with_scale(lab, spec, replicas=5, at_s=1)
            lab.scale("grpc-server", 3)
            lab.wait_ready("grpc-server", timeout=60)
            started: list[subprocess.Popen] = []

            def start_two(snapshot: LoadResult, started: list = started) -> None:
                if snapshot.elapsed_s >= 1 and not started:
                    for _ in range(2):
                        argv = [sys.executable, "-m", "grpclab.demo.server", "--host", "127.0.0.1"]
                        started.append(
                            subprocess.Popen(
                                [*argv, "--port", str(free_port())],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL,
                            )
                        )

            try:
                control = lab.run_load(spec, on_progress=start_two)
            finally:
                for process in started:  # we started them: end them by PID
                    process.send_signal(signal.SIGTERM)
                    process.wait()
            nothing = lab.run_load(spec)
            runs = [
                ("scale", scaled.result, scaled.scaled_at_s, scaled.ready_at_s),
                ("control", control, 1.0, 4.0),
                ("nothing", nothing, 1.0, 4.0),
            ]
            for name, result, start, end in runs:
                before, during = mean_rate(result, 0, start), mean_rate(result, start, end)
                print(
                    f"{number:<6} {name:<8} {before:>10.0f} {during:>10.0f} "
                    f"{during / before:>14.2f}"
                )
        print(f"load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

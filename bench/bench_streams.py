"""What the load generator's stream mode costs next to unary calls, measured in one run.

Usage: .venv/bin/python bench/bench_streams.py [--rounds 8] [--seconds 1.5] [--concurrency 8]

One real demo server (`python -m grpclab.demo.server`). Three ways to send SayHello's
request and get its reply, each with `concurrency` workers on one channel, as fast as
they go (no pauses), through `grpclab.load.runner.run_async`:

- unary: one SayHello call per message;
- long streams: one SayHelloStream per worker for the whole run, a request, its reply, the next;
- streams of 10: the same, but each stream ends after 10 replies and the worker opens another.

Each round runs all three, in an order that turns by one per round, so that changing
machine load hits every side alike. Per round it prints messages/s and the CPU time per
message of the client (this process) and of the server (its /proc stat), and each stream
side's ratios to unary in the same round; then the medians of those ratios.
It prints, it does not gate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
from bench_load import start_server

from grpclab.load.runner import LoadResult, LoadSpec, run_async

SIDES = ("unary", "long streams", "streams of 10")
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds that process `pid` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime


def side_spec(side: str, target: str, seconds: float, concurrency: int) -> LoadSpec:
    common = {"rpcs": None, "duration_s": seconds, "concurrency": concurrency}
    if side == "unary":
        return LoadSpec(target, **common)
    messages = 10 if side == "streams of 10" else None
    return LoadSpec(target, method="SayHelloStream", stream_messages=messages, **common)


async def measure(spec: LoadSpec, server_pid: int) -> tuple[float, float, float]:
    """(messages/s, client CPU us per message, server CPU us per message) of one run."""
    client, server = time.process_time(), process_cpu_s(server_pid)
    result: LoadResult = await run_async(spec)
    client_cpu, server_cpu = time.process_time() - client, process_cpu_s(server_pid) - server
    if result.failed:
        raise SystemExit(f"{spec.method} run went wrong: {result.errors} {result.error_messages}")
    return (
        result.ok / result.elapsed_s,
        client_cpu / result.ok * 1e6,
        server_cpu / result.ok * 1e6,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-streams-") as log_dir:
        proc, port = start_server(Path(log_dir))
        target = f"127.0.0.1:{port}"
        try:
            for side in SIDES:  # imports and the server's first calls stay unmeasured
                asyncio.run(measure(side_spec(side, target, 0.5, args.concurrency), proc.pid))
            load_before = os.getloadavg()[0]
            rounds = []
            for round_no in range(args.rounds):
                order = SIDES[round_no % 3 :] + SIDES[: round_no % 3]
                measured = {
                    side: asyncio.run(
                        measure(side_spec(side, target, args.seconds, args.concurrency), proc.pid)
                    )
                    for side in order
                }
                rounds.append(measured)
            load_after = os.getloadavg()[0]
        finally:
            proc.kill()
            proc.wait(timeout=10)

    print(
        f"SayHello's message, 1 channel, concurrency {args.concurrency}, {args.seconds:g} s "
        f"per run, one demo server on 127.0.0.1, grpcio {grpc.__version__}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"load average {load_before:.1f} before, {load_after:.1f} after"
    )
    print(f"{'round':>5}  {'side':<14} {'msg/s':>7} {'client us/msg':>14} {'server us/msg':>14}")
    for round_no, measured in enumerate(rounds, 1):
        for side in SIDES:
            rate, client, server = measured[side]
            print(f"{round_no:>5}  {side:<14} {rate:>7.0f} {client:>14.0f} {server:>14.0f}")
    print("\nmedian of the per-round ratios to unary (same round):")
    print(f"{'side':<14} {'msg/s':>7} {'client CPU/msg':>15} {'server CPU/msg':>15}")
    for side in SIDES[1:]:
        ratios = [
            [m[side][i] / m["unary"][i] for m in rounds]
            for i in range(3)  # msg/s, client CPU, server CPU
        ]
        rate, client, server = (statistics.median(r) for r in ratios)
        print(f"{side:<14} {rate:>7.2f} {client:>15.2f} {server:>15.2f}")
    for side in SIDES:
        rate, client, server = (statistics.median(m[side][i] for m in rounds) for i in range(3))
        print(
            f"median {side}: {rate:.0f} msg/s, client {client:.0f} us/msg, "
            f"server {server:.0f} us/msg"
        )


if __name__ == "__main__":
    main()

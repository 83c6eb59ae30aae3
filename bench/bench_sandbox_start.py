"""The sandbox's cold start against a second start in the same process, in one run.

Usage: .venv/bin/python bench/bench_sandbox_start.py [--processes 3]

Each fresh Python process (a new kernel, as a learner's first cell) times:
- imports: `import grpclab` and what `connect()` pulls in (grpcio, Envoy's xDS protos...);
- cold: the first `grpclab.connect()`, applying cluster/manifests/base, and 3 ready pods;
- warm: `down()`, then the same again in the same process.
Each start is split into its steps, from the sandbox's and the manifests' DEBUG log events
(`start_event`, `schema_seconds`):
- envoy: connect(), which waits until kube-proxy's Envoy has its xDS stream;
- schema: the Kubernetes schema check inside apply; apply: the rest of apply (parsing,
  the sandbox's own checks, kube-proxy confirming the new Services);
- pods: apply's return to the last pod's container started (the controller's reaction);
- probes: then to the last pod ready (the servers' boot, and the probes' period);
- endpoints: then until wait_ready returns (DNS and kube-proxy carry the pods).
It prints cold and warm side by side per process, the medians, and the ratios to the goal
(at most 2 s from connect() to 3 ready pods, cold) and cold/warm (at most 1.2).
It prints, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 2.0
GOAL_RATIO = 1.2
STEPS = ("envoy", "schema", "apply", "pods", "probes", "endpoints")

# Run in a fresh interpreter; prints one JSON line: the imports' time and both starts' steps.
CHILD = """
import json, logging, sys, time
t0 = time.perf_counter()
import grpclab
from grpclab.cluster.sandbox import Sandbox  # what connect() imports on first use
imports = time.perf_counter() - t0

class Events(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen = []
    def emit(self, record):
        event = getattr(record, "start_event", None)
        if event or hasattr(record, "schema_seconds"):
            self.seen.append((record.created, event, getattr(record, "schema_seconds", 0.0)))

events = Events()
logger = logging.getLogger("grpclab")
logger.addHandler(events)
logger.setLevel(logging.DEBUG)

def start() -> dict:
    events.seen.clear()
    began = time.time()
    lab = grpclab.connect("sandbox")
    connected = time.time()
    lab.apply(sys.argv[1])
    applied = time.time()
    pods = lab.wait_ready("grpc-server", timeout=120)
    done = time.time()
    assert len(pods) == 3, pods
    lab.down()
    last = {}
    for created, event, _ in events.seen:
        if event:
            last[event] = max(last.get(event, 0.0), created)
    schema = sum(seconds for _, _, seconds in events.seen)
    return {
        "total": done - began,
        "envoy": connected - began,
        "schema": schema,
        "apply": applied - connected - schema,
        "pods": last["container"] - applied,
        "probes": last["ready"] - last["container"],
        "endpoints": done - last["ready"],
    }

cold = start()
warm = start()
print(json.dumps({"imports": imports, "cold": cold, "warm": warm}))
"""


def _steps(run: dict[str, float]) -> str:
    return " ".join(f"{step} {run[step]:.2f}" for step in STEPS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=3)
    args = parser.parse_args()
    base = REPO / "cluster" / "manifests" / "base"
    load_before = os.getloadavg()[0]
    rows = []
    for number in range(args.processes):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(base)],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        cold, warm = row["cold"], row["warm"]
        print(
            f"process {number + 1}: imports {row['imports']:.2f} s | "
            f"cold {cold['total']:.2f} s | warm {warm['total']:.2f} s | "
            f"cold/warm {cold['total'] / warm['total']:.2f}"
        )
        print(f"  cold: {_steps(cold)}")
        print(f"  warm: {_steps(warm)}")
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} (1 min, 2 cores)")
    print(f"{'median s':<10} {'cold':>6} {'warm':>6}")
    for step in ("total", *STEPS):
        cold = statistics.median(r["cold"][step] for r in rows)
        warm = statistics.median(r["warm"][step] for r in rows)
        print(f"{step:<10} {cold:>6.2f} {warm:>6.2f}")
    print(
        f"median imports: {statistics.median(r['imports'] for r in rows):.2f} s; "
        "imports + cold (a learner's first cell): "
        f"{statistics.median(r['imports'] + r['cold']['total'] for r in rows):.2f} s"
    )
    cold_total = statistics.median(r["cold"]["total"] for r in rows)
    ratio = statistics.median(r["cold"]["total"] / r["warm"]["total"] for r in rows)
    print(
        f"median cold / goal ({GOAL_S:g} s): {cold_total / GOAL_S:.2f} "
        f"({'met' if cold_total <= GOAL_S else 'not met'})"
    )
    print(
        f"median cold/warm: {ratio:.2f} (goal <= {GOAL_RATIO:g}: "
        f"{'met' if ratio <= GOAL_RATIO else 'not met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

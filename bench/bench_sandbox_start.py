"""The sandbox's cold start against a second start in the same process, in one run.

Usage: .venv/bin/python bench/bench_sandbox_start.py [--processes 3]

Each fresh Python process (a new kernel, as a learner's first cell) times:
- imports: `import grpclab` and what `connect()` pulls in (grpcio, Envoy's xDS protos...);
- cold: the first `grpclab.connect()`, applying cluster/manifests/base, and 3 ready pods;
- warm: `down()`, then the same again in the same process.
cold/warm is the ratio per process; the processes run one after another, so each ratio
compares two starts a few seconds apart. It prints, it does not gate.
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

# Run in a fresh interpreter; prints one JSON line with the three times in seconds.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
import grpclab
from grpclab.cluster.sandbox import Sandbox  # what connect() imports on first use
imports = time.perf_counter() - t0

def start() -> float:
    began = time.perf_counter()
    lab = grpclab.connect("sandbox")
    lab.apply(sys.argv[1])
    pods = lab.wait_ready("grpc-server", timeout=120)
    took = time.perf_counter() - began
    assert len(pods) == 3, pods
    lab.down()
    return took

cold = start()
warm = start()
print(json.dumps({"imports": imports, "cold": cold, "warm": warm}))
"""


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
        print(
            f"process {number + 1}: imports {row['imports']:.2f} s, cold {row['cold']:.2f} s, "
            f"warm {row['warm']:.2f} s, cold/warm {row['cold'] / row['warm']:.2f}, "
            f"(imports + cold)/warm {(row['imports'] + row['cold']) / row['warm']:.2f}"
        )
    print(f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    for key in ("imports", "cold", "warm"):
        print(f"median {key}: {statistics.median(r[key] for r in rows):.2f} s")
    print(f"median cold/warm: {statistics.median(r['cold'] / r['warm'] for r in rows):.2f}")
    print(
        "median (imports + cold)/warm: "
        f"{statistics.median((r['imports'] + r['cold']) / r['warm'] for r in rows):.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `grpclab` command: `demo`, `down`, `preflight`."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time

from grpclab.paths import MANIFESTS


def demo(rpcs: int) -> int:
    """ClusterIP with one channel against headless with round_robin, on $GRPCLAB_BACKEND."""
    from grpclab import connect
    from grpclab.load import LoadSpec
    from grpclab.measure import checks

    started = time.monotonic()
    try:
        cluster = connect()  # the backend GRPCLAB_BACKEND names, as a notebook gets it
    except Exception as error:  # connect() says what is missing and what to run
        print(f"grpclab demo: {error}", file=sys.stderr)
        return 1
    with cluster as lab:
        print(lab.describe())
        lab.apply(MANIFESTS / "base")
        lab.apply(MANIFESTS / "headless" / "service-headless.yaml")
        pods = [p.name for p in lab.wait_ready("grpc-server", timeout=180)]
        print(f"{len(pods)} ready pods after {time.monotonic() - started:.1f} s\n")
        runs = {
            "ClusterIP, 1 channel": LoadSpec(lab.target("grpc-server"), rpcs=rpcs),
            "headless, round_robin": LoadSpec(
                lab.target("grpc-server-headless"), rpcs=rpcs, lb_policy="round_robin"
            ),
        }
        results = {name: lab.run_load(spec) for name, spec in runs.items()}
    width = max(len(p) for p in pods)
    print(f"{'pod':<{width}}  " + "  ".join(f"{name:>22}" for name in results))
    for pod in pods:
        print(
            f"{pod:<{width}}  "
            + "  ".join(f"{r.per_pod.get(pod, 0):>22}" for r in results.values())
        )
    print(f"{'failed':<{width}}  " + "  ".join(f"{r.failed:>22}" for r in results.values()))
    print(
        f"{'max/min':<{width}}  "
        + "  ".join(f"{checks.max_min_ratio(r, pods):>22.2f}" for r in results.values())
    )
    return 0


def down() -> int:
    """End what sandboxes left behind when their owner died without cleaning up."""
    from grpclab.cluster.sandbox.addresses import block_of, holding_if_unowned
    from grpclab.cluster.sandbox.processes import leftover_children, pid_alive, recorded_sandboxes

    cleaned = 0
    for work_dir, owner, children in recorded_sandboxes():
        # Holding the block keeps a sandbox that starts meanwhile off this work dir.
        with holding_if_unowned(block_of(work_dir)) as unowned:
            if not unowned or pid_alive(owner):
                print(f"{work_dir.name}: owned by a running sandbox, left alone")
                continue
            for pid in leftover_children(children):
                os.kill(pid, signal.SIGKILL)
                print(f"{work_dir.name}: ended pid {pid}")
            shutil.rmtree(work_dir, ignore_errors=True)
            cleaned += 1
    print(f"cleaned {cleaned} sandbox(es)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="grpclab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo_parser = commands.add_parser("demo", help="headless ClusterIP vs round_robin comparison")
    demo_parser.add_argument("--rpcs", type=int, default=600)
    commands.add_parser("down", help="clean up after sandboxes whose owner died")
    from grpclab.tools import preflight

    preflight.add_arguments(
        commands.add_parser("preflight", help=preflight.__doc__.splitlines()[0])
    )
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args.rpcs)
    if args.command == "preflight":
        return preflight.run(args)
    return down()


if __name__ == "__main__":
    sys.exit(main())
